"""Elementwise maximum and minimum of two tensors (broadcasting), with PyTorch's gradient;
``one_hot`` encoding of int64 class indices (not differentiable).

Layer (docs/architecture.md): ``functional``. Notation: ``g`` is ∂L/∂y. Broadcasting is undone
centrally (``autograd.unbroadcast``). Derivations also in ``docs/math/activations.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_int, check_tensor
from ..autograd import Function
from ..tensor import Tensor


def _split(be, g, a, b, larger: bool):
    """Gradients of the selected input: g where it wins, g/2 on a tie, 0 where it loses.

    Written as g·(1 − [loses] − ½[tie]) so that where a comparison involves NaN (no win,
    no loss, no tie) the whole g passes, as in PyTorch.
    """
    one, half = be.full((), 1.0, g.dtype), be.full((), 0.5, g.dtype)
    tie = be.mul(half, be.eq(a, b))
    a_loses = be.gt(b, a) if larger else be.gt(a, b)
    b_loses = be.gt(a, b) if larger else be.gt(b, a)
    return (be.mul(g, be.sub(be.sub(one, a_loses), tie)),
            be.mul(g, be.sub(be.sub(one, b_loses), tie)))


class Maximum(Function):
    """y = max(a, b) elementwise (NaN if either is NaN).

    Away from ties y is a or b, so the gradient goes whole to the larger input:
    ∂L/∂a = g·[a > b], ∂L/∂b = g·[b > a]. On a tie (a = b) PyTorch splits it, g/2 to each,
    the average of the two one-sided derivatives.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return _split(ctx.backend, g, a, b, larger=True)


class Minimum(Function):
    """y = min(a, b) elementwise; ∂L/∂a = g·[a < b], ∂L/∂b = g·[b < a], g/2 each on a tie."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return _split(ctx.backend, g, a, b, larger=False)


def _other(fn: str, a: Tensor, other: Any) -> Tensor:
    """``other`` as a tensor on a's backend whose shape broadcasts with a's."""
    try:
        return a._lift(other)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{fn}: other: {err}") from None


def maximum(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    """``torch.maximum``: the elementwise larger of ``input`` and ``other`` (a Tensor, or a
    number or array taken as a constant), broadcasting."""
    a = check_tensor("maximum", "input", input)
    return Maximum.apply(a, _other("maximum", a, other))


def minimum(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    """``torch.minimum``: the elementwise smaller of ``input`` and ``other``, broadcasting."""
    a = check_tensor("minimum", "input", input)
    return Minimum.apply(a, _other("minimum", a, other))


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """``torch.nn.functional.one_hot``: int64 indices of any shape S -> int64 [*S, classes],
    1 at each index and 0 elsewhere. ``num_classes=-1`` takes the largest index + 1.

    Not differentiable (its input is integer). The indices are read on the host to check
    their range, so the encoding is built there and moved to the input's backend.
    """
    fn = "one_hot"
    t = check_tensor(fn, "tensor", tensor)
    if np.dtype(t.dtype) != np.int64:
        raise TypeError(f"{fn}: tensor must be an int64 tensor of class indices, got {t.dtype} "
                        "(convert with .long())")
    num_classes = check_int(fn, "num_classes", num_classes, -1)
    labels = t.numpy()
    if labels.size and labels.min() < 0:
        raise ValueError(f"{fn}: class indices must be >= 0; got {labels.min()}")
    if num_classes == -1:
        if labels.size == 0:
            raise ValueError(f"{fn}: num_classes=-1 cannot be inferred from an empty tensor; "
                             "pass num_classes")
        num_classes = int(labels.max()) + 1
    elif labels.size and labels.max() >= num_classes:
        raise ValueError(f"{fn}: class index {labels.max()} is out of range for "
                         f"num_classes={num_classes}")
    encoded = (labels[..., None] == np.arange(num_classes)).astype(np.int64)
    return Tensor(t.backend.from_numpy(encoded, np.int64), t.backend)
