"""Datasets that need no download, and a loader whose position can be saved and restored.

Layer: beside ``optim`` (see docs/architecture.md), above the tensors. Everything here is
NumPy: images are float32 arrays ``[N, 1, S, S]`` and labels int64 arrays ``[N]``; the
training loop turns each batch into tensors on its backend.

* :func:`make_shapes` draws grey images of six outlined or filled shapes (disk, square,
  triangle, cross, ring, bar) at a random position, scale, rotation, stroke width, contrast
  and noise level, all from one seed.
* :func:`load_digits` wraps scikit-learn's bundled 8×8 handwritten digits (the ``data``
  extra).
* :class:`ArrayDataset` wraps a user's own arrays (images and integer labels), checked once,
  and hands them to a :class:`DataLoader`.
* :class:`DataLoader` shuffles with a permutation derived from ``(seed, epoch)`` alone, so its
  whole state is ``(epoch, position)``: a run restored from a checkpoint sees exactly the
  batches it would have seen without the interruption.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import check_choice, check_float, check_int

SHAPE_CLASSES: tuple[str, ...] = ("disk", "square", "triangle", "cross", "ring", "bar")
DATASETS: tuple[str, ...] = ("shapes", "digits")

# Each pixel is the mean of SUPERSAMPLE² point samples, which anti-aliases the edges: at 16×16
# a disk and a square of the same size differ in a handful of edge pixels only.
SUPERSAMPLE = 3


@dataclass
class Dataset:
    """A train/test split: images ``[N, 1, S, S]`` float32, labels ``[N]`` int64."""

    name: str
    classes: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _inside(kind: int, x: np.ndarray, y: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Whether the local point (x, y) lies inside shape ``kind`` of unit size.

    ``x, y`` are [n, P] sample coordinates after undoing each image's translation, rotation
    and scale; ``stroke`` [n, 1] is the line half-width of the cross, ring and bar.
    """
    name = SHAPE_CLASSES[kind]
    if name == "disk":
        return x * x + y * y <= 1.0
    if name == "square":
        return np.maximum(np.abs(x), np.abs(y)) <= 0.8
    if name == "triangle":
        # Equilateral, circumradius 1: inside all three edges, whose outward normals point
        # at 90° + 120°k and lie at distance 1/2 from the centre.
        angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
        dist = x[..., None] * np.cos(angles) + y[..., None] * np.sin(angles)
        return np.all(dist <= 0.5, axis=-1)
    if name == "cross":
        ax, ay = np.abs(x), np.abs(y)
        return ((ax <= stroke) & (ay <= 1.0)) | ((ay <= stroke) & (ax <= 1.0))
    if name == "ring":
        r2 = x * x + y * y
        return (r2 <= 1.0) & (r2 >= (1.0 - 2.0 * stroke) ** 2)
    if name == "bar":
        return (np.abs(x) <= 1.0) & (np.abs(y) <= stroke)
    raise AssertionError(f"unknown shape kind {kind}")


