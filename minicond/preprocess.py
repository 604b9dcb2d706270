"""Images in: decoding with Pillow and each model's evaluation preprocessing, in NumPy.

Layer (docs/architecture.md): beside ``data.py``, below ``predict.py``; needs Pillow, nothing else
beyond NumPy.

A pretrained ImageNet model expects its input prepared exactly as it was evaluated. The
model's ``pretrained_cfg`` names the recipe: ``input_size`` (C, H, W), ``crop_pct``,
``interpolation``, ``mean`` and ``std``. For a target side S the steps are

1. RGB: greyscale is replicated into three channels, an alpha channel is dropped (Pillow's
   ``Image.convert("RGB")``, which is what timm applies when it opens an image);
2. resize so that the shorter side is ⌊S / crop_pct⌋ pixels, the longer side scaled by the
   same factor and truncated to an integer, with the named interpolation (Pillow's resampling
   filters, which low-pass filter when shrinking);
3. centre crop S×S, the offsets ``round((H' − S)/2)`` and ``round((W' − S)/2)`` rounded
   half to even (Python's ``round``), zero padding first if the image is smaller than S;
4. to float32 in [0, 1] (divide by 255), then ``(x − mean) / std`` per channel.

These are the rounding rules of timm's evaluation transform (``transforms_imagenet_eval``,
built on torchvision's ``Resize`` and ``CenterCrop``), so both give the same array for the
same image; the tests check it.

Class names: :func:`imagenet_classes` reads the 1000 ImageNet-1k classes, in the index order
of the models' classifiers, from ``data_files/imagenet_classes.txt`` (WordNet synset id and
its lemmas, one class per line).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
DEFAULT_CROP_PCT = 0.875


class ImageError(ValueError):
    """A file that cannot be read as an image; the message names the file."""


@dataclass(frozen=True)
class PreprocessConfig:
    """The evaluation recipe of a model (see the module docstring)."""

    input_size: tuple[int, int, int]
    crop_pct: float = DEFAULT_CROP_PCT
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @classmethod
    def from_pretrained_cfg(cls, cfg: Mapping[str, Any]) -> PreprocessConfig:
        """The recipe from a model's ``pretrained_cfg`` (missing keys take timm's
        defaults), checked."""
        owner = "PreprocessConfig.from_pretrained_cfg"
        if not isinstance(cfg, Mapping) or "input_size" not in cfg:
            raise ValueError(f"{owner}: cfg must be a mapping with an 'input_size', got {cfg!r}")
        size = tuple(int(v) for v in cfg["input_size"])
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"{owner}: input_size={cfg['input_size']!r}; expected (C, H, W) "
                             "of positive integers")
        if size[1] != size[2]:
            raise ValueError(f"{owner}: input_size={size} is not square; only square inputs "
                             "are supported")
        crop_pct = float(cfg.get("crop_pct") or DEFAULT_CROP_PCT)
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"{owner}: crop_pct={crop_pct} must be in (0, 1]")
        interpolation = str(cfg.get("interpolation", "bilinear"))
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"{owner}: interpolation={interpolation!r}; expected one of "
                             f"{INTERPOLATIONS}")
        mean = tuple(float(v) for v in cfg.get("mean", cls.mean))
        std = tuple(float(v) for v in cfg.get("std", cls.std))
        if len(mean) != size[0] or len(std) != size[0] or min(std) <= 0:
            raise ValueError(f"{owner}: mean={mean} and std={std} need {size[0]} entries "
                             "each, std > 0")
        return cls(size, crop_pct, interpolation, mean, std)  # type: ignore[arg-type]


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs Pillow, which is not installed; install it "
                          "with: pip install pillow") from None
    return Image


def open_image(path: str | os.PathLike) -> Any:
    """Decode the image file ``path`` with Pillow (fully read, file closed);
    :class:`ImageError` names the file when it is missing or not an image."""
    Image = _pil()
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{str(path)!r} does not exist or is not a file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise ImageError(f"{str(path)!r} is not an image Pillow can read ({err})") from None


def resize_shorter_side(image: Any, size: int, interpolation: str) -> Any:
    """Scale ``image`` so that its shorter side is ``size``; the longer side keeps the aspect
    ratio and is truncated to an integer (torchvision's rule)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), _resampling(interpolation))


def _resampling(interpolation: str) -> Any:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"resize_shorter_side: interpolation={interpolation!r}; expected one "
                         f"of {INTERPOLATIONS}")
    return getattr(_pil().Resampling, interpolation.upper())


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central ``size``×``size`` window of an [H, W, C] array, zero-padded first where
    it is smaller (offsets rounded half to even, as torchvision's ``CenterCrop``)."""
    h, w = array.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        array = np.pad(array, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = array.shape[:2]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return array[top:top + size, left:left + size]


def preprocess(image: Any, config: PreprocessConfig) -> np.ndarray:
    """One image (a Pillow image) as the model's input [C, S, S] float32; steps 1–4 of the
    module docstring."""
    channels, size, _ = config.input_size
    if channels != 3:
        raise ValueError(f"preprocess: input_size={config.input_size} has {channels} channels; "
                         "ImageNet preprocessing makes 3 (RGB)")
    image = image.convert("RGB")
    image = resize_shorter_side(image, math.floor(size / config.crop_pct),
                                config.interpolation)
    pixels = center_crop(np.asarray(image), size)
    x = pixels.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_grey(image: Any, size: int) -> np.ndarray:
    """An image as the toy datasets store theirs: grey levels in [0, 1], the whole image
    resized to ``size``×``size`` (bilinear), shape [1, S, S] float32."""
    image = image.convert("L").resize((size, size), _resampling("bilinear"))
    return (np.asarray(image).astype(np.float32) / np.float32(255.0))[None]


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 ImageNet-1k classes in classifier order: ``(synset id, names)`` pairs, e.g.
    ``("n01440764", "tench, Tinca tinca")``."""
    text = resources.files("minicond").joinpath("data_files/imagenet_classes.txt").read_text(
        encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line)
    if len(rows) != 1000 or any(len(r) != 2 for r in rows):
        raise RuntimeError("imagenet_classes: the packaged class list is damaged (expected "
                           "1000 lines 'synset<TAB>names')")
    return rows  # type: ignore[return-value]
