"""Indexing, selection and comparison: ``x[index]``, ``where``, ``< <= > >= == !=``, ``argmax``.

Layer (docs/architecture.md): ``functional``. Derivations in the docstrings and in
``docs/math/indexing.md``.

Every index NumPy understands on one tensor (ints, slices with any step, ``None``, ``...``,
integer arrays, boolean masks) is first turned into the array ``P`` of flat source positions:
``P = arange(x.numel()).reshape(x.shape)[index]``, computed from the shape alone. Then
``y.flat[k] = x.flat[P.flat[k]]`` is one ``gather`` kernel, and the backward is its
transpose, one ``scatter_add``. PyTorch's indexing rules for these index kinds are NumPy's, so
the positions follow PyTorch's semantics too (PyTorch refuses negative slice steps; they are
accepted here).

Comparisons and ``argmax`` produce bool and int64 tensors, which carry no gradient.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._validate import check_tensor
from ..autograd import Function
from ..tensor import FLOAT_DTYPES, Tensor, bool_, get_default_dtype, int64
from .basic import _axes

# --- indexing ----------------------------------------------------------------------------------


class Index(Function):
    """y = x[index], with P the flat source positions of the index (shape of y):

        y_k = x_{P_k}            ⇒   ∂L/∂x_m = Σ_{k : P_k = m} g_k,

    i.e. gx = zeros(x.shape) with g scattered back and added at P. For basic indexing
    (ints, slices, ``None``, ``...``) every position appears at most once, so gx is zeros
    with the selected region filled by g; an integer-array index may repeat a position, and
    the repeats add up. int64 and bool tensors are indexed the same way, without gradient.
    """

    accepts_integer_dtypes = True

    @staticmethod
    def forward(ctx, a, positions):
        ctx.in_shape, ctx.positions = a.shape, positions
        return ctx.backend.gather(a, positions)

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.scatter_add(ctx.in_shape, ctx.positions, g),)


def _index_array(value: Any, whole: Any) -> np.ndarray:
    """A Tensor, list or array used as an index, as a NumPy int64 or bool array."""
    if isinstance(value, Tensor):
        if value.dtype not in (int64, bool_):
            raise TypeError(f"index: a tensor used as an index must be int64 or bool, got "
                            f"{value.dtype} (convert it with .long()); index={whole!r}")
        return value.numpy()
    arr = np.asarray(value)
    if arr.size == 0 and arr.dtype.kind == "f":  # [] is an empty list of positions
        return arr.astype(np.int64)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"index: an array or list used as an index must hold integers or "
                        f"booleans, got dtype {arr.dtype}; index={whole!r}")
    return arr if arr.dtype.kind == "b" else arr.astype(np.int64)


def positions(shape: tuple[int, ...], index: Any) -> np.ndarray:
    """The int64 array P of flat positions of ``arange(prod(shape)).reshape(shape)[index]``."""
    parts = index if isinstance(index, tuple) else (index,)
    clean = []
    for part in parts:
        if part is None or part is Ellipsis or isinstance(part, (slice, bool, np.bool_)):
            clean.append(part)
        elif isinstance(part, numbers.Integral):
            clean.append(int(part))
        elif isinstance(part, (Tensor, np.ndarray, list, tuple)):
            clean.append(_index_array(part, index))
        else:
            raise TypeError(f"index: {part!r} of type {type(part).__name__} cannot index a "
                            "tensor; expected an int, a slice, None, ..., or an int64/bool "
                            f"Tensor, array or list; index={index!r}")
    flat = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    try:
        return np.array(flat[tuple(clean)], dtype=np.int64)
    except IndexError as err:
        raise IndexError(f"index: {err} (tensor shape {shape}, index={index!r})") from None
    except TypeError as err:  # e.g. a float inside a slice
        raise TypeError(f"index: {err}; index={index!r}") from None


def index(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` with PyTorch's (NumPy's) rules for ints, slices, ``None``, ``...``, integer
    arrays and boolean masks; differentiable for float tensors."""
    x = check_tensor("index", "x", x)
    return Index.apply(x, positions(x.shape, index))


# --- selection ---------------------------------------------------------------------------------

class Where(Function):
    """y = a where c holds, else b (c a bool mask; all three broadcast):

        ∂L/∂a = g where c else 0,   ∂L/∂b = 0 where c else g

    (then summed down to each input's shape by un-broadcasting). The mask gets no gradient.
    """

    accepts_integer_dtypes = True

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        return ctx.backend.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved
        be = ctx.backend
        zero = be.full((), 0, g.dtype)
        ga = be.where(cond, g, zero) if ctx.needs_input_grad[1] else None
        gb = be.where(cond, zero, g) if ctx.needs_input_grad[2] else None
        return None, ga, gb


