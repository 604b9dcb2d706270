"""The shapes dataset, the digits wrapper and the resumable loader."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from minicond import data
from minicond.data import SHAPE_CLASSES, DataLoader, load_dataset, load_shapes, make_shapes


def test_shapes_are_deterministic_balanced_and_in_range():
    x1, y1 = make_shapes(120, image_size=12, seed=3)
    x2, y2 = make_shapes(120, image_size=12, seed=3)
    x3, _ = make_shapes(120, image_size=12, seed=4)
    assert x1.shape == (120, 1, 12, 12) and x1.dtype == np.float32
    assert y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert np.bincount(y1, minlength=6).tolist() == [20] * len(SHAPE_CLASSES)
    assert np.isfinite(x1).all() and -1.0 < x1.min() and x1.max() < 2.0


def test_shape_classes_differ_on_average():
    """Every class has its own mean image: a classifier has something to learn."""
    x, y = make_shapes(600, image_size=16, seed=0)
    means = np.stack([x[y == k].mean(axis=0).ravel() for k in range(len(SHAPE_CLASSES))])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dist[~np.eye(len(SHAPE_CLASSES), dtype=bool)].min() > 0.1


def test_images_vary_within_a_class():
    x, y = make_shapes(60, image_size=16, seed=1)
    disks = x[y == 0].reshape(-1, 256)
    assert np.std(disks, axis=0).mean() > 0.05


def test_train_and_test_splits_differ():
    d = load_shapes(train_size=30, test_size=12, image_size=10, seed=0)
    assert d.train_images.shape == (30, 1, 10, 10) and d.test_images.shape == (12, 1, 10, 10)
    assert d.image_shape == (1, 10, 10) and d.num_classes == 6
    assert not np.array_equal(d.train_images[:12], d.test_images)


@pytest.mark.parametrize("kwargs, error", [
    ({"num_images": 0}, ValueError), ({"num_images": 5, "image_size": 4}, ValueError),
    ({"num_images": 5, "seed": -1}, ValueError), ({"num_images": 2.5}, TypeError),
])
def test_make_shapes_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error, match="make_shapes"):
        make_shapes(**kwargs)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="'mnist'"):
        load_dataset("mnist")


def test_digits_split():
    pytest.importorskip("sklearn")
    d = load_dataset("digits", seed=0)
    assert d.train_images.shape[1:] == (1, 8, 8) and d.num_classes == 10
    assert len(d.train_labels) + len(d.test_labels) == 1797
    assert 0.0 <= d.train_images.min() and d.train_images.max() <= 1.0


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[data\]"'):
        data.load_digits()


def test_loader_covers_each_epoch_once_and_reshuffles():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    loader = DataLoader(x, y, batch_size=4, seed=1)
    assert len(loader) == 3
    epoch0 = np.concatenate([b for _, b in loader])
    epoch1 = np.concatenate([b for _, b in loader])
    assert sorted(epoch0.tolist()) == list(range(10)) == sorted(epoch1.tolist())
    assert not np.array_equal(epoch0, epoch1)
    assert loader.epoch == 2 and loader.position == 0
    again = DataLoader(x, y, batch_size=4, seed=1)
    np.testing.assert_array_equal(np.concatenate([b for _, b in again]), epoch0)


def test_loader_drop_last_and_no_shuffle():
    loader = DataLoader(np.zeros((10, 2)), np.arange(10), batch_size=4, shuffle=False,
                        drop_last=True)
    batches = [b.tolist() for _, b in loader]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_loader_resumes_mid_epoch_with_the_same_batches():
    x, y = np.arange(22, dtype=np.float32)[:, None], np.arange(22)
    straight = DataLoader(x, y, batch_size=5, seed=7)
    reference = [b.tolist() for _ in range(3) for _, b in straight]

    first = DataLoader(x, y, batch_size=5, seed=7)
    seen = [b.tolist() for _, b in first]                 # epoch 0
    it = iter(first)
    seen += [next(it)[1].tolist() for _ in range(2)]      # two batches of epoch 1
    state = first.state_dict()
    resumed = DataLoader(x, y, batch_size=5, seed=7)
    resumed.load_state_dict(state)
    seen += [b.tolist() for _, b in resumed]              # rest of epoch 1
    seen += [b.tolist() for _, b in resumed]              # epoch 2
    assert seen == reference


@pytest.mark.parametrize("change", [{"seed": 8}, {"batch_size": 4}])
def test_loader_refuses_a_state_from_other_settings(change):
    x, y = np.zeros((12, 1)), np.arange(12)
    state = DataLoader(x, y, batch_size=5, seed=7).state_dict()
    other = DataLoader(x, y, **{"batch_size": 5, "seed": 7, **change})
    with pytest.raises(ValueError, match="same data and batch size"):
        other.load_state_dict(state)


def test_loader_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same number of rows"):
        DataLoader(np.zeros((3, 1)), np.arange(4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros((3, 1)), np.arange(3), batch_size=0)
