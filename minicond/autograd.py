"""Reverse-mode automatic differentiation: Function, Context, and the backward pass.

Layer (docs/architecture.md): above the backends, below ``functional``. A :class:`Function` subclass
states one op: ``forward(ctx, *arrays)`` computes the output from backend arrays and saves what the
gradient needs; ``backward(ctx, grad)`` returns one gradient per positional input (``None``
for inputs that are not tensors or need none). Broadcasting is undone here, once, in
:func:`unbroadcast`, so no op's backward deals with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

_grad_enabled = [True]


def is_grad_enabled() -> bool:
    """Whether operations are being recorded for backward."""
    return _grad_enabled[-1]


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Context manager in which no operation is recorded (as ``torch.no_grad``)."""
    _grad_enabled.append(False)
    try:
        yield
    finally:
        _grad_enabled.pop()


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Context manager that records operations again inside a ``no_grad`` block."""
    _grad_enabled.append(True)
    try:
        yield
    finally:
        _grad_enabled.pop()


class Context:
    """What a Function's forward leaves for its backward.

    ``backend`` is the kernel table of the inputs; ``needs_input_grad[i]`` says whether
    positional input ``i`` wants a gradient, so a backward can skip work nobody asked for.
    A backward pass frees what ``save_for_backward`` kept (unless it retains the graph), as
    PyTorch does; reading it after that raises a RuntimeError naming the Function.
    """

    def __init__(self, backend: Any, needs_input_grad: tuple[bool, ...],
                 function_name: str = "Function") -> None:
        self.backend = backend
        self.needs_input_grad = needs_input_grad
        self.function_name = function_name
        self._saved: tuple[Any, ...] | None = ()

    def save_for_backward(self, *values: Any) -> None:
        self._saved = values

    @property
    def saved(self) -> tuple[Any, ...]:
        if self._saved is None:
            raise RuntimeError(
                f"{self.function_name}.backward: trying to backward through the graph a second "
                "time; the first backward() freed the values this op saved. Call the first "
                "backward(retain_graph=True) to backward through the same graph again, or "
                "recompute the forward pass")
        return self._saved

    def free_saved(self) -> None:
        """Drop the saved values; an op that saved none can still run backward again."""
        if self._saved:
            self._saved = None


class Node:
    """The record of one applied Function: its class, its context and its inputs."""

    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function: type[Function], ctx: Context, inputs: tuple[Any, ...]):
        self.function = function
        self.ctx = ctx
        self.inputs = inputs


class Function:
    """Base class of differentiable operations; see the module docstring.

    Inputs must be float32/float64 tensors unless a subclass sets ``accepts_integer_dtypes``
    (shape operations and indexing): those also move int64 and bool values, without a
    gradient.
    """

    accepts_integer_dtypes = False

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        tensors = [a for a in args if isinstance(a, Tensor)]
        backend = tensors[0].backend
        if not cls.accepts_integer_dtypes:
            for t in tensors:
                if t.dtype.kind != "f":
                    raise TypeError(f"{cls.__name__}: got a tensor of dtype {t.dtype}; this "
                                    "operation is defined for float32 and float64 tensors "
                                    "only (convert with .float() or .double())")
        for t in tensors[1:]:
            if t.backend is not backend:
                raise ValueError(f"{cls.__name__}: inputs live on backends "
                                 f"{backend.name!r} and {t.backend.name!r}; move them to one "
                                 f"with .to(backend)")
            if t.dtype != tensors[0].dtype:
                raise TypeError(f"{cls.__name__}: inputs have dtypes {tensors[0].dtype} and "
                                f"{t.dtype}; convert them to one with .to(dtype=...)")
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context(backend, needs, cls.__name__)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw, **kwargs)
        record = is_grad_enabled() and any(needs)
        result = Tensor._wrap(out, backend, requires_grad=record)
        if record:
            result._node = Node(cls, ctx, args)
        return result


def unbroadcast(backend: Any, grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` down to ``shape``: the gradient of broadcasting ``shape`` to grad's shape.

    Broadcasting copies an input along new leading axes and along axes of size 1, so its
    transpose adds up the copies along exactly those axes.
    """
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = backend.sum(grad, axes, True)
    return backend.reshape(grad, shape)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` through recorded nodes, each after all its users."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._node is not None:
            for parent in t._node.inputs:
                if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
    return order[::-1]


def run_backward(root: Tensor, grad: Any, retain_graph: bool = False) -> None:
    """Propagate ``grad`` (∂L/∂root) to every leaf that requires a gradient.

    Leaves accumulate into ``.grad`` across calls, as in PyTorch; intermediate gradients are
    dropped once used. Unless ``retain_graph``, each node's saved values are freed once its
    backward has run, so a second backward through them raises instead of silently adding
    the same gradient twice.
    """
    backend = root.backend
    grads: dict[int, Any] = {id(root): grad}
    for t in _topological_order(root):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        node = t._node
        if node is None:
            t.grad = Tensor._wrap(g if t.grad is None else backend.add(t.grad.data, g), backend)
            continue
        input_grads = node.function.backward(node.ctx, g)
        if not retain_graph:
            node.ctx.free_saved()
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        name = node.function.__name__
        _check_gradient_count(name, node.ctx.needs_input_grad, len(input_grads))
        for inp, gi in zip(node.inputs, input_grads, strict=False):
            if not isinstance(inp, Tensor) or not inp.requires_grad or gi is None:
                continue
            gi = _input_gradient(backend, name, gi, inp.shape)
            prev = grads.get(id(inp))
            grads[id(inp)] = gi if prev is None else backend.add(prev, gi)


def _check_gradient_count(function_name: str, needs_input_grad: tuple[bool, ...],
                          count: int) -> None:
    """A backward returns one gradient per positional input of forward (None where none is
    needed); inputs after the last one that needs a gradient may be left off."""
    required = max((i + 1 for i, need in enumerate(needs_input_grad) if need), default=0)
    if not required <= count <= len(needs_input_grad):
        expected = (f"{len(needs_input_grad)}" if required == len(needs_input_grad)
                    else f"{required} to {len(needs_input_grad)}")
        raise RuntimeError(f"{function_name}.backward returned {count} gradient(s); expected "
                           f"{expected}: one per positional input of forward, None for an "
                           "input that takes no gradient")


def _input_gradient(backend: Any, function_name: str, grad: Any,
                    shape: tuple[int, ...]) -> Any:
    """``grad`` summed down to an input's ``shape``, or a RuntimeError naming the Function
    when no broadcasting of ``shape`` could have produced it."""
    grad_shape = tuple(grad.shape)
    try:
        fits = np.broadcast_shapes(shape, grad_shape) == grad_shape
    except ValueError:
        fits = False
    if not fits:
        raise RuntimeError(f"{function_name}.backward returned a gradient of shape {grad_shape} "
                           f"for an input of shape {tuple(shape)}; it must have the input's "
                           "shape or one the input broadcasts to")
    return unbroadcast(backend, grad, shape)


from .tensor import Tensor  # noqa: E402  (Tensor uses this module; import last)
