"""Shape methods (unsqueeze, squeeze, view, T), pointwise clamp, abs and sqrt, and the
reductions min, var and std, each with its backward.

Layer (docs/architecture.md): ``functional``. Notation: ``g`` is ∂L/∂y for the op's output ``y``.
Derivations also in ``docs/math/indexing.md``. Shape methods are reshapes and permutations
(``Reshape`` and ``Permute`` in ``basic.py``): arrays are always contiguous here, so ``view`` is
``reshape``.
"""

from __future__ import annotations

import numbers
import warnings
from collections import namedtuple
from typing import Any

import numpy as np

from .._validate import check_tensor
from ..autograd import Function
from ..tensor import Tensor
from .basic import Permute, _axes, _dropped_shape, _kept_shape, reshape

# --- shape ---------------------------------------------------------------------------------------


def _dim(fn: str, dim: Any, ndim: int) -> int:
    """One axis of an ``ndim``-D tensor, negative counted from the end; a 0-D tensor takes
    dim 0 or −1, as in PyTorch."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{fn}: dim={dim!r} must be an int")
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise ValueError(f"{fn}: dim={dim} is out of range for a {ndim}-D input "
                         f"(expected {-n} <= dim < {n})")
    return int(dim) % n


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """``torch.unsqueeze``: a new axis of size 1 at ``dim`` (−ndim−1 ≤ dim ≤ ndim)."""
    x = check_tensor("unsqueeze", "x", x)
    axis = _dim("unsqueeze", dim, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    """``torch.squeeze``: drop the axes of size 1 (all of them, or those among ``dim``, an int
    or a tuple; a named axis that is not of size 1 stays, as in PyTorch)."""
    x = check_tensor("squeeze", "x", x)
    if dim is None:
        axes = tuple(range(x.ndim))
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = tuple(_dim("squeeze", d, x.ndim) for d in dims)
    if x.ndim == 0:
        return reshape(x, ())
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


def transpose_all(x: Tensor) -> Tensor:
    """``x.T``: the transpose of a 2-D tensor. For other ranks PyTorch reverses all axes
    (a 0-D or 1-D tensor is returned as is) and warns that this is deprecated; so does this."""
    x = check_tensor("T", "x", x)
    if x.ndim != 2:
        warnings.warn(f"x.T on a {x.ndim}-D tensor reverses all its axes, as PyTorch does "
                      "(deprecated there for tensors that are not 2-D); use x.permute(...) "
                      "to say which order you mean", UserWarning, stacklevel=3)
    return Permute.apply(x, tuple(range(x.ndim))[::-1])


# --- pointwise -----------------------------------------------------------------------------------

class Clamp(Function):
    """y = min(max(x, lo), hi) (a missing bound is ±∞; lo > hi gives hi everywhere).

    y = x strictly inside (lo, hi) and a constant outside, so ∂L/∂x = g·[lo < x < hi]. At a
    bound itself y has a kink; PyTorch (2.x) takes the subgradient 0 there, and so does this
    (no gradient at all when lo > hi). NaN stays NaN and gets no gradient.
    """

    @staticmethod
    def forward(ctx, a, low, high):
        be = ctx.backend
        ctx.save_for_backward(a)
        ctx.low, ctx.high = low, high
        y = a
        if low is not None:
            lo = be.full((), low, a.dtype)
            y = be.where(be.compare(y, lo, "lt"), lo, y)
        if high is not None:
            hi = be.full((), high, a.dtype)
            y = be.where(be.compare(y, hi, "gt"), hi, y)
        return y

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        be = ctx.backend
        zero = be.full((), 0, g.dtype)
        if ctx.low is not None:
            g = be.where(be.compare(a, be.full((), ctx.low, a.dtype), "gt"), g, zero)
        if ctx.high is not None:
            g = be.where(be.compare(a, be.full((), ctx.high, a.dtype), "lt"), g, zero)
        return (g,)


class Abs(Function):
    """y = |x|;  ∂L/∂x = g·sign(x), with the subgradient 0 at x = 0 (PyTorch's choice)."""

    @staticmethod
    def forward(ctx, a):
        be = ctx.backend
        ctx.save_for_backward(a)
        return be.where(be.compare(a, be.full((), 0, a.dtype), "lt"), be.neg(a), a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        be = ctx.backend
        zero = be.full((), 0, a.dtype)
        negative = be.where(be.compare(a, zero, "lt"), be.neg(g), zero)
        return (be.where(be.compare(a, zero, "gt"), g, negative),)


class Sqrt(Function):
    """y = √x;  ∂L/∂x = g/(2y) (infinite at x = 0, as in PyTorch)."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.backend.sqrt(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        be = ctx.backend
        return (be.div(g, be.mul(be.full((), 2, y.dtype), y)),)


class PowTensor(Function):
    """y = aᵇ elementwise, both tensors (broadcasting):

        ∂L/∂a = g·b·aᵇ⁻¹,    ∂L/∂b = g·aᵇ·ln a = g·y·ln a,

    with ∂L/∂a taken as 0 where b = 0 (aᵇ is constant 1 there), and ∂L/∂b as 0 where a = 0
    and b ≥ 0 (y is 0 or 1 there, and y·ln a is read as its limit 0), as PyTorch does; for
    a < 0, ln a and so ∂L/∂b are NaN, also as in PyTorch.
    """

    @staticmethod
    def forward(ctx, a, b):
        y = ctx.backend.power_tensor(a, b)
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved
        be = ctx.backend
        ga = gb = None
        zero, one = be.full((), 0, a.dtype), be.full((), 1, a.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.needs_input_grad[0]:
                # b = 0 contributes b·(…) = 0 (PyTorch's rule, also at a = 0): evaluate the
                # power there with exponent 0 instead of −1, so that no 0⁻¹ is formed
                b_safe = be.where(be.compare(b, zero, "eq"), one, b)
                ga = be.mul(g, be.mul(b, be.power_tensor(a, be.sub(b_safe, one))))
            if ctx.needs_input_grad[1]:
                false = be.full((), False, np.bool_)
                limit = be.where(be.compare(b, zero, "ge"), be.compare(a, zero, "eq"), false)
                log_a = be.log(be.where(limit, one, a))       # ln 0 is never formed
                gb = be.where(limit, zero, be.mul(g, be.mul(y, log_a)))
        return ga, gb


def pow(x: Tensor, exponent: Any) -> Tensor:  # noqa: A001
    """``torch.pow``: ``x ** exponent`` for a real number or a tensor ``exponent``
    (broadcasting); a number base with a tensor exponent is ``Tensor.__rpow__``."""
    x = check_tensor("pow", "x", x)
    if isinstance(exponent, Tensor):
        try:
            np.broadcast_shapes(x.shape, exponent.shape)
        except ValueError:
            raise ValueError(f"pow: x of shape {x.shape} and exponent of shape "
                             f"{exponent.shape} do not broadcast") from None
        return PowTensor.apply(x, exponent)
    if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: exponent={exponent!r} must be a real number or a Tensor")
    return x ** exponent


def _bound(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"clamp: {name}={value!r} must be a real number or None (for a "
                        "tensor bound use mc.functional.maximum/minimum)")
    return float(value)


def clamp(x: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """``torch.clamp`` with number bounds; at least one of ``min``/``max`` is required."""
    x = check_tensor("clamp", "x", x)
    low, high = _bound("min", min), _bound("max", max)
    if low is None and high is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp.apply(x, low, high)


def abs(x: Tensor) -> Tensor:  # noqa: A001
    return Abs.apply(check_tensor("abs", "x", x))


def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(check_tensor("sqrt", "x", x))


# --- reductions ----------------------------------------------------------------------------------

MinResult = namedtuple("MinResult", ["values", "indices"])


class Amin(Function):
    """y = min_axes x = −max_axes(−x);  ∂L/∂x = g·[x = y]/(number of minima): ties share the
    gradient equally (PyTorch's ``amin`` and full ``min()`` convention)."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        be = ctx.backend
        y = be.neg(be.max(be.neg(a), axes, True))
        ctx.save_for_backward(a, y)
        ctx.axes = axes
        return y if keepdim else be.reshape(y, _dropped_shape(a.shape, axes))

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved
        be = ctx.backend
        mask = be.eq(a, y)
        count = be.sum(mask, ctx.axes, True)
        return (be.mul(mask, be.div(be.reshape(g, y.shape), count)),)


class MinAlongDim(Function):
    """values = min of x along one axis; ``indices`` (int64, given) the first minimum's.

    values = x[..., i*, ...] with i* the selected index, so the whole gradient goes to that
    one element: ∂L/∂x = g at i* along the axis, 0 elsewhere (PyTorch's ``min(dim)``; with
    ties only the returned index gets it).
    """

    @staticmethod
    def forward(ctx, a, indices, axis, keepdim):
        be = ctx.backend
        ctx.indices, ctx.in_shape, ctx.axis = indices, a.shape, axis   # indices: kept shape
        values = be.neg(be.max(be.neg(a), (axis,), True))
        return values if keepdim else be.reshape(values, a.shape[:axis] + a.shape[axis + 1:])

    @staticmethod
    def backward(ctx, g):
        be, axis, shape = ctx.backend, ctx.axis, ctx.in_shape
        along = (1,) * axis + (shape[axis],) + (1,) * (len(shape) - axis - 1)
        positions = be.from_numpy(np.arange(shape[axis]).reshape(along), np.int64)
        selected = be.compare(positions, ctx.indices, "eq")       # one True per output
        g = be.reshape(g, ctx.indices.shape)
        return (be.where(selected, g, be.full((), 0, g.dtype)),)


def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor | MinResult:  # noqa: A001
    """``torch.min``: the smallest element (``dim`` None), or ``(values, indices)`` along
    ``dim``, indices int64, like PyTorch's ``min(dim, keepdim)``."""
    x = check_tensor("min", "x", x)
    be = x.backend
    if dim is None:
        if x.numel() == 0:
            raise ValueError(f"min: x of shape {x.shape} is empty")
        return Amin.apply(x, tuple(range(x.ndim)), False)
    axis = _dim("min", dim, x.ndim)
    if x.ndim == 0:
        return MinResult(reshape(x, ()), Tensor(be.full((), 0, np.int64), be))
    if x.shape[axis] == 0:
        raise ValueError(f"min: dim={dim} has size 0 in x of shape {x.shape}")
    kept = _kept_shape(x.shape, (axis,))
    indices = be.reshape(be.argmax(be.neg(x.data), axis), kept)
    values = MinAlongDim.apply(x, indices, axis, bool(keepdim))
    if not keepdim:
        indices = be.reshape(indices, x.shape[:axis] + x.shape[axis + 1:])
    return MinResult(values, Tensor(indices, be))


def _correction(fn: str, unbiased: Any, correction: Any) -> float:
    """PyTorch's rule: ``correction`` (default 1), or ``unbiased`` (True → 1, False → 0)."""
    if unbiased is not None and correction is not None:
        raise ValueError(f"{fn}: give unbiased or correction, not both")
    if unbiased is not None:
        if not isinstance(unbiased, (bool, np.bool_)):
            raise TypeError(f"{fn}: unbiased={unbiased!r} must be a bool")
        return 1.0 if unbiased else 0.0
    if correction is None:
        return 1.0
    if isinstance(correction, bool) or not isinstance(correction, numbers.Real) \
            or not correction >= 0:
        raise ValueError(f"{fn}: correction={correction!r} must be a number >= 0")
    return float(correction)


def _deviations(be, a, axes, correction):
    """(d, divisor) of var/std: d = x − μ with μ the mean over ``axes`` (kept as size-1 axes),
    and the divisor max(n − c, 0) for the n values of each slice."""
    n = int(np.prod([a.shape[i] for i in axes]))
    mu = be.div(be.sum(a, axes, True), be.full((), n, a.dtype))
    return be.sub(a, mu), max(n - correction, 0.0)


class Var(Function):
    """y = Σ_axes (x − μ)² / (n − c), μ the mean over the n reduced elements and c the
    correction (1: unbiased, 0: the population variance); n − c ≤ 0 divides by 0 (inf or
    NaN), as in PyTorch.

    ∂y/∂x_i = [2(x_i − μ) − (2/n) Σ_j (x_j − μ)] / (n − c) = 2(x_i − μ)/(n − c), since the
    deviations sum to zero; so ∂L/∂x = g·2(x − μ)/(n − c), g broadcast over the axes.
    """

    @staticmethod
    def forward(ctx, a, axes, keepdim, correction):
        be = ctx.backend
        d, ctx.divisor = _deviations(be, a, axes, correction)
        ctx.save_for_backward(d)
        ctx.axes = axes
        with np.errstate(divide="ignore", invalid="ignore"):
            y = be.div(be.sum(be.mul(d, d), axes, keepdim), be.full((), ctx.divisor, a.dtype))
        return y

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved
        be = ctx.backend
        g = be.reshape(g, _kept_shape(d.shape, ctx.axes))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = be.div(be.mul(g, be.full((), 2, d.dtype)), be.full((), ctx.divisor, d.dtype))
        return (be.mul(d, scale),)


class Std(Function):
    """y = √var(x) (same μ, n, c as :class:`Var`).

    ∂L/∂x = g/(2y) · 2(x − μ)/(n − c) = g·(x − μ)/((n − c)·y), taken as 0 where y = 0
    (a constant slice, where √ has no derivative): PyTorch's choice.
    """

    @staticmethod
    def forward(ctx, a, axes, keepdim, correction):
        be = ctx.backend
        d, divisor = _deviations(be, a, axes, correction)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = be.sqrt(be.div(be.sum(be.mul(d, d), axes, True), be.full((), divisor, a.dtype)))
        ctx.save_for_backward(d, y)
        ctx.axes, ctx.divisor = axes, divisor
        return y if keepdim else be.reshape(y, _dropped_shape(a.shape, axes))

    @staticmethod
    def backward(ctx, g):
        d, y = ctx.saved
        be = ctx.backend
        g = be.reshape(g, y.shape)
        zero, one = be.full((), 0, y.dtype), be.full((), 1, y.dtype)
        is_zero = be.compare(y, zero, "eq")
        safe_y = be.where(is_zero, one, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = be.div(g, be.mul(safe_y, be.full((), ctx.divisor, y.dtype)))
        return (be.mul(d, be.where(is_zero, zero, scale)),)


def _moment_args(fn: str, x: Tensor, dim: Any, unbiased: Any, keepdim: Any,
                 correction: Any) -> tuple[tuple[int, ...], bool, float]:
    axes = _axes(fn, x, dim)
    if any(x.shape[i] == 0 for i in axes):
        raise ValueError(f"{fn}: cannot reduce an empty axis of shape {x.shape}")
    return axes, bool(keepdim), _correction(fn, unbiased, correction)


def var(x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> Tensor:
    """``torch.var``: over ``dim`` (None: all axes), dividing by n − correction; the default
    correction is 1 (Bessel's), ``unbiased=False`` means 0."""
    x = check_tensor("var", "x", x)
    return Var.apply(x, *_moment_args("var", x, dim, unbiased, keepdim, correction))


def std(x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> Tensor:
    """``torch.std``: √var with the same arguments."""
    x = check_tensor("std", "x", x)
    return Std.apply(x, *_moment_args("std", x, dim, unbiased, keepdim, correction))
