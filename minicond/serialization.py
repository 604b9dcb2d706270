"""``mc.save(obj, path)`` and ``mc.load(path)``: state dicts and nested containers in the
checkpoint file format, never pickle.

Layer (docs/architecture.md): beside ``checkpoint.py``, whose writer and reader do the work: the
file is the same zip of ``.npy`` arrays plus a JSON skeleton, written atomically (a temporary file,
fsync, rename, so a failed save leaves the previous file as it was), and checked on reading (CRCs,
format tag, SHA-256 of the arrays). Loading therefore runs no code from the file.

What can be saved: dicts, lists and tuples, nested in any way, of NumPy arrays of numbers or
booleans, Tensors, and the scalars ``int float bool str None``. Dict keys are strings or
ints (an optimizer's state is keyed by parameter index). ``load`` gives the same nesting back
with every array and Tensor as a NumPy array, which ``Module.load_state_dict`` and the
optimizers' ``load_state_dict`` accept.

Encoding on top of the checkpoint skeleton: a tuple is stored as ``{"__tuple__": [...]}``
and a dict with int keys as ``{"__items__": [[key, value], ...]}``, so both come back as
they went in; those two keys are reserved in saved dicts.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .tensor import Tensor

_SAVED = "minicond.save"     # the one key of the checkpoint state written by save()
_TUPLE = "__tuple__"
_ITEMS = "__items__"


def _encode(value: Any, where: str) -> Any:
    """``value`` in the checkpoint's vocabulary (str-keyed dicts, lists, arrays, scalars)."""
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"save: {where} is an array of dtype {value.dtype}; expected "
                            "numbers or booleans (object arrays would need pickle)")
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if any(k in (_TUPLE, _ITEMS) for k in value):
            raise ValueError(f"save: {where} has a key {_TUPLE!r} or {_ITEMS!r}; those names "
                             "are reserved by the file format")
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
        for k in value:
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"save: {where} has the key {k!r} of type {type(k).__name__}; "
                                "expected str or int keys")
        return {_ITEMS: [[k, _encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    hint = (" (save its state_dict())" if hasattr(value, "state_dict") else "")
    raise TypeError(f"save: {where} is a {type(value).__name__}{hint}; expected dicts, lists, "
                    "tuples, NumPy arrays, Tensors, or int/float/bool/str/None")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_decode(v) for v in value[_TUPLE])
        if set(value) == {_ITEMS}:
            return {k: _decode(v) for k, v in value[_ITEMS]}
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (e.g. ``model.state_dict()``, or a dict of them) to ``path``, atomically.

    Nothing is written unless the whole object can be saved: an unsupported value raises a
    ``TypeError`` naming where it sits, and the file at ``path`` is left as it was.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save: path must be a str or os.PathLike, got {type(path).__name__}")
    save_checkpoint(path, {_SAVED: _encode(obj, "obj")})


def load(path: str | os.PathLike) -> Any:
    """Read what :func:`save` wrote, in the same nesting, arrays and Tensors as NumPy arrays.

    A training checkpoint (``minicond train``) loads as its state dict. Any other file is
    refused with a :class:`~minicond.checkpoint.CheckpointError` (a ``ValueError``) naming
    it and saying what is wrong: missing, not a minicond file, truncated or corrupted.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a str or os.PathLike, got {type(path).__name__}")
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"load: {err}") from None
    if set(state) == {_SAVED}:
        return _decode(state[_SAVED])
    return _decode(state)
