"""ConvTranspose2d: the transposed convolution as a layer.

Layer (docs/architecture.md): ``nn``. The math is in ``minicond.functional.conv_transpose``.
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from .._validate import check_int, check_layer_input, check_pair
from ..tensor import Tensor
from .init import default_bound, uniform
from .module import Module, Parameter


class ConvTranspose2d(Module):
    """``torch.nn.ConvTranspose2d`` with weight [Cin, Cout/G, kh, kw] and bias [Cout].

    Initialisation as PyTorch's: U(−1/√fan_in, 1/√fan_in) for weight and bias, where fan_in
    is computed from the weight's second axis, Cout/G·kh·kw."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, dtype: Any = None, backend: Any = None) -> None:
        super().__init__()
        owner = "ConvTranspose2d"
        self.in_channels = check_int(owner, "in_channels", in_channels, 1)
        self.out_channels = check_int(owner, "out_channels", out_channels, 1)
        self.kernel_size = check_pair(owner, "kernel_size", kernel_size, 1)
        self.stride = check_pair(owner, "stride", stride, 1)
        self.padding = check_pair(owner, "padding", padding, 0)
        self.output_padding = check_pair(owner, "output_padding", output_padding, 0)
        self.dilation = check_pair(owner, "dilation", dilation, 1)
        self.groups = check_int(owner, "groups", groups, 1)
        for name, n in (("in_channels", in_channels), ("out_channels", out_channels)):
            if n % self.groups:
                raise ValueError(f"{owner}: groups={groups} must divide {name}={n}")
        for op, s, d in zip(self.output_padding, self.stride, self.dilation, strict=True):
            if op >= s and op >= d:
                raise ValueError(f"{owner}: output_padding={output_padding} must be smaller "
                                 f"than either stride={stride} or dilation={dilation}")
        per_group = out_channels // self.groups
        bound = default_bound(per_group * self.kernel_size[0] * self.kernel_size[1])
        self.weight = Parameter(uniform((in_channels, per_group, *self.kernel_size), bound,
                                        dtype, backend))
        self.register_parameter(
            "bias", Parameter(uniform((out_channels,), bound, dtype, backend)) if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        check_layer_input("ConvTranspose2d", x, 4, 1, "in_channels", self.in_channels,
                          self.weight)
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, groups={self.groups}, "
                f"dilation={self.dilation}, bias={self.bias is not None}")
