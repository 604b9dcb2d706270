"""Weights in and out: PyTorch/timm state dicts and safetensors files.

Layer (docs/architecture.md): beside ``nn``. PyTorch is not imported: anything with
``.detach().cpu().numpy()`` (a torch tensor) or ``np.asarray`` support is accepted, and what goes
out is NumPy arrays.

Key layouts. minicond's own keys are timm's for the models of ``minicond.models`` (one to
one, ``num_batches_tracked`` included). Two differences are bridged here:

- a CondConv2d weight is [E, Cout, Cin/g, kh, kw] in minicond and flat
  [E, Cout·Cin/g·kh·kw] in timm (the same numbers in the same order; only the view differs);
- the seed CondConv2D names its router ``_routing_fn``; minicond's CondConv2d names it
  ``routing``.

Loading accepts either form; writing chooses with ``layout``: ``"timm"`` (flat CondConv
weights) or ``"seed"`` (5-D weights, ``_routing_fn.fc.*``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_atomic
from .nn.condconv import CondConv2d
from .nn.module import Module

# The seed CondConv2D names its router ``_routing_fn``; minicond names it ``routing``.
_KEY_ALIASES = (("_routing_fn.", "routing."),)
LAYOUTS = ("timm", "seed")


def to_numpy(value: Any, key: str = "value") -> np.ndarray:
    """A NumPy copy of a torch tensor, a minicond tensor or an array-like."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy().copy()
    if hasattr(value, "numpy") and callable(value.numpy):
        return np.asarray(value.numpy())
    try:
        return np.asarray(value)
    except Exception as err:  # noqa: BLE001 - reported with the key
        raise TypeError(f"load_torch_state_dict: {key!r} is a {type(value).__name__}, which "
                        "cannot be read as an array") from err


def minicond_key(key: str) -> str:
    """The minicond name of a state-dict key written by the seed, timm or minicond."""
    for old, new in _KEY_ALIASES:
        key = key.replace(old, new)
    return key


def _condconv_weights(module: Module) -> dict[str, tuple[int, ...]]:
    """The key and [E, Cout, Cin/g, kh, kw] shape of every CondConv2d weight in ``module``."""
    return {(f"{prefix}.weight" if prefix else "weight"): m.weight.shape
            for prefix, m in module.named_modules() if isinstance(m, CondConv2d)}


def load_torch_state_dict(module: Module, state_dict: dict[str, Any],
                          strict: bool = True) -> None:
    """Load a PyTorch, timm, seed or minicond state dict into ``module``.

    Keys may use the seed's names (``_routing_fn.fc.weight``) or minicond's (which are timm's
    for the models of ``minicond.models``). CondConv2d weights may be 5-D or timm's flat
    [E, Cout·Cin/g·kh·kw]. Missing or unexpected keys (with ``strict``) and shape mismatches
    raise a ValueError that names the key as the caller spelled it.
    """
    if not isinstance(module, Module):
        raise TypeError(f"load_torch_state_dict: module must be a minicond Module, got "
                        f"{type(module).__name__}")
    if not hasattr(state_dict, "items"):
        raise TypeError(f"load_torch_state_dict: state_dict must be a mapping, got "
                        f"{type(state_dict).__name__}")
    condconv = _condconv_weights(module)
    converted: dict[str, np.ndarray] = {}
    given: dict[str, str] = {}  # minicond name -> the key as the caller spelled it
    for key, value in state_dict.items():
        name = minicond_key(key)
        if name in converted:
            raise ValueError(f"load_torch_state_dict: {given[name]!r} and {key!r} both map to "
                             f"{name!r}")
        arr = to_numpy(value, key)
        shape = condconv.get(name)
        if shape is not None and arr.ndim == 2:
            if arr.shape != (shape[0], int(np.prod(shape[1:]))):
                raise ValueError(
                    f"load_torch_state_dict: {key!r} has shape {arr.shape}; the module "
                    f"expects a CondConv weight {shape} or its flat form "
                    f"{(shape[0], int(np.prod(shape[1:])))}")
            arr = arr.reshape(shape)
        converted[name] = arr
        given[name] = key
    try:
        module.load_state_dict(converted, strict=strict)
    except ValueError as err:
        message = str(err)
        for name, key in given.items():
            if name != key:
                message = message.replace(repr(name), f"{key!r} (minicond {name!r})")
        raise ValueError(message) from None


def to_torch_state_dict(module: Module, layout: str = "timm") -> dict[str, np.ndarray]:
    """The module's parameters and buffers as NumPy arrays under PyTorch's conventions.

    ``layout="timm"``: minicond's keys with CondConv2d weights flattened to
    [E, Cout·Cin/g·kh·kw], which ``timm_model.load_state_dict(..., strict=True)`` accepts
    for the same architecture. ``layout="seed"``: 5-D CondConv weights and the seed's router
    name ``_routing_fn.fc.*``. ``num_batches_tracked`` is int64, as PyTorch keeps it.
    """
    if not isinstance(module, Module):
        raise TypeError(f"to_torch_state_dict: module must be a minicond Module, got "
                        f"{type(module).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"to_torch_state_dict: layout={layout!r} is not supported; expected "
                         f"one of {', '.join(map(repr, LAYOUTS))}")
    condconv = _condconv_weights(module)
    out: dict[str, np.ndarray] = {}
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            value = value.astype(np.int64)
        if layout == "timm" and key in condconv:
            value = value.reshape(value.shape[0], -1)
        if layout == "seed":
            key = key.replace("routing.", "_routing_fn.")
        out[key] = np.asarray(value, order="C")
    return out


def load_safetensors(module: Module, path: str | os.PathLike, strict: bool = True) -> None:
    """Load a ``.safetensors`` file (e.g. timm's ``model.safetensors``) into ``module``, with
    the key handling of :func:`load_torch_state_dict`. Errors name the file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not isinstance(module, Module):
        raise TypeError(f"load_safetensors: module must be a minicond Module, got "
                        f"{type(module).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_safetensors: {str(path)!r} does not exist or is not a "
                                "file")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"load_safetensors: {str(path)!r} is not a readable safetensors "
                         f"file ({err})") from None
    try:
        load_torch_state_dict(module, state, strict=strict)
    except ValueError as err:
        raise ValueError(f"load_safetensors: {str(path)!r} does not fit the model: "
                         f"{err}") from None


def save_safetensors(module: Module, path: str | os.PathLike, layout: str = "timm") -> Path:
    """Write the module's state to ``path`` as safetensors in ``layout`` (see
    :func:`to_torch_state_dict`), atomically: a temporary file in the same folder, fsync,
    then rename, so an interrupted save leaves any earlier file intact."""
    from safetensors.numpy import save

    data = save(to_torch_state_dict(module, layout), metadata={"format": "pt"})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, data)
