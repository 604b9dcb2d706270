"""Loss modules (``torch.nn``'s names and arguments): CrossEntropyLoss, NLLLoss, MSELoss,
L1Loss and BCEWithLogitsLoss, each calling one function of ``minicond.functional``.

Layer (docs/architecture.md): ``nn``. Class weights and ``pos_weight`` are buffers, as in PyTorch:
they belong to the module's state (``state_dict``, ``.to(dtype)``) and receive no gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._validate import check_choice, check_float, check_int
from ..functional.loss import REDUCTIONS
from ..tensor import Tensor, tensor
from .module import Module


def _constant_buffer(cls: str, name: str, value: Any) -> Tensor | None:
    """``value`` (None, a Tensor, an array or a number) as a tensor that needs no gradient."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.detach()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{cls}: {name} must be a Tensor or an array of real numbers; got "
                        f"{type(value).__name__} of dtype {arr.dtype}")
    return tensor(arr if arr.dtype.kind == "f" else arr.astype(np.float64))


class _Loss(Module):
    def __init__(self, reduction: str) -> None:
        super().__init__()
        self.reduction = check_choice(type(self).__name__, "reduction", reduction, REDUCTIONS)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """``F.cross_entropy`` of logits [N, C] and integer labels [N]."""

    def __init__(self, weight: Any = None, *, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", _constant_buffer("CrossEntropyLoss", "weight", weight))
        self.ignore_index = check_int("CrossEntropyLoss", "ignore_index", ignore_index, -(2**63))
        self.label_smoothing = check_float("CrossEntropyLoss", "label_smoothing",
                                           label_smoothing, 0.0, 1.0)

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_Loss):
    """``F.nll_loss`` of log-probabilities [N, C] and integer labels [N]."""

    def __init__(self, weight: Any = None, *, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", _constant_buffer("NLLLoss", "weight", weight))
        self.ignore_index = check_int("NLLLoss", "ignore_index", ignore_index, -(2**63))

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class MSELoss(_Loss):
    """``F.mse_loss``: mean (or sum, or none) of (input − target)²."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """``F.l1_loss``: mean (or sum, or none) of |input − target|."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.l1_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """``F.binary_cross_entropy_with_logits``: sigmoid and binary cross-entropy in one
    stable step; ``weight`` and ``pos_weight`` broadcast against the input."""

    def __init__(self, weight: Any = None, reduction: str = "mean",
                 pos_weight: Any = None) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", _constant_buffer("BCEWithLogitsLoss", "weight", weight))
        self.register_buffer("pos_weight",
                             _constant_buffer("BCEWithLogitsLoss", "pos_weight", pos_weight))

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
