"""Elementwise arithmetic, reductions, reshaping, matmul and softmax, each with its backward.

Layer (docs/architecture.md): ``functional``. Notation: ``g`` is ∂L/∂y for the op's output ``y``.
Broadcasting in binary ops is undone centrally (``autograd.unbroadcast``), so each backward below
returns gradients of the broadcast shape.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._validate import check_int, check_tensor
from ..autograd import Function
from ..tensor import Tensor

# --- elementwise -------------------------------------------------------------------------------


class Add(Function):
    """y = a + b;  ∂L/∂a = g,  ∂L/∂b = g."""

    @staticmethod
    def forward(ctx, a, b):
        return ctx.backend.add(a, b)

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """y = a − b;  ∂L/∂a = g,  ∂L/∂b = −g."""

    @staticmethod
    def forward(ctx, a, b):
        return ctx.backend.sub(a, b)

    @staticmethod
    def backward(ctx, g):
        return g, ctx.backend.neg(g)


class Mul(Function):
    """y = a·b;  ∂L/∂a = g·b,  ∂L/∂b = g·a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.mul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        be = ctx.backend
        return be.mul(g, b), be.mul(g, a)


class Div(Function):
    """y = a/b;  ∂L/∂a = g/b,  ∂L/∂b = −g·a/b² = −g·y/b."""

    @staticmethod
    def forward(ctx, a, b):
        y = ctx.backend.div(a, b)
        ctx.save_for_backward(b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        b, y = ctx.saved
        be = ctx.backend
        return be.div(g, b), be.neg(be.div(be.mul(g, y), b))


class Neg(Function):
    """y = −a;  ∂L/∂a = −g."""

    @staticmethod
    def forward(ctx, a):
        return ctx.backend.neg(a)

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.neg(g),)


class Pow(Function):
    """y = aᵖ for a constant real p;  ∂L/∂a = g·p·aᵖ⁻¹."""

    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return ctx.backend.power(a, exponent)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        be, p = ctx.backend, ctx.exponent
        scale = be.full((), p, a.dtype)
        return (be.mul(g, be.mul(scale, be.power(a, p - 1.0))),)


class Exp(Function):
    """y = eᵃ;  ∂L/∂a = g·y."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.backend.exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.mul(g, ctx.saved[0]),)


class Log(Function):
    """y = ln a;  ∂L/∂a = g/a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.backend.log(a)

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.div(g, ctx.saved[0]),)


class Relu(Function):
    """y = max(a, 0);  ∂L/∂a = g where a > 0, else 0 (the subgradient 0 is taken at a = 0, as
    PyTorch does), in one pass of the backend's ``relu_backward``."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.backend.relu(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return (ctx.backend.relu_backward(a, g),)


class Sigmoid(Function):
    """y = σ(a) = 1/(1 + e⁻ᵃ);  ∂L/∂a = g·y·(1 − y)."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.backend.sigmoid(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        be = ctx.backend
        one = be.full((), 1.0, y.dtype)
        return (be.mul(g, be.mul(y, be.sub(one, y))),)


def relu(x: Tensor) -> Tensor:
    return Relu.apply(check_tensor("relu", "x", x))


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(check_tensor("sigmoid", "x", x))


def exp(x: Tensor) -> Tensor:
    return Exp.apply(check_tensor("exp", "x", x))


def log(x: Tensor) -> Tensor:
    return Log.apply(check_tensor("log", "x", x))


# --- reductions --------------------------------------------------------------------------------

