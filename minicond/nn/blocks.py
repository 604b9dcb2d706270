"""EfficientNet-style inverted-residual (MBConv) blocks: a CondConv block whose three
convolutions share one router, and its static twin with ordinary convolutions.

Layer: ``nn``. Both blocks compute, for x [B, Cin, H, W] and M = Cin·expand_ratio channels,

    h = act(BN₀(expand 1×1 (x)))            [B, M, H, W]     (skipped when expand_ratio = 1)
    h = act(BN₁(depthwise k×k, stride s (h)))  [B, M, Ho, Wo]  (groups = M)
    y = BN₂(project 1×1 (h))                [B, Cout, Ho, Wo]
    y = y + x                               when s = 1 and Cin = Cout

In the CondConv block each of the three convolutions is a CondConv2d, and, as in the
paper's EfficientNet models, the routing weights r = sigmoid(R · mean_hw(x) + c) (or the
softmax variant) are computed once per block from the block input x and given to all three.
Squeeze-and-excitation and drop-connect are left out. The convolutions have no bias (each is
followed by a batch norm).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._validate import check_choice, check_int
from ..tensor import Tensor
from .activation import ReLU, SiLU
from .batchnorm import BatchNorm2d
from .condconv import CondConv2d, Router
from .layers import Conv2d
from .module import Module

ACTIVATIONS = ("silu", "relu")


class _InvertedResidual(Module):
    """The shared structure; subclasses choose the convolution (``make_conv(cin, cout, k,
    stride, groups)``) and the routing (``_conv_kwargs``)."""

    def __init__(self, owner: str, make_conv: Callable[[int, int, int, int, int], Module],
                 in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand_ratio: int, activation: str, bn_momentum: float, bn_eps: float,
                 dtype: Any, backend: Any) -> None:
        super().__init__()
        self.in_channels = check_int(owner, "in_channels", in_channels, 1)
        self.out_channels = check_int(owner, "out_channels", out_channels, 1)
        self.kernel_size = check_int(owner, "kernel_size", kernel_size, 1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"{owner}: kernel_size={kernel_size} must be odd so that padding "
                             "k//2 keeps the spatial size")
        self.stride = check_int(owner, "stride", stride, 1)
        self.expand_ratio = check_int(owner, "expand_ratio", expand_ratio, 1)
        self.activation = check_choice(owner, "activation", activation, ACTIVATIONS)
        mid = self.in_channels * self.expand_ratio
        self.mid_channels = mid

        def bn(channels: int) -> BatchNorm2d:
            return BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum, dtype=dtype,
                               backend=backend)

        if self.expand_ratio != 1:
            self.expand_conv = make_conv(self.in_channels, mid, 1, 1, 1)
            self.bn0 = bn(mid)
        else:
            self.expand_conv = self.bn0 = None
        self.depthwise_conv = make_conv(mid, mid, self.kernel_size, self.stride, mid)
        self.bn1 = bn(mid)
        self.project_conv = make_conv(mid, self.out_channels, 1, 1, 1)
        self.bn2 = bn(self.out_channels)
        self.act = SiLU() if self.activation == "silu" else ReLU()

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    def _conv_kwargs(self, x: Tensor) -> dict[str, Any]:
        """Extra keyword arguments every convolution of the block receives for input x."""
        return {}

    def forward(self, x: Tensor) -> Tensor:
        kwargs = self._conv_kwargs(x)
        h = x
        if self.expand_conv is not None:
            h = self.act(self.bn0(self.expand_conv(h, **kwargs)))
        h = self.act(self.bn1(self.depthwise_conv(h, **kwargs)))
        y = self.bn2(self.project_conv(h, **kwargs))
        return y + x if self.has_residual else y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, expand_ratio={self.expand_ratio}, "
                f"activation={self.activation!r}")


class MBConvBlock(_InvertedResidual):
    """The static inverted-residual block: the CondConv block's twin with Conv2d layers of
    the same shapes (one kernel each instead of E experts, and no router)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, expand_ratio: int = 4, activation: str = "silu",
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5, dtype: Any = None,
                 backend: Any = None) -> None:
        def make_conv(cin: int, cout: int, k: int, stride: int, groups: int) -> Module:
            return Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups,
                          bias=False, dtype=dtype, backend=backend)

        super().__init__("MBConvBlock", make_conv, in_channels, out_channels, kernel_size,
                         stride, expand_ratio, activation, bn_momentum, bn_eps, dtype, backend)


class CondConvBlock(_InvertedResidual):
    """The inverted-residual block with CondConv2d layers sharing one router.

    Parameters: ``routing.fc.weight`` [E, Cin] and ``routing.fc.bias`` [E] (the only router),
    each convolution's experts ``weight`` [E, Cout, Cin/g, k, k], and the batch norms.
    After each forward, ``last_routing_weights`` holds the routing weights [B, E] it used
    (cut from the graph), for inspecting which experts each input chose.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, expand_ratio: int = 4, num_experts: int = 4,
                 dropout_rate: float = 0.2, routing: str = "sigmoid", temperature: float = 1.0,
                 activation: str = "silu", bn_momentum: float = 0.1, bn_eps: float = 1e-5,
                 dtype: Any = None, backend: Any = None) -> None:
        experts = check_int("CondConvBlock", "num_experts", num_experts, 1)

        def make_conv(cin: int, cout: int, k: int, stride: int, groups: int) -> Module:
            layer = CondConv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups,
                               bias=False, num_experts=experts, dropout_rate=0.0,
                               dtype=dtype, backend=backend)
            layer.routing = None  # the block's router serves every layer: none per layer
            return layer

        super().__init__("CondConvBlock", make_conv, in_channels, out_channels, kernel_size,
                         stride, expand_ratio, activation, bn_momentum, bn_eps, dtype, backend)
        self.num_experts = experts
        self.routing = Router(self.in_channels, self.num_experts, dropout_rate, routing,
                              temperature, dtype, backend)
        self.last_routing_weights: Tensor | None = None

    def _conv_kwargs(self, x: Tensor) -> dict[str, Any]:
        r = self.routing(x)
        self.last_routing_weights = r.detach()
        return {"routing_weights": r}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_experts={self.num_experts}"
