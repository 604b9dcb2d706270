"""Activations beyond ``basic.py``'s ReLU and sigmoid: SiLU (swish).

Layer: ``functional``. Notation: ``g`` is ∂L/∂y. See ``docs/math/training_ops.md``.
"""

from __future__ import annotations

from .._validate import check_tensor
from ..autograd import Function
from ..tensor import Tensor


class SiLU(Function):
    """y = a·σ(a)  (swish, the EfficientNet activation).

    With s = σ(a) and σ' = s(1 − s), the product rule gives

        ∂y/∂a = s + a·s(1 − s) = s·(1 + a·(1 − s)),   so   ∂L/∂a = g·s·(1 + a(1 − s)).

    Forward keeps s (computed with the stable sigmoid kernel) so backward needs no exp.
    """

    @staticmethod
    def forward(ctx, a):
        be = ctx.backend
        s = be.sigmoid(a)
        ctx.save_for_backward(a, s)
        return be.mul(a, s)

    @staticmethod
    def backward(ctx, g):
        a, s = ctx.saved
        be = ctx.backend
        one = be.full((), 1.0, a.dtype)
        slope = be.mul(s, be.add(one, be.mul(a, be.sub(one, s))))
        return (be.mul(g, slope),)


def silu(x: Tensor) -> Tensor:
    """``torch.nn.functional.silu``: x·σ(x), elementwise."""
    return SiLU.apply(check_tensor("silu", "x", x))
