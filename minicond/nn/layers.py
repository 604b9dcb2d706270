"""Basic layers: Linear, Conv2d and Dropout.

Layer (docs/architecture.md): ``nn``. Each layer holds its Parameters and calls one function of
``minicond.functional`` in ``forward``.
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from .._validate import (
    check_choice,
    check_float,
    check_int,
    check_layer_input,
    check_pair,
    check_tensor,
)
from ..functional.conv import check_conv_options, resolve_padding
from ..functional.pad import PAD_MODES
from ..tensor import Tensor
from .init import default_bound, uniform
from .module import Module, Parameter


class Linear(Module):
    """y = x·Wᵀ + b with W [out_features, in_features], b [out_features]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = None, backend: Any = None) -> None:
        super().__init__()
        self.in_features = check_int("Linear", "in_features", in_features, 1)
        self.out_features = check_int("Linear", "out_features", out_features, 1)
        bound = default_bound(in_features)
        self.weight = Parameter(uniform((out_features, in_features), bound, dtype, backend))
        self.register_parameter(
            "bias", Parameter(uniform((out_features,), bound, dtype, backend)) if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor("Linear", "x", x)
        if x.ndim == 0:
            raise ValueError("Linear: x must have at least one axis, got a 0-d tensor")
        check_layer_input("Linear", x, x.ndim, -1, "in_features", self.in_features,
                          self.weight)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Dropout(Module):
    """Inverted dropout in train mode, the identity in eval mode."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_float("Dropout", "p", p, 0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvOptions:
    """The arguments shared by Conv2d and CondConv2d, checked once."""

    def __init__(self, owner: str, in_channels: Any, out_channels: Any, kernel_size: Any,
                 stride: Any, padding: Any, dilation: Any, groups: Any,
                 padding_mode: Any) -> None:
        self.owner = owner
        self.in_channels = check_int(owner, "in_channels", in_channels, 1)
        self.out_channels = check_int(owner, "out_channels", out_channels, 1)
        self.kernel_size = check_pair(owner, "kernel_size", kernel_size, 1)
        self.stride, self.padding, self.dilation, self.groups = check_conv_options(
            owner, self.in_channels, self.out_channels, stride, padding, dilation, groups)
        self.padding_mode = check_choice(owner, "padding_mode", padding_mode, PAD_MODES)

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        """[Cout, Cin/G, kh, kw]: the shape of one conv weight (one expert)."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def fan_in(self) -> int:
        return self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]

    def explicit_pad(self, x: Tensor) -> tuple[Tensor, Any]:
        """For a non-zeros padding mode, pad x here in that mode and let the conv use no
        padding. "same" and "tf_same" pad as they would with zeros (for "tf_same": from x's
        size), only the values differ."""
        if self.padding_mode == "zeros":
            return x, self.padding
        x = check_tensor(self.owner, "x", x, ndim=4)
        top, bottom, left, right = resolve_padding(self.padding, self.kernel_size, self.stride,
                                                   self.dilation, tuple(x.shape[-2:]))
        if top == bottom == left == right == 0:
            return x, 0
        return F.pad(x, (left, right, top, bottom), self.padding_mode), 0

    def describe(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class Conv2d(Module):
    """A static 2-D convolution with PyTorch's arguments and initialisation.

    ``padding`` also takes "tf_same": TensorFlow's "SAME" for any stride (see
    :func:`minicond.functional.conv2d`); "same" is PyTorch's, stride 1 only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype: Any = None, backend: Any = None) -> None:
        super().__init__()
        self.options = ConvOptions("Conv2d", in_channels, out_channels, kernel_size, stride,
                                   padding, dilation, groups, padding_mode)
        bound = default_bound(self.options.fan_in)
        self.weight = Parameter(uniform(self.options.kernel_shape, bound, dtype, backend))
        self.register_parameter(
            "bias", Parameter(uniform((out_channels,), bound, dtype, backend)) if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        o = self.options
        check_layer_input("Conv2d", x, 4, 1, "in_channels", o.in_channels, self.weight)
        x, padding = o.explicit_pad(x)
        return F.conv2d(x, self.weight, self.bias, o.stride, padding, o.dilation, o.groups)

    def extra_repr(self) -> str:
        return self.options.describe() + ("" if self.bias is not None else ", bias=False")