def where(condition: Tensor, input: Any, other: Any) -> Tensor:  # noqa: A002
    """``torch.where(condition, input, other)``: elements of ``input`` where the bool tensor
    ``condition`` is True, else of ``other``. ``input``/``other`` are tensors of one dtype or
    numbers (taken in the other operand's dtype); all three broadcast."""
    fn = "where"
    cond = check_tensor(fn, "condition", condition)
    if cond.dtype != bool_:
        raise TypeError(f"{fn}: condition must be a bool tensor (e.g. from a comparison), got "
                        f"dtype {cond.dtype}")
    tensors = [t for t in (input, other) if isinstance(t, Tensor)]
    if not tensors:
        raise TypeError(f"{fn}: input or other must be a Tensor; got "
                        f"{type(input).__name__} and {type(other).__name__}")
    ref = tensors[0]
    a, b = (v if isinstance(v, Tensor) else ref._lift(v) for v in (input, other))
    if cond.backend is not ref.backend:
        raise ValueError(f"{fn}: condition lives on backend {cond.backend.name!r}, the values "
                         f"on {ref.backend.name!r}; move them to one with .to(backend)")
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{fn}: shapes {cond.shape} (condition), {a.shape} (input) and "
                         f"{b.shape} (other) do not broadcast") from None
    return Where.apply(cond.data, a, b)


# --- comparisons -------------------------------------------------------------------------------

_SYMBOLS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


def _category(dtype: np.dtype) -> int:
    """bool < integer < floating: the order of PyTorch's type promotion categories."""
    return {"b": 0, "i": 1, "u": 1, "f": 2}[dtype.kind]


def compare(x: Tensor, other: Any, op: str) -> Tensor:
    """The bool tensor ``x op other`` for op in lt le gt ge eq ne, broadcasting like PyTorch.

    Both sides are compared in one dtype, chosen as PyTorch promotes: between tensors, the
    higher category (bool < int64 < float) wins and float32 meets float64 in float64; a
    Python number or NumPy array takes the tensor's dtype unless it is of a higher category
    (a float against an int64 tensor is compared in the default float dtype).
    """
    symbol = _SYMBOLS[op]
    be = x.backend
    if isinstance(other, Tensor):
        if other.backend is not be:
            raise ValueError(f"{symbol}: operands live on backends {be.name!r} and "
                             f"{other.backend.name!r}; move them to one with .to(backend)")
        da, db = x.dtype, other.dtype
        if _category(da) == _category(db):
            dt = np.promote_types(da, db)
        else:
            dt = da if _category(da) > _category(db) else db
        a, b = x.to(dtype=dt).data, other.to(dtype=dt).data
        b_shape = other.shape
    elif isinstance(other, (numbers.Real, np.ndarray, np.generic)):
        const = np.asarray(other)
        if const.dtype.kind not in "biuf":
            raise TypeError(f"{symbol}: cannot compare a tensor with an array of dtype "
                            f"{const.dtype}; expected real numbers or booleans")
        if _category(const.dtype) <= _category(x.dtype):
            dt = x.dtype
        else:
            dt = get_default_dtype() if const.dtype.kind == "f" else int64
        a, b = x.to(dtype=dt).data, be.from_numpy(const, dt)
        b_shape = const.shape
    else:
        raise TypeError(f"{symbol}: cannot compare a tensor with {type(other).__name__}; "
                        "expected a Tensor, a real number or a NumPy array")
    try:
        np.broadcast_shapes(x.shape, tuple(b_shape))
    except ValueError:
        raise ValueError(f"{symbol}: operand shapes {x.shape} and {tuple(b_shape)} do not "
                         "broadcast") from None
    return Tensor(be.compare(a, b, op), be)


def eq(x: Tensor, other: Any) -> Tensor:
    return compare(check_tensor("eq", "x", x), other, "eq")


def ne(x: Tensor, other: Any) -> Tensor:
    return compare(check_tensor("ne", "x", x), other, "ne")


def lt(x: Tensor, other: Any) -> Tensor:
    return compare(check_tensor("lt", "x", x), other, "lt")


def le(x: Tensor, other: Any) -> Tensor:
    return compare(check_tensor("le", "x", x), other, "le")


def gt(x: Tensor, other: Any) -> Tensor:
    return compare(check_tensor("gt", "x", x), other, "gt")


def ge(x: Tensor, other: Any) -> Tensor:
    return compare(check_tensor("ge", "x", x), other, "ge")


# --- argmax ------------------------------------------------------------------------------------

def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """``torch.argmax``: int64 positions of the largest values along ``dim`` (the first one on
    ties, the first NaN if any), or the flat position in the whole tensor when ``dim`` is
    None. Not differentiable."""
    x = check_tensor("argmax", "x", x)
    if x.dtype not in FLOAT_DTYPES + (int64,):
        raise TypeError(f"argmax: x has dtype {x.dtype}; expected float32, float64 or int64")
    be = x.backend
    if dim is None:
        if x.numel() == 0:
            raise ValueError(f"argmax: x of shape {x.shape} is empty")
        out = be.argmax(be.reshape(x.data, (-1,)), 0)
        shape = (1,) * x.ndim if keepdim else ()
        return Tensor(be.reshape(out, shape), be)
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"argmax: dim={dim!r} must be an int or None")
    (axis,) = _axes("argmax", x, dim)
    if x.ndim == 0:
        return Tensor(be.full((), 0, int64), be)
    if x.shape[axis] == 0:
        raise ValueError(f"argmax: dim={dim} has size 0 in x of shape {x.shape}")
    out = be.argmax(x.data, axis)
    if keepdim:
        out = be.reshape(out, x.shape[:axis] + (1,) + x.shape[axis + 1:])
    return Tensor(out, be)
