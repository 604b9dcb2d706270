"""Joining and splitting along one axis: ``cat``, ``stack``, ``split``, ``chunk``.

Layer (docs/architecture.md): ``functional``. Derivations in the docstrings and in
``docs/math/joining.md``.

Every piece k of a join occupies a block of the output along ``dim``; P_k is the array of flat
output positions of that block (computed from the shapes alone, as for indexing). Joining is
then a sum of ``scatter_add`` kernels and its gradient a ``gather`` per piece; splitting is
indexing (one slice per piece), whose gradient scatters each piece's gradient back into zeros.
No kernel is specific to these ops.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validate import check_int, check_tensor
from ..autograd import Function
from ..tensor import Tensor
from .basic import reshape
from .indexing import positions


def _dim(fn: str, dim: Any, ndim: int) -> int:
    """``dim`` as a non-negative axis of an ``ndim``-D tensor (negative counts from the end)."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{fn}: dim={dim!r} must be an int")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{fn}: dim={dim} is out of range for a {ndim}-D tensor (expected "
                         f"{-ndim} <= dim < {ndim})")
    return int(dim) % ndim


class Cat(Function):
    """y = [x_1, …, x_n] joined along axis ``dim``; piece k lands at the flat output positions
    P_k (its block of rows along ``dim``):

        y_{P_k[m]} = (x_k)_m          ⇒   ∂L/∂x_k = gy[P_k]   (gather)

    The blocks are disjoint and cover y, so the forward is Σ_k scatter_add(P_k, x_k) and the
    backward reads each block back out of gy: a split of the gradient.
    """

    @staticmethod
    def forward(ctx, *pieces, out_shape, places):
        be = ctx.backend
        ctx.places = places
        y = None
        for piece, where in zip(pieces, places, strict=True):
            part = be.scatter_add(out_shape, where, piece)
            y = part if y is None else be.add(y, part)
        return y

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        return tuple(be.gather(g, where) if need else None
                     for need, where in zip(ctx.needs_input_grad, ctx.places, strict=True))


def _tensor_list(fn: str, tensors: Any) -> list[Tensor]:
    """The non-empty list or tuple of Tensors that ``cat`` and ``stack`` take."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{fn}: tensors must be a list or tuple of Tensors, got "
                        f"{type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{fn}: tensors is empty; expected at least one Tensor")
    return [check_tensor(fn, f"tensors[{k}]", t) for k, t in enumerate(tensors)]


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.cat``: tensors of one dtype and backend, equal in every axis but ``dim``,
    joined along ``dim``."""
    fn = "cat"
    xs = _tensor_list(fn, tensors)
    ref = xs[0]
    if ref.ndim == 0:
        raise ValueError(f"{fn}: tensors[0] is 0-D; zero-dimensional tensors cannot be "
                         "concatenated (use stack)")
    axis = _dim(fn, dim, ref.ndim)
    for k, x in enumerate(xs[1:], 1):
        same = x.ndim == ref.ndim and all(
            a == b for i, (a, b) in enumerate(zip(x.shape, ref.shape, strict=True)) if i != axis)
        if not same:
            raise ValueError(f"{fn}: tensors[{k}] has shape {x.shape}, tensors[0] has "
                             f"{ref.shape}; they must match in every axis but dim={dim}")
    sizes = [x.shape[axis] for x in xs]
    out_shape = list(ref.shape)
    out_shape[axis] = int(sum(sizes))
    out_shape = tuple(out_shape)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    lead = (slice(None),) * axis
    places = [positions(out_shape, lead + (slice(int(a), int(b)),))
              for a, b in zip(starts[:-1], starts[1:], strict=True)]
    return Cat.apply(*xs, out_shape=out_shape, places=places)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.stack``: tensors of one shape joined along a new axis ``dim``.

    It is ``cat`` of the tensors each given a new axis of length 1 at ``dim``; its gradient,
    through cat and the reshapes, is gy cut along ``dim`` into its slices (an unbind)."""
    fn = "stack"
    xs = _tensor_list(fn, tensors)
    for k, x in enumerate(xs[1:], 1):
        if x.shape != xs[0].shape:
            raise ValueError(f"{fn}: tensors[{k}] has shape {x.shape}, tensors[0] has "
                             f"{xs[0].shape}; stack needs equal shapes")
    axis = _dim(fn, dim, xs[0].ndim + 1)
    shape = xs[0].shape
    grown = shape[:axis] + (1,) + shape[axis:]
    return cat([reshape(x, grown) for x in xs], axis)


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0
          ) -> tuple[Tensor, ...]:
    """``torch.split``: x cut along ``dim`` into pieces of ``split_size_or_sections`` entries
    (the last piece shorter if the axis does not divide), or into pieces of the listed sizes,
    which must add up to the axis length.

    Each piece is the slice ``x[..., a:b, ...]``; its gradient is the piece's gradient placed
    at rows a..b of zeros of x's shape, so the pieces' gradients together form a cat of them,
    with zeros for any piece that does not reach the loss."""
    fn = "split"
    x = check_tensor(fn, "x", x)
    if x.ndim == 0:
        raise ValueError(f"{fn}: x is 0-D; expected at least one axis")
    axis = _dim(fn, dim, x.ndim)
    n = x.shape[axis]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = [check_int(fn, "split_size_or_sections", s, 0) for s in split_size_or_sections]
        if sum(sizes) != n:
            raise ValueError(f"{fn}: split_size_or_sections={list(sizes)} adds up to "
                             f"{sum(sizes)}; expected the length {n} of dim={dim} "
                             f"(x has shape {x.shape})")
    else:
        size = check_int(fn, "split_size_or_sections", split_size_or_sections, 0)
        if size == 0 and n > 0:
            raise ValueError(f"{fn}: split_size_or_sections=0 cannot cut an axis of length "
                             f"{n}; expected a positive size")
        sizes = [size] * (n // size) + ([n % size] if n % size else []) if size else [0]
    lead = (slice(None),) * axis
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return tuple(x[lead + (slice(int(a), int(b)),)]
                 for a, b in zip(starts[:-1], starts[1:], strict=True))


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``torch.chunk``: x cut along ``dim`` into at most ``chunks`` pieces of ⌈n/chunks⌉
    entries (the last shorter), as PyTorch; it is ``split`` with that size."""
    fn = "chunk"
    x = check_tensor(fn, "x", x)
    chunks = check_int(fn, "chunks", chunks, 1)
    if x.ndim == 0:
        raise ValueError(f"{fn}: x is 0-D; expected at least one axis")
    n = x.shape[_dim(fn, dim, x.ndim)]
    return split(x, max(-(-n // chunks), 1) if n else 1, dim)