def _axes(fn: str, x: Tensor, dim: Any) -> tuple[int, ...]:
    """Normalise ``dim`` (None, an int or a sequence of ints) to sorted non-negative axes."""
    if dim is None:
        return tuple(range(x.ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"{fn}: dim={dim!r} must be an int or a sequence of ints")
        if not -x.ndim <= d < max(x.ndim, 1):
            raise ValueError(f"{fn}: dim={d} is out of range for a {x.ndim}-D tensor")
        out.append(int(d) % max(x.ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{fn}: dim={dim!r} repeats an axis")
    return tuple(sorted(out))


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _dropped_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a reduction over ``axes`` without ``keepdim``."""
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class Sum(Function):
    """y = Σ_axes a;  ∂L/∂a = g broadcast back over the summed axes."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.in_shape, ctx.axes = a.shape, axes
        return ctx.backend.sum(a, axes, keepdim)

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        g = be.reshape(g, _kept_shape(ctx.in_shape, ctx.axes))
        return (be.broadcast_to(g, ctx.in_shape),)


class Mean(Function):
    """y = (1/n) Σ_axes a with n the number of summed elements;  ∂L/∂a = g/n broadcast."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        be = ctx.backend
        ctx.in_shape, ctx.axes = a.shape, axes
        ctx.n = int(np.prod([a.shape[i] for i in axes]))
        return be.div(be.sum(a, axes, keepdim), be.full((), ctx.n, a.dtype))

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        g = be.div(be.reshape(g, _kept_shape(ctx.in_shape, ctx.axes)),
                   be.full((), ctx.n, g.dtype))
        return (be.broadcast_to(g, ctx.in_shape),)


class Amax(Function):
    """y = max_axes a;  ∂L/∂a = g·[a = y]/(number of maxima), ties sharing the gradient
    equally (PyTorch's ``amax`` convention)."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        be = ctx.backend
        y = be.max(a, axes, True)
        ctx.save_for_backward(a, y)
        ctx.axes = axes
        return y if keepdim else be.reshape(y, _dropped_shape(a.shape, axes))

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved
        be = ctx.backend
        mask = be.eq(a, y)
        count = be.sum(mask, ctx.axes, True)
        g = be.reshape(g, y.shape)
        return (be.mul(mask, be.div(g, count)),)


def sum(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """``torch.sum``; int64 and bool tensors sum to int64 without gradient (counting
    ``(pred == labels).sum()``), as in PyTorch."""
    x = check_tensor("sum", "x", x)
    axes = _axes("sum", x, dim)
    if x.dtype.kind != "f":
        be = x.backend
        return Tensor(be.sum(be.astype(x.data, np.int64), axes, bool(keepdim)), be)
    return Sum.apply(x, axes, bool(keepdim))


def mean(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    x = check_tensor("mean", "x", x)
    axes = _axes("mean", x, dim)
    if any(x.shape[i] == 0 for i in axes):
        raise ValueError(f"mean: cannot average over an empty axis of shape {x.shape}")
    return Mean.apply(x, axes, bool(keepdim))


def amax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    x = check_tensor("max", "x", x)
    axes = _axes("max", x, dim)
    if any(x.shape[i] == 0 for i in axes):
        raise ValueError(f"max: cannot reduce an empty axis of shape {x.shape}")
    return Amax.apply(x, axes, bool(keepdim))


# --- shape -------------------------------------------------------------------------------------

class Reshape(Function):
    """y = a viewed with a new shape;  ∂L/∂a = g viewed with a's shape."""

    accepts_integer_dtypes = True

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        return ctx.backend.reshape(a, shape)

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.reshape(g, ctx.in_shape),)


class Permute(Function):
    """y = a with axes reordered by π;  ∂L/∂a = g with axes reordered by π⁻¹."""

    accepts_integer_dtypes = True

    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return ctx.backend.permute(a, axes)

    @staticmethod
    def backward(ctx, g):
        inverse = tuple(int(i) for i in np.argsort(ctx.axes))
        return (ctx.backend.permute(g, inverse),)


def reshape(x: Tensor, *shape: Any) -> Tensor:
    x = check_tensor("reshape", "x", x)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    dims = [check_int("reshape", "shape", s, -1) for s in shape]
    if dims.count(-1) > 1:
        raise ValueError(f"reshape: shape={tuple(shape)} may contain at most one -1")
    known = int(np.prod([d for d in dims if d != -1]))
    if -1 in dims:
        if known == 0 or x.numel() % known:
            raise ValueError(f"reshape: cannot reshape {x.shape} into {tuple(shape)}")
        dims[dims.index(-1)] = x.numel() // known
    if int(np.prod(dims)) != x.numel():
        raise ValueError(f"reshape: shape={tuple(shape)} has {int(np.prod(dims))} elements; "
                         f"the input {x.shape} has {x.numel()}")
    return Reshape.apply(x, tuple(dims))


def flatten(x: Tensor, start_dim: int = 0) -> Tensor:
    x = check_tensor("flatten", "x", x)
    (start,) = _axes("flatten", x, start_dim) if x.ndim else (0,)
    return reshape(x, x.shape[:start] + (-1,))


def permute(x: Tensor, *dims: Any) -> Tensor:
    x = check_tensor("permute", "x", x)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    if len(dims) != x.ndim:
        raise ValueError(f"permute: dims={dims} must name each of the {x.ndim} axes once")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"permute: dims={dims!r} must be ints")
        if not -x.ndim <= d < x.ndim:
            raise ValueError(f"permute: dim={d} in dims={dims!r} is out of range for a "
                             f"{x.ndim}-D tensor")
    axes = [int(d) % x.ndim for d in dims]
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: dims={dims} must be a permutation of 0..{x.ndim - 1}")
    return Permute.apply(x, tuple(axes))


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    x = check_tensor("transpose", "x", x)
    (a,) = _axes("transpose", x, dim0)
    (b,) = _axes("transpose", x, dim1)
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(x, tuple(axes))


# --- matrix product ----------------------------------------------------------------------------

def _swap_last(be, a):
    axes = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
    return be.permute(a, axes)


class MatMul(Function):
    """Y = A·B (batched over leading axes);  ∂L/∂A = G·Bᵀ,  ∂L/∂B = Aᵀ·G."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        be = ctx.backend
        ga = be.matmul(g, _swap_last(be, b)) if ctx.needs_input_grad[0] else None
        gb = be.matmul(_swap_last(be, a), g) if ctx.needs_input_grad[1] else None
        return ga, gb


def matmul(a: Tensor, b: Tensor) -> Tensor:
    a = check_tensor("matmul", "a", a)
    b = check_tensor("matmul", "b", b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: both operands must be at least 2-D; got {a.shape} and "
                         f"{b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner sizes differ: a {a.shape} and b {b.shape}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch shapes of a {a.shape} and b {b.shape} do not "
                         "broadcast") from None
    return MatMul.apply(a, b)


# --- softmax -----------------------------------------------------------------------------------

class Softmax(Function):
    """yᵢ = e^{aᵢ} / Σⱼ e^{aⱼ} along ``axis``;  ∂L/∂aᵢ = yᵢ (gᵢ − Σⱼ gⱼ yⱼ)."""

    @staticmethod
    def forward(ctx, a, axis):
        y = ctx.backend.softmax(a, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.softmax_backward(ctx.saved[0], g, ctx.axis),)


class LogSoftmax(Function):
    """yᵢ = aᵢ − log Σⱼ e^{aⱼ};  ∂L/∂aᵢ = gᵢ − e^{yᵢ} Σⱼ gⱼ."""

    @staticmethod
    def forward(ctx, a, axis):
        y = ctx.backend.log_softmax(a, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.log_softmax_backward(ctx.saved[0], g, ctx.axis),)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    x = check_tensor("softmax", "x", x)
    (axis,) = _axes("softmax", x, dim)
    return Softmax.apply(x, axis)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    x = check_tensor("log_softmax", "x", x)
    (axis,) = _axes("log_softmax", x, dim)
    return LogSoftmax.apply(x, axis)
