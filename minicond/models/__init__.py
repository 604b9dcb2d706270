"""Model registry: timm's CondConv-EfficientNets and their static twins, and the toy networks.

Layer (docs/architecture.md): above ``nn``. ``create_model(name, ...)`` builds a network by name;
``list_models()`` lists the names. The EfficientNets have exactly timm's architecture,
parameter names and shapes for the same arguments (``efficientnet.py``); ``toy_condconv`` and
``toy_static`` are the small networks ``minicond train`` trains (``toy.py``).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from .efficientnet import VARIANTS, EfficientNet
from .toy import MODELS, ToyNet, build_model

TOY_MODELS: dict[str, str] = {"toy_condconv": "condconv", "toy_static": "static"}


def list_models(pattern: str = "*") -> list[str]:
    """The registered names matching the shell-style ``pattern``, sorted."""
    if not isinstance(pattern, str):
        raise TypeError(f"list_models: pattern={pattern!r} must be a str")
    return sorted(fnmatch.filter([*VARIANTS, *TOY_MODELS], pattern))


def create_model(name: str, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, dtype: Any = None, backend: Any = None,
                 **kwargs: Any) -> EfficientNet | ToyNet:
    """The network registered as ``name`` with freshly initialised weights.

    ``num_classes``, ``in_chans``, ``drop_rate`` (dropout before the classifier, training
    only) and ``drop_path_rate`` (stochastic depth of the last block; earlier blocks get a
    linearly smaller rate) mean what they mean in timm. The toy networks take ``experts``
    and ``width`` as keyword arguments and have no dropout or drop path.
    """
    if name in VARIANTS:
        if kwargs:
            raise TypeError(f"create_model: {name} takes no argument {sorted(kwargs)[0]!r}")
        return EfficientNet(name, num_classes, in_chans, drop_rate, drop_path_rate, dtype,
                            backend)
    if name in TOY_MODELS:
        if drop_rate or drop_path_rate:
            raise ValueError(f"create_model: {name} has no dropout or drop path; got "
                             f"drop_rate={drop_rate!r}, drop_path_rate={drop_path_rate!r}")
        unknown = sorted(set(kwargs) - {"experts", "width"})
        if unknown:
            raise TypeError(f"create_model: {name} takes no argument {unknown[0]!r}")
        return ToyNet(TOY_MODELS[name], in_chans, num_classes, backend=backend, dtype=dtype,
                      **kwargs)
    raise ValueError(f"create_model: name={name!r} is not a registered model; expected one of "
                     f"{', '.join(map(repr, list_models()))}")


__all__ = ["EfficientNet", "MODELS", "TOY_MODELS", "ToyNet", "VARIANTS", "build_model",
           "create_model", "list_models"]
