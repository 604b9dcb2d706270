"""Squeeze-and-excitation (Hu et al., 2018) as EfficientNet uses it.

Layer (docs/architecture.md): ``nn``. For x [B, C, H, W] and a reduced width Cr:

    s = mean_hw(x)                       [B, C, 1, 1]     squeeze
    s = SiLU(conv_reduce(s))             [B, Cr, 1, 1]    1×1 conv with bias
    a = sigmoid(conv_expand(s))          [B, C, 1, 1]     1×1 conv with bias
    y = x · a                            [B, C, H, W]     per-channel gate

Backward (autograd composes it from the ops' own backwards; written out here because the
input is used twice). With g = ∂L/∂y and u the gate's pre-activation:

    ∂L/∂a_c  = Σ_hw g_chw · x_chw                     (the gate sees the whole plane)
    ∂L/∂u_c  = ∂L/∂a_c · a_c (1 − a_c)                 then back through both 1×1 convs to ∂L/∂s
    ∂L/∂x_chw = g_chw · a_c + ∂L/∂s_c / (H·W)          direct path + pooled path
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from .._validate import check_int
from ..tensor import Tensor
from .activation import ReLU, SiLU
from .layers import Conv2d
from .module import Module


class SqueezeExcite(Module):
    """Channel gate y = x · sigmoid(conv_expand(act(conv_reduce(mean_hw x)))).

    Parameters (timm's names): ``conv_reduce.weight`` [Cr, C, 1, 1], ``conv_reduce.bias``
    [Cr], ``conv_expand.weight`` [C, Cr, 1, 1], ``conv_expand.bias`` [C]. EfficientNet takes
    Cr from the *block input* width (a quarter of it), not from the expanded width C.
    """

    def __init__(self, channels: int, reduced_channels: int, activation: str = "silu",
                 dtype: Any = None, backend: Any = None) -> None:
        super().__init__()
        self.channels = check_int("SqueezeExcite", "channels", channels, 1)
        self.reduced_channels = check_int("SqueezeExcite", "reduced_channels",
                                          reduced_channels, 1)
        if activation not in ("silu", "relu"):
            raise ValueError(f"SqueezeExcite: activation={activation!r} is not supported; "
                             "expected 'silu' or 'relu'")
        self.conv_reduce = Conv2d(channels, reduced_channels, 1, dtype=dtype, backend=backend)
        self.act = SiLU() if activation == "silu" else ReLU()
        self.conv_expand = Conv2d(reduced_channels, channels, 1, dtype=dtype, backend=backend)

    def forward(self, x: Tensor) -> Tensor:
        s = F.mean(x, dim=(2, 3), keepdim=True)
        gate = F.sigmoid(self.conv_expand(self.act(self.conv_reduce(s))))
        return x * gate

    def extra_repr(self) -> str:
        return f"{self.channels}, reduced_channels={self.reduced_channels}"
