"""Counting multiply-adds (MACs) per image, the cost measure of the CondConv paper.

Layer (docs/architecture.md): beside ``train.py``, above ``nn``. :func:`count_macs` runs one image
through the model in eval mode, watching every layer through forward hooks (removed again
afterwards), and, for every layer called, counts from the shapes it actually saw:

    Conv2d       Cout·Ho·Wo · (Cin/g)·kh·kw
    CondConv2d   the same single convolution, plus mixing the experts into one kernel,
                 E·Cout·(Cin/g)·kh·kw (and E·Cout for a mixed bias); its routing is counted
                 by the Router when that runs (once per block when a block shares it)
    Router       global average pool Cin·H·W, plus the routing layer Cin·E
    Linear       in·out per row
    SqueezeExcite  its global average pool C·H·W (the 1×1 convs count as Conv2d layers)
    CondConvInvertedResidual, CondConvBlock
                 the routing pool Cin·H·W (routing_fn counts as a Linear, the convs as
                 CondConv2d layers)
    BatchNorm2d  one multiply-add per element (x·scale + shift, as folded for inference)
    pooling      one operation per window element read: C·Ho·Wo·kh·kw; global pooling C·H·W

As in the paper (and in MAC tables of MobileNet/EfficientNet), biases, activations and
elementwise additions are not counted. This makes the paper's claim concrete: a CondConv layer
with E experts costs one convolution plus ``E`` kernel-sized multiply-adds and a tiny router,
while holding E times the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import nn
from .autograd import no_grad
from .tensor import Tensor, tensor


@dataclass
class LayerMacs:
    """The MACs of one call of one layer."""

    name: str
    kind: str
    macs: int
    output_shape: tuple[int, ...]


@dataclass
class MacReport:
    """MACs per image of a whole model, with the per-layer breakdown."""

    layers: list[LayerMacs] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.kind] = out.get(layer.kind, 0) + layer.macs
        return out

    def table(self) -> str:
        """The breakdown as aligned text, one layer per line, then the total."""
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{layer.name:<{width}}  {layer.kind:<16} {layer.macs:>12,d}"
                 for layer in self.layers]
        lines.append(f"{'total':<{width}}  {'':<16} {self.total:>12,d}")
        return "\n".join(lines)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _conv_macs(module: Any, y_shape: tuple[int, ...]) -> int:
    o = module.options
    kh, kw = o.kernel_size
    _, cout, ho, wo = y_shape
    return cout * ho * wo * (o.in_channels // o.groups) * kh * kw


def _rule_conv2d(module: Any, x: Tensor, y: Tensor) -> int:
    return _conv_macs(module, y.shape)


def _rule_cond_conv2d(module: Any, x: Tensor, y: Tensor) -> int:
    o = module.options
    kernel = o.out_channels * (o.in_channels // o.groups) * o.kernel_size[0] * o.kernel_size[1]
    mixing = module.num_experts * kernel
    if module.bias is not None and module.expert_bias:
        mixing += module.num_experts * o.out_channels
    return _conv_macs(module, y.shape) + mixing


def _rule_router(module: Any, x: Tensor, y: Tensor) -> int:
    _, cin, h, w = x.shape
    return cin * h * w + module.fc.in_features * module.fc.out_features


def _rule_linear(module: Any, x: Tensor, y: Tensor) -> int:
    rows = math.prod(x.shape[1:-1])
    return rows * module.in_features * module.out_features


def _rule_elementwise(module: Any, x: Tensor, y: Tensor) -> int:
    return math.prod(y.shape[1:])


def _rule_input_pool(module: Any, x: Tensor, y: Tensor) -> int:
    return math.prod(x.shape[1:])


def _rule_window_pool(module: Any, x: Tensor, y: Tensor) -> int:
    kh, kw = _pair(module.kernel_size)
    return math.prod(y.shape[1:]) * kh * kw


def _rule_global_pool(module: Any, x: Tensor, y: Tensor) -> int:
    return math.prod(x.shape[1:])


Rule = Callable[[Any, Tensor, Tensor], int]


def _rules() -> dict[type, tuple[str, Rule]]:
    """Layer classes and their counting rules; layers this build lacks are left out."""
    named = {
        "Conv2d": _rule_conv2d, "CondConv2d": _rule_cond_conv2d, "Router": _rule_router,
        "Linear": _rule_linear, "BatchNorm2d": _rule_elementwise,
        "MaxPool2d": _rule_window_pool, "AvgPool2d": _rule_window_pool,
        "AdaptiveAvgPool2d": _rule_global_pool, "SqueezeExcite": _rule_input_pool,
        "CondConvInvertedResidual": _rule_input_pool, "CondConvBlock": _rule_input_pool,
    }
    return {getattr(nn, name): (name, rule) for name, rule in named.items()
            if isinstance(getattr(nn, name, None), type)}


# Layers whose own rule covers everything they call inside; a CondConv2d is not one of them,
# because the Router it calls (when not handed routing weights) is counted on its own.
_OPAQUE = ("Conv2d", "Router", "Linear", "BatchNorm2d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d")


def count_macs(model: nn.Module, input_shape: tuple[int, ...], backend: Any = None,
               dtype: Any = None) -> MacReport:
    """Multiply-adds for one image of shape ``input_shape`` ``(C, H, W)`` through ``model``.

    The model runs once in eval mode without recording gradients; its train/eval mode is
    restored afterwards. A layer that holds parameters but has no counting rule is an error,
    so a total never silently leaves a layer out.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_macs: model must be a minicond Module, got "
                        f"{type(model).__name__}")
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or not all(isinstance(n, (int, np.integer)) and n > 0 for n in input_shape)):
        raise ValueError(f"count_macs: input_shape={input_shape!r} must be (C, H, W) of "
                         "positive ints")
    rules = _rules()
    report = MacReport()
    depth = [0]  # > 0 while inside an opaque layer
    names = {id(m): name for name, m in model.named_modules()}
    handles: list[Any] = []

    def watch(module: Any, kind: str, rule: Rule) -> None:
        opaque = kind in _OPAQUE
        outer = [False]  # whether the call in progress started outside every opaque layer

        def before(module: Any, args: tuple[Any, ...]) -> None:
            outer[0] = depth[0] == 0
            if opaque:
                depth[0] += 1

        def after(module: Any, args: tuple[Any, ...], y: Any) -> None:
            if opaque:
                depth[0] -= 1
            if outer[0]:
                report.layers.append(LayerMacs(names.get(id(module), "") or kind, kind,
                                               int(rule(module, args[0], y)), y.shape))

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))

    unique = {id(m): m for m in model.modules()}.values()  # a shared layer is watched once
    for module in unique:
        entry = next(((k, r) for cls, (k, r) in rules.items() if type(module) is cls), None)
        if entry is not None:
            watch(module, *entry)
        elif module._parameters and any(p is not None for p in module._parameters.values()):
            for handle in handles:
                handle.remove()
            raise ValueError(f"count_macs: no MAC rule for {type(module).__name__} (it holds "
                             "parameters); add one to minicond.profile")
    was_training = [(m, m.training) for m in unique]
    model.eval()
    try:
        params = list(model.parameters())
        if backend is None and params:
            backend = params[0].backend
        if dtype is None and params:
            dtype = params[0].dtype
        x = tensor(np.zeros((1, *input_shape)), dtype=dtype, backend=backend)
        with no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in was_training:
            object.__setattr__(m, "training", mode)
    return report
