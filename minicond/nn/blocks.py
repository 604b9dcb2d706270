"""EfficientNet's blocks: the depthwise-separable first stage, the inverted residual (MBConv)
and its CondConv version, with timm's module names so that weights map one to one.

Layer (docs/architecture.md): ``nn``. For x [B, Cin, H, W] and M expanded channels (M =
Cin·expand_ratio, rounded as ``make_divisible`` says), the inverted residual computes

    h = act(bn1(conv_pw(x)))              [B, M, H, W]      1×1 expansion
    h = act(bn2(conv_dw(h)))              [B, M, Ho, Wo]    k×k depthwise, stride s (G = M)
    h = se(h)                             [B, M, Ho, Wo]    squeeze-and-excitation (optional)
    y = bn3(conv_pwl(h))                  [B, Cout, Ho, Wo] 1×1 linear projection (no act)
    y = x + drop_path(y)                  when s = 1 and Cin = Cout

The depthwise-separable block (EfficientNet's first stage, expansion 1) is the same without
the expansion: ``conv_dw, bn1, act, se, conv_pw, bn2``.

In the CondConv inverted residual the three convolutions are CondConv2d layers with E experts
each, and the routing weights are computed once from the block input and shared by all three:

    r = sigmoid(routing_fn(mean_hw(x)))   [B, E]      routing_fn a plain Linear(Cin, E)

(or softmax(z/τ), the Dynamic Convolution variant). Sharing is what the paper's EfficientNet
models do: one router per block, not one per layer. The convolutions have no bias: each is
followed by a batch norm. ``MBConvBlock`` and ``CondConvBlock`` are the two inverted residuals
configured as the toy networks use them (no squeeze-and-excitation, exact channel counts).
"""

from __future__ import annotations

import numbers
from typing import Any

from .. import functional as F
from .._validate import check_choice, check_float, check_int
from ..tensor import Tensor
from .activation import ReLU, SiLU
from .batchnorm import BatchNorm2d
from .condconv import ROUTINGS, CondConv2d
from .drop_path import DropPath
from .layers import Conv2d, Dropout, Linear
from .module import Module
from .squeeze_excite import SqueezeExcite

ACTIVATIONS = ("silu", "relu")
PADDINGS = ("symmetric", "tf_same")


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), one
    step up if rounding lost more than 10% — EfficientNet's channel rounding."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


def conv_padding(padding: str, kernel_size: int, stride: int) -> Any:
    """The conv ``padding`` argument of a k×k, stride-s layer: PyTorch-style k//2 on both sides
    (``"symmetric"``), or TensorFlow's SAME (``"tf_same"``), which for s > 1 depends on the
    input size and puts the odd pixel at the bottom/right. For s = 1 and odd k both are k//2,
    so only strided layers pay for run-time padding (as in timm)."""
    if padding == "tf_same" and stride > 1:
        return "tf_same"
    return kernel_size // 2


def _activation(name: str) -> Module:
    return SiLU() if name == "silu" else ReLU()


class _BlockOptions:
    """Arguments shared by the blocks, checked once."""

    def __init__(self, owner: str, in_channels: Any, out_channels: Any, kernel_size: Any,
                 stride: Any, activation: Any, padding: Any, drop_path_rate: Any,
                 se_channels: Any) -> None:
        self.in_channels = check_int(owner, "in_channels", in_channels, 1)
        self.out_channels = check_int(owner, "out_channels", out_channels, 1)
        self.kernel_size = check_int(owner, "kernel_size", kernel_size, 1)
        self.padding = check_choice(owner, "padding", padding, PADDINGS)
        if self.padding == "symmetric" and self.kernel_size % 2 == 0:
            raise ValueError(f"{owner}: kernel_size={kernel_size} must be odd so that padding "
                             "k//2 keeps the spatial size")
        self.stride = check_int(owner, "stride", stride, 1)
        self.activation = check_choice(owner, "activation", activation, ACTIVATIONS)
        self.drop_path_rate = check_float(owner, "drop_path_rate", drop_path_rate, 0.0, 1.0,
                                          high_open=True)
        self.se_channels = check_int(owner, "se_channels", se_channels, 0)

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


