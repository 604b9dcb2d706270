"""Argument checks shared by the public entry points.

Every check runs in Python before any kernel, and every error names the function, the
argument, the value it got and what was expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_int(fn: str, name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name}={value!r} must be an int")
    if value < minimum:
        raise ValueError(f"{fn}: {name}={value!r} must be >= {minimum}")
    return int(value)


def check_pair(fn: str, name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as an ``(h, w)`` pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name}={value!r} must be an int or a pair of ints")
        return (check_int(fn, name, value[0], minimum), check_int(fn, name, value[1], minimum))
    v = check_int(fn, name, value, minimum)
    return (v, v)


def check_float(fn: str, name: str, value: Any, low: float, high: float,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within [low, high] (ends excluded where ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name}={value!r} must be a real number")
    v = float(value)
    bad = (math.isnan(v) or v < low or v > high or (low_open and v == low)
           or (high_open and v == high))
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{fn}: {name}={value!r} must be in {lo}{low}, {high}{hi}")
    return v


def check_tensor(fn: str, name: str, value: Any, ndim: int | tuple[int, ...] | None = None):
    from .tensor import Tensor

    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: {name} must be a minicond Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{fn}: {name} must be {want}, got shape {value.shape}")
    return value


def check_choice(fn: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: {name}={value!r} is not supported; expected one of "
                         f"{', '.join(map(repr, choices))}")
    return value


def check_layer_input(owner: str, x: Any, ndim: int, axis: int, channels_name: str,
                      channels: int, reference: Any):
    """The input of a layer: a Tensor of ``ndim`` axes whose axis ``axis`` has ``channels``
    entries, on the backend and in the dtype of the layer's parameter ``reference``. Errors
    name the layer and its own argument (``in_channels=3``), not a function inside it."""
    x = check_tensor(owner, "x", x, ndim=ndim)
    if x.shape[axis] != channels:
        raise ValueError(f"{owner}: x has shape {x.shape}, whose axis {axis % ndim} has "
                         f"{x.shape[axis]} entries; expected {channels_name}={channels}")
    if reference is not None:
        if x.backend is not reference.backend:
            raise ValueError(f"{owner}: x is on backend {x.backend.name!r} but the layer's "
                             f"parameters are on {reference.backend.name!r}; move one of them "
                             "with .to(backend)")
        if x.dtype != reference.dtype:
            raise TypeError(f"{owner}: x has dtype {x.dtype} but the layer's parameters are "
                            f"{reference.dtype}; convert one of them with .to(dtype=...)")
    return x
