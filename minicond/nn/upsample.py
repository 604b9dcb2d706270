"""Upsample: ``interpolate`` as a layer.

Layer (docs/architecture.md): ``nn``. The math is in ``minicond.functional.resample``.
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from .._validate import check_choice
from ..functional.resample import INTERPOLATE_MODES
from ..tensor import Tensor
from .module import Module


class Upsample(Module):
    """``torch.nn.Upsample``: resizes [B, C, H, W] to ``size`` or by ``scale_factor`` with
    mode "nearest" or "bilinear" (see :func:`minicond.functional.interpolate`)."""

    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None) -> None:
        super().__init__()
        self.mode = check_choice("Upsample", "mode", mode, INTERPOLATE_MODES)
        if (size is None) == (scale_factor is None):
            raise ValueError(f"Upsample: give exactly one of size and scale_factor, got "
                             f"size={size!r} and scale_factor={scale_factor!r}")
        if mode == "nearest" and align_corners is not None:
            raise ValueError(f"Upsample: align_corners={align_corners!r} can only be set "
                             "with mode 'bilinear'")
        self.size, self.scale_factor = size, scale_factor
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def extra_repr(self) -> str:
        what = (f"size={self.size}" if self.size is not None
                else f"scale_factor={self.scale_factor}")
        return f"{what}, mode={self.mode!r}"