def _render(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images [n, size, size] of the shapes ``labels`` with random pose and appearance."""
    n = labels.shape[0]
    centre = rng.uniform(-0.3, 0.3, size=(n, 2))
    scale = rng.uniform(0.4, 0.85, size=(n, 1))          # radius, as a fraction of half-width
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(n, 1))
    stroke = rng.uniform(0.12, 0.3, size=(n, 1))
    background = rng.uniform(0.0, 0.4, size=(n, 1))
    foreground = background + rng.uniform(0.25, 0.6, size=(n, 1))
    noise_level = rng.uniform(0.02, 0.15, size=(n, 1, 1))

    # Sample points: SUPERSAMPLE² per pixel, in [-1, 1]² image coordinates, y pointing up.
    m = size * SUPERSAMPLE
    axis = (np.arange(m) + 0.5) / m * 2.0 - 1.0
    gx, gy = np.meshgrid(axis, -axis)
    px, py = gx.reshape(1, -1) - centre[:, :1], gy.reshape(1, -1) - centre[:, 1:]
    # Rotate by −angle and divide by the scale: the shape's own frame.
    c, s = np.cos(angle), np.sin(angle)
    lx, ly = (c * px + s * py) / scale, (-s * px + c * py) / scale

    inside = np.zeros((n, m * m), dtype=bool)
    for kind in range(len(SHAPE_CLASSES)):
        rows = labels == kind
        if rows.any():
            inside[rows] = _inside(kind, lx[rows], ly[rows], stroke[rows])
    coverage = inside.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))
    images = background[:, :, None] + (foreground - background)[:, :, None] * coverage
    images = images + noise_level * rng.standard_normal((n, size, size))
    return images.astype(np.float32)


def make_shapes(num_images: int, image_size: int = 16, seed: int = 0) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """``num_images`` labelled shape images: ``(images [N, 1, S, S] float32, labels [N]
    int64)``, classes balanced and in random order, the same for the same arguments."""
    num_images = check_int("make_shapes", "num_images", num_images, 1)
    image_size = check_int("make_shapes", "image_size", image_size, 8)
    seed = check_int("make_shapes", "seed", seed, 0)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_images) % len(SHAPE_CLASSES)).astype(np.int64)
    chunks = [_render(labels[i:i + 1024], image_size, rng)
              for i in range(0, num_images, 1024)]
    return np.concatenate(chunks)[:, None], labels


def load_shapes(train_size: int = 12000, test_size: int = 1200, image_size: int = 16,
                seed: int = 0) -> Dataset:
    """The shapes dataset split into train and test sets drawn from disjoint seeds."""
    check_int("load_shapes", "train_size", train_size, 1)
    check_int("load_shapes", "test_size", test_size, 1)
    check_int("load_shapes", "seed", seed, 0)
    train = make_shapes(train_size, image_size, seed=2 * seed)
    test = make_shapes(test_size, image_size, seed=2 * seed + 1)
    return Dataset("shapes", SHAPE_CLASSES, train[0], train[1], test[0], test[1])


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 handwritten 8×8 digits, scaled to [0, 1], split at random by
    ``seed``. Needs scikit-learn: ``pip install -e ".[data]"``."""
    test_fraction = check_float("load_digits", "test_fraction", test_fraction, 0.0, 1.0,
                                low_open=True, high_open=True)
    seed = check_int("load_digits", "seed", seed, 0)
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("the 'digits' dataset needs scikit-learn, which is not installed; "
                          "install it with: pip install -e \".[data]\"  (or pip install "
                          "scikit-learn), or use --dataset shapes") from None
    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = max(1, int(round(test_fraction * len(labels))))
    test, train = order[:n_test], order[n_test:]
    classes = tuple(str(d) for d in range(10))
    return Dataset("digits", classes, images[train], labels[train], images[test], labels[test])


def load_dataset(name: str, seed: int = 0, **options: Any) -> Dataset:
    """``"shapes"`` (options of :func:`load_shapes`) or ``"digits"`` (of :func:`load_digits`)."""
    check_choice("load_dataset", "name", name, DATASETS)
    if name == "shapes":
        return load_shapes(seed=seed, **options)
    return load_digits(seed=seed, **options)


class DataLoader:
    """Batches of ``(images, labels)`` NumPy arrays, reshuffled every epoch.

    The order of epoch ``e`` is a permutation drawn from ``(seed, e)``; iterating yields the
    rest of the current epoch, then moves to the next. :meth:`state_dict` is therefore just
    ``(epoch, position)`` (plus the seed and sizes, checked on restore), and restoring it
    resumes with the very next batch.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim < 1 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"DataLoader: images {images.shape} and labels {labels.shape} "
                             "must have the same number of rows, labels 1-D")
        if labels.shape[0] == 0:
            raise ValueError("DataLoader: the dataset is empty")
        self.images, self.labels = images, labels
        self.batch_size = check_int("DataLoader", "batch_size", batch_size, 1)
        self.shuffle = bool(shuffle)
        self.seed = check_int("DataLoader", "seed", seed, 0)
        self.drop_last = bool(drop_last)
        if self.drop_last and self.batch_size > len(labels):
            raise ValueError(f"DataLoader: batch_size={batch_size} exceeds the {len(labels)} "
                             "examples and drop_last=True would yield no batch")
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self.labels.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The example order of ``epoch``."""
        n = self.labels.shape[0]
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order(self.epoch)
        while self.position < len(self):
            idx = order[self.position * self.batch_size:(self.position + 1) * self.batch_size]
            self.position += 1
            yield self.images[idx], self.labels[idx]
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, int | bool]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "batch_size": self.batch_size, "num_examples": int(self.labels.shape[0]),
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the data and batching must be the same."""
        mine = self.state_dict()
        for key in ("seed", "batch_size", "num_examples", "shuffle", "drop_last"):
            if key not in state:
                raise ValueError(f"DataLoader.load_state_dict: state lacks {key!r}")
            if state[key] != mine[key]:
                raise ValueError(f"DataLoader.load_state_dict: saved {key}={state[key]!r} "
                                 f"but this loader has {key}={mine[key]!r}; resume with the "
                                 "same data and batch size")
        epoch = check_int("DataLoader.load_state_dict", "epoch", state.get("epoch"), 0)
        position = check_int("DataLoader.load_state_dict", "position", state.get("position"), 0)
        if position > len(self):
            raise ValueError(f"DataLoader.load_state_dict: position={position} exceeds the "
                             f"{len(self)} batches of an epoch")
        self.epoch, self.position = epoch, position


class ArrayDataset:
    """A user's own data: ``images`` [N, ...] (real numbers; integer pixels become float32)
    and ``labels`` [N] (integers in 0..classes−1), checked once, here.

    ``dataset[i]`` is ``(images[i], labels[i])``; :meth:`loader` batches the whole set with a
    :class:`DataLoader` (same arguments). ``classes`` names the classes (by default "0",
    "1", … up to the largest label).
    """

    def __init__(self, images: Any, labels: Any, classes: Any = None) -> None:
        fn = "ArrayDataset"
        images, labels = _host_array(images), _host_array(labels)
        if images.dtype.kind not in "biuf":
            raise TypeError(f"{fn}: images must hold real numbers; got dtype {images.dtype}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{fn}: labels must be integers; got dtype {labels.dtype}")
        if images.ndim < 1 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"{fn}: images of shape {images.shape} and labels of shape "
                             f"{labels.shape} must have the same number of rows N, labels 1-D")
        if labels.shape[0] == 0:
            raise ValueError(f"{fn}: the dataset is empty (N=0)")
        if images.dtype.kind != "f":
            images = images.astype(np.float32)
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{fn}: images contain NaN or infinite values "
                             f"({int(np.sum(~np.isfinite(images)))} of them)")
        if labels.min() < 0:
            raise ValueError(f"{fn}: labels must be >= 0; got {labels.min()}")
        count = int(labels.max()) + 1
        if classes is None:
            classes = tuple(str(k) for k in range(count))
        elif isinstance(classes, str) or len(classes) < count:
            raise ValueError(f"{fn}: classes must name at least {count} classes (labels go up "
                             f"to {count - 1}); got {classes!r}")
        self.images, self.labels = images, labels.astype(np.int64)
        self.classes: tuple[str, ...] = tuple(str(c) for c in classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: Any) -> tuple[np.ndarray, Any]:
        return self.images[index], self.labels[index]

    def loader(self, batch_size: int, shuffle: bool = True, seed: int = 0,
               drop_last: bool = False) -> DataLoader:
        """A :class:`DataLoader` over the whole dataset."""
        return DataLoader(self.images, self.labels, batch_size, shuffle, seed, drop_last)

    def __repr__(self) -> str:
        return (f"ArrayDataset(images {self.images.shape} {self.images.dtype}, "
                f"{len(self)} labels, {self.num_classes} classes)")


def _host_array(value: Any) -> np.ndarray:
    """A NumPy array from an array, a nested list or a Tensor (copied to the host)."""
    return value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) \
        else np.asarray(value)
