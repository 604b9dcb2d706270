"""Stochastic depth ("drop path", Huang et al., 2016) for residual branches.

Layer (docs/architecture.md): ``nn``. In training, each example's branch output f(x)_b is kept with
probability q = 1 − p and scaled by 1/q, or dropped entirely:

    y_b = f(x)_b · m_b / q,   m_b ~ Bernoulli(q)      so E[y_b] = f(x)_b

and the block returns x + y. In eval mode (or p = 0) it is the identity. The backward is the
same per-example mask: ∂L/∂f_b = g_b · m_b / q (the product with a constant [B, 1, 1, 1]
mask, which ``Mul`` and the central un-broadcasting already handle).
"""

from __future__ import annotations

from .._validate import check_float, check_tensor
from ..random import next_seed
from ..tensor import Tensor
from .module import Module


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero whole examples of ``x`` with probability ``p`` and scale the rest by 1/(1 − p)."""
    x = check_tensor("drop_path", "x", x)
    p = check_float("drop_path", "p", p, 0.0, 1.0, high_open=True)
    if not training or p == 0.0:
        return x
    be = x.backend
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = Tensor._wrap(be.dropout_mask(mask_shape, p, x.dtype, next_seed()), be)
    return x * mask


class DropPath(Module):
    """Per-example stochastic depth on a residual branch (identity in eval mode)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = check_float("DropPath", "p", p, 0.0, 1.0, high_open=True)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
