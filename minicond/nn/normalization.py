"""LayerNorm and GroupNorm: normalisation without batch statistics.

Layer (docs/architecture.md): ``nn``. The math is in
``minicond.functional.normalization.Normalize``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._validate import check_float, check_int
from ..tensor import Tensor, tensor
from .module import Module, Parameter


def _filled(shape: tuple[int, ...], value: float, dtype: Any, backend: Any) -> Parameter:
    return Parameter(tensor(np.full(shape, value), dtype=dtype if dtype is not None
                            else np.float32, backend=backend))


class LayerNorm(Module):
    """``torch.nn.LayerNorm``: x standardised over its trailing axes ``normalized_shape``,
    then scaled by ``weight`` (ones) and shifted by ``bias`` (zeros), both of that shape,
    when ``elementwise_affine``; ``bias=False`` keeps the scale only."""

    def __init__(self, normalized_shape: int | tuple[int, ...] | list[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, dtype: Any = None,
                 backend: Any = None) -> None:
        super().__init__()
        owner = "LayerNorm"
        dims = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        if not isinstance(dims, (tuple, list)) or not dims:
            raise ValueError(f"{owner}: normalized_shape={normalized_shape!r} must be a "
                             "positive int or a non-empty sequence of positive ints")
        self.normalized_shape = tuple(check_int(owner, "normalized_shape", d, 1) for d in dims)
        self.eps = check_float(owner, "eps", eps, 0.0, float("inf"), low_open=True,
                               high_open=True)
        self.elementwise_affine = bool(elementwise_affine)
        affine, shape = self.elementwise_affine, self.normalized_shape
        self.register_parameter("weight", _filled(shape, 1.0, dtype, backend)
                                if affine else None)
        self.register_parameter("bias", _filled(shape, 0.0, dtype, backend)
                                if affine and bias else None)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class GroupNorm(Module):
    """``torch.nn.GroupNorm``: the ``num_channels`` channels of [B, C, ...] cut into
    ``num_groups`` groups, each standardised per example, then scaled and shifted per channel
    (``weight`` ones, ``bias`` zeros) when ``affine``."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, dtype: Any = None, backend: Any = None) -> None:
        super().__init__()
        owner = "GroupNorm"
        self.num_groups = check_int(owner, "num_groups", num_groups, 1)
        self.num_channels = check_int(owner, "num_channels", num_channels, 1)
        if self.num_channels % self.num_groups:
            raise ValueError(f"{owner}: num_groups={num_groups} must divide "
                             f"num_channels={num_channels}")
        self.eps = check_float(owner, "eps", eps, 0.0, float("inf"), low_open=True,
                               high_open=True)
        self.affine = bool(affine)
        C = self.num_channels
        self.register_parameter("weight", _filled((C,), 1.0, dtype, backend) if affine
                                else None)
        self.register_parameter("bias", _filled((C,), 0.0, dtype, backend) if affine
                                else None)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim >= 2 and x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: x has {x.shape[1]} channels (shape {x.shape}); "
                             f"expected num_channels={self.num_channels}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}")
