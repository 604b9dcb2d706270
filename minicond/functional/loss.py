"""Losses: cross-entropy from logits (with label smoothing) and mean squared error.

Layer: ``functional``. Derivations in the Function docstrings and in
``docs/math/training_ops.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_choice, check_float, check_tensor
from ..autograd import Function
from ..tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")


def _reduce(be, per_item, reduction: str):
    if reduction == "none":
        return per_item
    total = be.sum(per_item, tuple(range(per_item.ndim)), False)
    if reduction == "sum":
        return total
    return be.div(total, be.full((), int(np.prod(per_item.shape)), per_item.dtype))


def _reduced_grad(be, g, shape: tuple[int, ...], reduction: str):
    """∂L/∂(per-item loss) from the gradient of the reduced loss, broadcast to ``shape``."""
    if reduction == "none":
        return g
    if reduction == "mean":
        g = be.div(g, be.full((), int(np.prod(shape)), g.dtype))
    return be.broadcast_to(be.reshape(g, (1,) * len(shape)), shape)


class CrossEntropy(Function):
    """ℓ_n = −Σ_c q_nc · log softmax(z_n)_c  for logits z [N, C] and labels t [N].

    The smoothed target is q_n = (1 − ε)·onehot(t_n) + ε/C, so Σ_c q_nc = 1. With
    p_n = softmax(z_n) and ∂ log p_c/∂z_k = [c = k] − p_k,

        ∂ℓ_n/∂z_nk = −Σ_c q_nc ([c = k] − p_nk) = p_nk · Σ_c q_nc − q_nk = p_nk − q_nk.

    log softmax is computed as (z − max z) − log Σ exp(z − max z), so no exp overflows and
    the log never sees 0; backward reuses p = exp(log p). The reduction (mean over N, sum,
    or none) scales the incoming gradient by 1/N, 1 or g_n.
    """

    @staticmethod
    def forward(ctx, z, labels, label_smoothing, reduction):
        be = ctx.backend
        N, C = z.shape
        log_p = be.log_softmax(z, 1)
        column = be.from_numpy(labels.reshape(N, 1), z.dtype)
        classes = be.from_numpy(np.arange(C).reshape(1, C), z.dtype)
        q = be.eq(column, classes)                                     # one-hot [N, C]
        if label_smoothing > 0.0:
            q = be.add(be.mul(q, be.full((), 1.0 - label_smoothing, z.dtype)),
                       be.full((), label_smoothing / C, z.dtype))
        per_item = be.neg(be.sum(be.mul(q, log_p), (1,), False))     # [N]
        ctx.save_for_backward(log_p, q)
        ctx.reduction = reduction
        return _reduce(be, per_item, reduction)

    @staticmethod
    def backward(ctx, g):
        log_p, q = ctx.saved
        be = ctx.backend
        N = log_p.shape[0]
        g_item = _reduced_grad(be, g, (N,), ctx.reduction)
        return (be.mul(be.sub(be.exp(log_p), q), be.reshape(g_item, (N, 1))),)


class MSELoss(Function):
    """ℓ_i = (a_i − b_i)²;  ∂ℓ_i/∂a_i = 2(a_i − b_i) = −∂ℓ_i/∂b_i (then the reduction's
    1/n, 1 or g_i)."""

    @staticmethod
    def forward(ctx, a, b, reduction):
        be = ctx.backend
        diff = be.sub(a, b)
        ctx.save_for_backward(diff)
        ctx.reduction = reduction
        return _reduce(be, be.mul(diff, diff), reduction)

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved
        be = ctx.backend
        g_item = _reduced_grad(be, g, diff.shape, ctx.reduction)
        ga = be.mul(be.mul(diff, be.full((), 2.0, diff.dtype)), g_item)
        gb = be.neg(ga) if ctx.needs_input_grad[1] else None
        return ga, gb


def _labels(fn: str, target: Any, N: int, C: int) -> np.ndarray:
    """Integer class labels (a NumPy int array or a list of ints) checked against [N, C]."""
    if isinstance(target, Tensor):
        raise TypeError(f"{fn}: target must be integer class labels as a NumPy int array or "
                        "a list, not a Tensor (tensors hold floats)")
    labels = np.asarray(target)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise TypeError(f"{fn}: target must be a 1-D array or list of integer class labels; "
                        f"got dtype {labels.dtype} and shape {labels.shape}")
    if labels.shape[0] != N:
        raise ValueError(f"{fn}: target has {labels.shape[0]} labels; the input has N={N} rows")
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"{fn}: target labels must be in [0, {C}); got values from "
                         f"{labels.min()} to {labels.max()}")
    return labels.astype(np.int64)


def cross_entropy(input: Tensor, target: Any, label_smoothing: float = 0.0,  # noqa: A002
                  reduction: str = "mean") -> Tensor:
    """``torch.nn.functional.cross_entropy`` for logits [N, C] and integer labels [N]."""
    fn = "cross_entropy"
    z = check_tensor(fn, "input", input, ndim=2)
    N, C = z.shape
    if N == 0 or C == 0:
        raise ValueError(f"{fn}: input has shape {z.shape}; expected at least one row and "
                         "one class")
    labels = _labels(fn, target, N, C)
    eps = check_float(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    reduction = check_choice(fn, "reduction", reduction, REDUCTIONS)
    return CrossEntropy.apply(z, labels, eps, reduction)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """``torch.nn.functional.mse_loss``; ``target`` (a Tensor, array or number) must have the
    input's shape."""
    fn = "mse_loss"
    a = check_tensor(fn, "input", input)
    b = target if isinstance(target, Tensor) else a._lift(np.asarray(target, dtype=a.dtype))
    if b.shape != a.shape:
        raise ValueError(f"{fn}: target has shape {b.shape}; expected the input's shape "
                         f"{a.shape}")
    if a.numel() == 0:
        raise ValueError(f"{fn}: input is empty (shape {a.shape})")
    reduction = check_choice(fn, "reduction", reduction, REDUCTIONS)
    return MSELoss.apply(a, b, reduction)