class DepthwiseSeparable(Module):
    """EfficientNet's first stage: depthwise k×k conv, BN, act, SE, 1×1 conv, BN (+ skip).

    Parameters (timm's names): ``conv_dw.weight`` [Cin, 1, k, k], ``bn1.*``, ``se.*`` (when
    ``se_channels`` > 0), ``conv_pw.weight`` [Cout, Cin, 1, 1], ``bn2.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, se_channels: int = 0, activation: str = "silu",
                 padding: str = "symmetric", bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 drop_path_rate: float = 0.0, dtype: Any = None, backend: Any = None) -> None:
        super().__init__()
        o = _BlockOptions("DepthwiseSeparable", in_channels, out_channels, kernel_size,
                          stride, activation, padding, drop_path_rate, se_channels)
        self.options = o
        opts = {"dtype": dtype, "backend": backend}
        cin, cout, k = o.in_channels, o.out_channels, o.kernel_size
        self.conv_dw = Conv2d(cin, cin, k, stride=o.stride, groups=cin, bias=False,
                              padding=conv_padding(o.padding, k, o.stride), **opts)
        self.bn1 = BatchNorm2d(cin, eps=bn_eps, momentum=bn_momentum, **opts)
        self.act = _activation(o.activation)
        self.se = (SqueezeExcite(cin, o.se_channels, o.activation, **opts)
                   if o.se_channels else None)
        self.conv_pw = Conv2d(cin, cout, 1, bias=False, **opts)
        self.bn2 = BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum, **opts)
        self.drop_path = DropPath(o.drop_path_rate) if o.has_skip else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.bn1(self.conv_dw(x)))
        if self.se is not None:
            h = self.se(h)
        y = self.bn2(self.conv_pw(h))
        return x + self.drop_path(y) if self.drop_path is not None else y

    def extra_repr(self) -> str:
        o = self.options
        return (f"{o.in_channels}, {o.out_channels}, kernel_size={o.kernel_size}, "
                f"stride={o.stride}, se_channels={o.se_channels}")


class InvertedResidual(Module):
    """The inverted residual (MBConv) block of MobileNetV2/EfficientNet (module docstring).

    Parameters (timm's names): ``conv_pw.weight`` [M, Cin, 1, 1], ``bn1.*``,
    ``conv_dw.weight`` [M, 1, k, k], ``bn2.*``, ``se.*`` (when ``se_channels`` > 0),
    ``conv_pwl.weight`` [Cout, M, 1, 1], ``bn3.*``. M = make_divisible(Cin·expand_ratio,
    ``channel_divisor``); with the default divisor 1, M = round(Cin·expand_ratio).
    """

    owner = "InvertedResidual"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, expand_ratio: float = 6.0, se_channels: int = 0,
                 activation: str = "silu", padding: str = "symmetric", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, drop_path_rate: float = 0.0, channel_divisor: int = 1,
                 dtype: Any = None, backend: Any = None, *, _num_experts: int = 0) -> None:
        # ``_num_experts`` > 0 (set only by CondConvInvertedResidual, which also routes) makes
        # the three convolutions CondConv2d layers.
        super().__init__()
        num_experts = _num_experts
        owner = self.owner
        o = _BlockOptions(owner, in_channels, out_channels, kernel_size, stride, activation,
                          padding, drop_path_rate, se_channels)
        self.options = o
        if (isinstance(expand_ratio, bool) or not isinstance(expand_ratio, numbers.Real)
                or not expand_ratio > 0):
            raise ValueError(f"{owner}: expand_ratio={expand_ratio!r} must be a positive number")
        self.expand_ratio = expand_ratio
        divisor = check_int(owner, "channel_divisor", channel_divisor, 1)
        mid = make_divisible(o.in_channels * expand_ratio, divisor)
        self.mid_channels = mid
        self.num_experts = num_experts
        opts = {"dtype": dtype, "backend": backend}

        def conv(cin: int, cout: int, k: int, stride: int, groups: int) -> Module:
            padding = conv_padding(o.padding, k, stride)
            if not num_experts:
                return Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups,
                              bias=False, **opts)
            layer = CondConv2d(cin, cout, k, stride=stride, padding=padding, groups=groups,
                               bias=False, num_experts=num_experts, dropout_rate=0.0, **opts)
            layer.routing = None  # the block's routing_fn serves all three layers
            return layer

        def bn(channels: int) -> BatchNorm2d:
            return BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum, **opts)

        self.conv_pw = conv(o.in_channels, mid, 1, 1, 1)
        self.bn1 = bn(mid)
        self.conv_dw = conv(mid, mid, o.kernel_size, o.stride, mid)
        self.bn2 = bn(mid)
        self.act = _activation(o.activation)
        self.se = SqueezeExcite(mid, o.se_channels, o.activation, **opts) if o.se_channels else None
        self.conv_pwl = conv(mid, o.out_channels, 1, 1, 1)
        self.bn3 = bn(o.out_channels)
        self.drop_path = DropPath(o.drop_path_rate) if o.has_skip else None

    @property
    def in_channels(self) -> int:
        return self.options.in_channels

    @property
    def out_channels(self) -> int:
        return self.options.out_channels

    @property
    def kernel_size(self) -> int:
        return self.options.kernel_size

    @property
    def stride(self) -> int:
        return self.options.stride

    @property
    def has_skip(self) -> bool:
        return self.options.has_skip

    def _conv_kwargs(self, x: Tensor) -> dict[str, Any]:
        """Extra keyword arguments every convolution of the block receives for input x."""
        return {}

    def forward(self, x: Tensor) -> Tensor:
        kwargs = self._conv_kwargs(x)
        h = self.act(self.bn1(self.conv_pw(x, **kwargs)))
        h = self.act(self.bn2(self.conv_dw(h, **kwargs)))
        if self.se is not None:
            h = self.se(h)
        y = self.bn3(self.conv_pwl(h, **kwargs))
        return x + self.drop_path(y) if self.drop_path is not None else y

    def extra_repr(self) -> str:
        o = self.options
        s = (f"{o.in_channels}, {o.out_channels}, kernel_size={o.kernel_size}, "
             f"stride={o.stride}, expand_ratio={self.expand_ratio}, "
             f"activation={o.activation!r}")
        if o.se_channels:
            s += f", se_channels={o.se_channels}"
        if o.padding != "symmetric":
            s += f", padding={o.padding!r}"
        return s


class CondConvInvertedResidual(InvertedResidual):
    """The inverted residual with CondConv2d layers and one router for the block.

    Parameters: those of ``InvertedResidual`` with each convolution weight carrying E
    experts ([E, M, Cin, 1, 1], [E, M, 1, k, k], [E, Cout, M, 1, 1]), plus the router
    ``routing_fn.weight`` [E, Cin] and ``routing_fn.bias`` [E]. The routing weights are

        r = sigmoid(routing_fn(dropout(mean_hw x)))        (``routing="sigmoid"``, the paper)
        r = softmax(routing_fn(dropout(mean_hw x)) / τ)    (``routing="softmax"``)

    with dropout only in training and only when ``routing_dropout`` > 0 (timm uses none).
    After each forward, ``last_routing_weights`` holds the [B, E] weights it used (cut from
    the graph), to inspect which experts an input chose.
    """

    owner = "CondConvInvertedResidual"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, expand_ratio: float = 6.0, num_experts: int = 4,
                 se_channels: int = 0, activation: str = "silu", padding: str = "symmetric",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, drop_path_rate: float = 0.0,
                 channel_divisor: int = 1, routing: str = "sigmoid", temperature: float = 1.0,
                 routing_dropout: float = 0.0, dtype: Any = None, backend: Any = None) -> None:
        owner = self.owner
        experts = check_int(owner, "num_experts", num_experts, 1)
        super().__init__(in_channels, out_channels, kernel_size, stride, expand_ratio,
                         se_channels, activation, padding, bn_eps, bn_momentum, drop_path_rate,
                         channel_divisor, dtype, backend, _num_experts=experts)
        self.routing = check_choice(owner, "routing", routing, ROUTINGS)
        self.temperature = check_float(owner, "temperature", temperature, 0.0, float("inf"),
                                       low_open=True, high_open=True)
        self.routing_dropout = Dropout(check_float(owner, "routing_dropout", routing_dropout,
                                                   0.0, 1.0, high_open=True))
        self.routing_fn = Linear(self.in_channels, experts, dtype=dtype, backend=backend)
        self.last_routing_weights: Tensor | None = None

    def routing_weights(self, x: Tensor) -> Tensor:
        """r [B, E] for the block input x [B, Cin, H, W]."""
        z = self.routing_fn(self.routing_dropout(F.global_avg_pool2d(x)))
        if self.routing == "sigmoid":
            return F.sigmoid(z)
        return F.softmax(z * (1.0 / self.temperature), dim=1)

    def _conv_kwargs(self, x: Tensor) -> dict[str, Any]:
        r = self.routing_weights(x)
        self.last_routing_weights = r.detach()
        return {"routing_weights": r}

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", num_experts={self.num_experts}"
        if self.routing == "softmax":
            s += f", routing='softmax', temperature={self.temperature}"
        return s


class MBConvBlock(InvertedResidual):
    """The static inverted residual as the toy networks use it: no squeeze-and-excitation,
    M = Cin·expand_ratio exactly."""

    owner = "MBConvBlock"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, expand_ratio: int = 4, activation: str = "silu",
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5, dtype: Any = None,
                 backend: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         check_int(self.owner, "expand_ratio", expand_ratio, 1),
                         activation=activation, bn_eps=bn_eps, bn_momentum=bn_momentum,
                         dtype=dtype, backend=backend)


class CondConvBlock(CondConvInvertedResidual):
    """The CondConv inverted residual as the toy networks use it: no squeeze-and-excitation,
    M = Cin·expand_ratio exactly, routing dropout ``dropout_rate`` (the seed's default 0.2)."""

    owner = "CondConvBlock"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, expand_ratio: int = 4, num_experts: int = 4,
                 dropout_rate: float = 0.2, routing: str = "sigmoid", temperature: float = 1.0,
                 activation: str = "silu", bn_momentum: float = 0.1, bn_eps: float = 1e-5,
                 dtype: Any = None, backend: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         check_int(self.owner, "expand_ratio", expand_ratio, 1), num_experts,
                         activation=activation, bn_eps=bn_eps, bn_momentum=bn_momentum,
                         routing=routing, temperature=temperature,
                         routing_dropout=dropout_rate, dtype=dtype, backend=backend)
