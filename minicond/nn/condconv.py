"""The CondConv layer and its router.

Layer (docs/architecture.md): ``nn``. ``Router`` computes r_b = sigmoid(R · dropout(pool(x_b)) + ρ),
or softmax((R · dropout(pool(x_b)) + ρ)/τ); ``CondConv2d`` mixes its experts with r and convolves
once (``functional.cond_conv2d``).
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from .._validate import check_choice, check_float, check_int, check_layer_input
from ..tensor import Tensor
from .init import default_bound, uniform
from .layers import ConvOptions, Dropout, Linear
from .module import Module, Parameter

ROUTINGS = ("sigmoid", "softmax")


class Router(Module):
    """Routing weights [B, E] from an input [B, Cin, H, W].

    ``routing="sigmoid"`` (the paper's) gives independent weights in (0, 1);
    ``routing="softmax"`` gives weights that sum to 1, sharpened as τ → 0.
    """

    def __init__(self, in_channels: int, num_experts: int, dropout_rate: float = 0.2,
                 routing: str = "sigmoid", temperature: float = 1.0, dtype: Any = None,
                 backend: Any = None) -> None:
        super().__init__()
        self.routing = check_choice("Router", "routing", routing, ROUTINGS)
        self.temperature = check_float("Router", "temperature", temperature, 0.0,
                                       float("inf"), low_open=True, high_open=True)
        self.dropout = Dropout(check_float("Router", "dropout_rate", dropout_rate, 0.0, 1.0,
                                           high_open=True))
        self.fc = Linear(check_int("Router", "in_channels", in_channels, 1),
                         check_int("Router", "num_experts", num_experts, 1),
                         dtype=dtype, backend=backend)

    def logits(self, x: Tensor) -> Tensor:
        """z_b = R · dropout(mean_hw x_b) + ρ."""
        return self.fc(self.dropout(F.global_avg_pool2d(x)))

    def forward(self, x: Tensor) -> Tensor:
        check_layer_input("Router", x, 4, 1, "in_channels", self.fc.in_features,
                          self.fc.weight)
        z = self.logits(x)
        if self.routing == "sigmoid":
            return F.sigmoid(z)
        return F.softmax(z * (1.0 / self.temperature), dim=1)

    def extra_repr(self) -> str:
        extra = f", temperature={self.temperature}" if self.routing == "softmax" else ""
        return f"routing={self.routing!r}{extra}"


class CondConv2d(Module):
    """Conditionally parameterised 2-D convolution (Yang et al., 2019).

    Parameters: ``weight`` [E, Cout, Cin/G, kh, kw]; ``bias`` [Cout] (or [E, Cout] with
    ``expert_bias=True``, mixed per example like the kernels); ``routing.fc.weight`` [E, Cin]
    and ``routing.fc.bias`` [E]. ``forward(x, routing_weights=None)`` computes the routing
    from x unless given, so a block can route once and share the weights between layers.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", num_experts: int = 3, dropout_rate: float = 0.2,
                 routing: str = "sigmoid", temperature: float = 1.0, expert_bias: bool = False,
                 dtype: Any = None, backend: Any = None) -> None:
        super().__init__()
        self.options = ConvOptions("CondConv2d", in_channels, out_channels, kernel_size,
                                   stride, padding, dilation, groups, padding_mode)
        self.num_experts = check_int("CondConv2d", "num_experts", num_experts, 1)
        self.expert_bias = bool(expert_bias)
        self.routing = Router(in_channels, num_experts, dropout_rate, routing, temperature,
                              dtype, backend)
        bound = default_bound(self.options.fan_in)  # each expert is an ordinary conv weight
        self.weight = Parameter(uniform((num_experts, *self.options.kernel_shape), bound,
                                        dtype, backend))
        bias_shape = (num_experts, out_channels) if expert_bias else (out_channels,)
        self.register_parameter(
            "bias", Parameter(uniform(bias_shape, bound, dtype, backend)) if bias else None)

    def forward(self, x: Tensor, routing_weights: Tensor | None = None) -> Tensor:
        o = self.options
        check_layer_input("CondConv2d", x, 4, 1, "in_channels", o.in_channels, self.weight)
        if routing_weights is None:
            routing_weights = self.routing(x)
        x, padding = o.explicit_pad(x)
        return F.cond_conv2d(x, routing_weights, self.weight, self.bias, o.stride, padding,
                             o.dilation, o.groups)

    def extra_repr(self) -> str:
        s = self.options.describe() + f", num_experts={self.num_experts}"
        if self.bias is None:
            s += ", bias=False"
        elif self.expert_bias:
            s += ", expert_bias=True"
        return s
