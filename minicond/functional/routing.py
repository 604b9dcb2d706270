"""The routing path of CondConv: global average pool, dropout and a linear layer.

Layer (docs/architecture.md): ``functional``. Together with ``sigmoid``/``softmax`` (``basic.py``)
these compute ``r_b = sigmoid(R · dropout(mean_hw x_b) + ρ)`` (or ``softmax(z_b / τ)``).
"""

from __future__ import annotations

from .._validate import check_float, check_tensor
from ..autograd import Function
from ..random import next_seed
from ..tensor import Tensor


class GlobalAvgPool2d(Function):
    """p[b, c] = (1/(H·W)) Σ_{h,w} x[b, c, h, w];  ∂L/∂x[b, c, h, w] = g[b, c]/(H·W)."""

    @staticmethod
    def forward(ctx, x):
        be = ctx.backend
        ctx.in_shape = x.shape
        hw = be.full((), x.shape[2] * x.shape[3], x.dtype)
        return be.div(be.sum(x, (2, 3), False), hw)

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        B, C, H, W = ctx.in_shape
        g = be.div(be.reshape(g, (B, C, 1, 1)), be.full((), H * W, g.dtype))
        return (be.broadcast_to(g, ctx.in_shape),)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """Mean over the spatial axes: [B, C, H, W] -> [B, C]."""
    x = check_tensor("global_avg_pool2d", "x", x, ndim=4)
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"global_avg_pool2d: x has an empty spatial size {x.shape}")
    return GlobalAvgPool2d.apply(x)


class Linear(Function):
    """y = x·Wᵀ + b over the last axis, x [..., in], W [out, in], b [out].

    With x and g flattened to [N, in] and [N, out]:
    ∂L/∂x = g·W,   ∂L/∂W = gᵀ·x,   ∂L/∂b = Σ_N g.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        be = ctx.backend
        ctx.save_for_backward(x, weight)
        y = be.matmul(be.reshape(x, (-1, x.shape[-1])), be.permute(weight, (1, 0)))
        if bias is not None:
            y = be.add(y, bias)
        return be.reshape(y, x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved
        be = ctx.backend
        g2 = be.reshape(g, (-1, weight.shape[0]))
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = be.reshape(be.matmul(g2, weight), x.shape)
        if ctx.needs_input_grad[1]:
            gw = be.matmul(be.permute(g2, (1, 0)), be.reshape(x, (-1, x.shape[-1])))
        if ctx.needs_input_grad[2]:
            gb = be.sum(g2, (0,), False)
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``torch.nn.functional.linear``: x [..., in], weight [out, in], bias [out] or None."""
    x = check_tensor("linear", "x", x)
    weight = check_tensor("linear", "weight", weight, ndim=2)
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x has shape {x.shape}; its last axis must equal "
                         f"in_features={weight.shape[1]} of weight {weight.shape}")
    if bias is not None:
        bias = check_tensor("linear", "bias", bias, ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"linear: bias has shape {bias.shape}; expected "
                             f"({weight.shape[0]},)")
    return Linear.apply(x, weight, bias)


class Dropout(Function):
    """y = x·m with m = 0 (probability p) or 1/(1 − p);  ∂L/∂x = g·m (the same mask)."""

    @staticmethod
    def forward(ctx, x, p, seed):
        be = ctx.backend
        mask = be.dropout_mask(x.shape, p, x.dtype, seed)
        ctx.save_for_backward(mask)
        return be.mul(x, mask)

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.mul(g, ctx.saved[0]),)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout; the identity when ``training`` is False or ``p`` is 0."""
    x = check_tensor("dropout", "x", x)
    p = check_float("dropout", "p", p, 0.0, 1.0)
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p, next_seed())
