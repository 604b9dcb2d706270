"""Loading PyTorch weights into minicond modules.

Layer: beside ``nn``. PyTorch is not imported: anything with ``.detach().cpu().numpy()`` (a
torch tensor) or ``np.asarray`` support is accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .nn.module import Module

# The seed CondConv2D names its router ``_routing_fn``; minicond names it ``routing``.
_KEY_ALIASES = (("_routing_fn.", "routing."),)


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
    """The minicond name of a state-dict key written by the seed or by minicond."""
    for old, new in _KEY_ALIASES:
        key = key.replace(old, new)
    return key


def load_torch_state_dict(module: Module, state_dict: dict[str, Any],
                          strict: bool = True) -> None:
    """Load a PyTorch (or minicond) state dict into ``module``.

    Keys may use the seed's names (``_routing_fn.fc.weight``) or minicond's
    (``routing.fc.weight``). Missing or unexpected keys (with ``strict``) and shape mismatches
    raise a ValueError that names the key.
    """
    if not isinstance(module, Module):
        raise TypeError(f"load_torch_state_dict: module must be a minicond Module, got "
                        f"{type(module).__name__}")
    if not hasattr(state_dict, "items"):
        raise TypeError(f"load_torch_state_dict: state_dict must be a mapping, got "
                        f"{type(state_dict).__name__}")
    converted: dict[str, np.ndarray] = {}
    given: dict[str, str] = {}  # minicond name -> the key as the caller spelled it
    for key, value in state_dict.items():
        name = minicond_key(key)
        if name in converted:
            raise ValueError(f"load_torch_state_dict: {given[name]!r} and {key!r} both map to "
                             f"{name!r}")
        converted[name] = to_numpy(value, key)
        given[name] = key
    try:
        module.load_state_dict(converted, strict=strict)
    except ValueError as err:
        message = str(err)
        for name, key in given.items():
            if name != key:
                message = message.replace(repr(name), f"{key!r} (minicond {name!r})")
        raise ValueError(message) from None
