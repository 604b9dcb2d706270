"""The Tensor: a backend array, the backend that owns it, and its place in the autograd graph.

Layer (docs/architecture.md): with ``autograd.py``, above the backends. Every differentiable method
forwards to a Function in ``minicond.functional``; this file holds no math of its own.
"""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import Any

import numpy as np

from .backends import get_backend

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)
FLOAT_DTYPES = (float32, float64)
DTYPES = (float32, float64, int64, bool_)
_DTYPES = {"float32": float32, "float64": float64, "int64": int64, "bool": bool_}
_default_dtype = [float32]


def as_dtype(dtype: Any, argument: str = "dtype", floating: bool = True) -> np.dtype:
    """Normalise ``dtype`` to float32 or float64 (with ``floating=False`` also int64 or bool),
    or raise a TypeError naming ``argument``."""
    allowed = FLOAT_DTYPES if floating else DTYPES
    if isinstance(dtype, str) and dtype in _DTYPES:
        d = _DTYPES[dtype]
    else:
        try:
            # np.dtype(None) is float64, so None is rejected before asking NumPy
            d = None if dtype is None else np.dtype(dtype)
        except TypeError:
            d = None
    # ``None in (float32, float64)`` is true (NumPy compares None as float64): test it first
    if d is None or d not in allowed:
        names = " or ".join(str(a) for a in allowed)
        raise TypeError(f"{argument}={dtype!r} is not supported; expected {names}")
    return d


def set_default_dtype(dtype: Any) -> None:
    """Set the dtype of tensors built from Python floats and lists of them."""
    _default_dtype[0] = as_dtype(dtype)


def get_default_dtype() -> np.dtype:
    return _default_dtype[0]


class Tensor:
    """An n-dimensional array that can record operations for backward.

    float32 and float64 tensors are differentiable. int64 and bool tensors (labels, indices,
    the results of comparisons and ``argmax``) never require a gradient; differentiable
    operations refuse them, shape operations and indexing accept them.
    """

    __array_priority__ = 100  # make ``ndarray + Tensor`` call Tensor.__radd__
    # ``==`` builds a tensor, so hashing stays by identity (as in PyTorch)
    __hash__ = object.__hash__

    def __init__(self, data: Any, backend: ModuleType, requires_grad: bool = False) -> None:
        if requires_grad and np.dtype(data.dtype) not in FLOAT_DTYPES:
            raise TypeError(f"requires_grad=True needs a float32 or float64 tensor; a tensor "
                            f"of dtype {data.dtype} has no gradient (convert it with .float() "
                            "or .double() first)")
        self.data = data
        self.backend = backend
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._node: autograd.Node | None = None

    @classmethod
    def _wrap(cls, data: Any, backend: ModuleType, requires_grad: bool = False) -> Tensor:
        return Tensor(data, backend, requires_grad)

    # --- description --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.data.shape)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def device(self) -> str:
        """The backend's name: ``"numpy"``, ``"numba"`` or ``"cuda"``."""
        return self.backend.name

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return (f"tensor({np.array2string(self.numpy(), precision=4, separator=', ')}, "
                f"dtype={self.dtype}, backend={self.backend.name!r}{grad})")

    # --- conversion ---------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A NumPy copy of the values (from the device, for the CUDA backend)."""
        return self.backend.to_numpy(self.data)

    def item(self) -> float | int | bool:
        """The one value as a Python float, int or bool (after the tensor's dtype)."""
        if self.numel() != 1:
            raise ValueError(f"item(): tensor of shape {self.shape} has {self.numel()} "
                             "elements; expected exactly one")
        return self.numpy().reshape(()).item()

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} "
                               f"({self.numel()} elements) is ambiguous; test one element "
                               "(t[i]) or reduce the tensor first")
        return bool(self.item())

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares the array, like PyTorch)."""
        return Tensor(self.data, self.backend)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            raise ValueError("requires_grad_(): only leaf tensors can change requires_grad; "
                             "use .detach() first")
        if requires_grad and self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"requires_grad_(): a tensor of dtype {self.dtype} has no "
                            "gradient; convert it with .float() or .double() first")
        self.requires_grad = bool(requires_grad)
        return self

    def to(self, backend: str | None = None, dtype: Any = None) -> Tensor:
        """A copy on ``backend`` and/or in ``dtype`` (float32, float64, int64 or bool).

        A float leaf keeps ``requires_grad`` when the copy is a float too. A string that names
        a dtype (``"float64"``) is taken as the dtype. Conversion to int64 truncates toward
        zero; to bool, nonzero is True.
        """
        if isinstance(backend, str) and backend in _DTYPES and dtype is None:
            backend, dtype = None, backend
        target = get_backend(backend) if backend is not None else self.backend
        dt = as_dtype(dtype, floating=False) if dtype is not None else self.dtype
        if target is self.backend and dt == self.dtype:
            return self
        if target is self.backend:
            data = self.backend.astype(self.data, dt)
        else:
            data = target.from_numpy(self.numpy(), dt)
        keep = self.requires_grad and self.is_leaf and dt in FLOAT_DTYPES
        return Tensor(data, target, requires_grad=keep)

    def float(self) -> Tensor:
        return self.to(dtype=float32)

    def double(self) -> Tensor:
        return self.to(dtype=float64)

    def long(self) -> Tensor:
        return self.to(dtype=int64)

    def bool(self) -> Tensor:
        return self.to(dtype=bool_)

    # --- autograd -----------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate ∂self/∂leaf into ``leaf.grad`` for every leaf that requires a gradient.

        ``grad`` is ∂L/∂self; it may be omitted only when ``self`` has one element. As in
        PyTorch, the pass frees the values the graph saved for it; ``retain_graph=True`` keeps
        them, so that backward can run through the same graph again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no "
                               "graph; create inputs with requires_grad=True")
        if grad is None:
            if self.numel() != 1:
                raise ValueError(f"backward(): grad can be omitted only for a one-element "
                                 f"output; this output has shape {self.shape}, so pass "
                                 f"grad= with that shape")
            g = self.backend.full(self.shape, 1.0, self.dtype)
        else:
            try:
                gt = grad if isinstance(grad, Tensor) else tensor(
                    grad, dtype=self.dtype, backend=self.backend)
            except (TypeError, ValueError) as err:
                raise type(err)(f"backward(): grad cannot be read as a gradient: {err}") from None
            if gt.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {gt.shape}; expected the "
                                 f"output's shape {self.shape}")
            g = gt.to(self.backend, self.dtype).data
        autograd.run_backward(self, g, retain_graph=bool(retain_graph))

    def zero_grad(self) -> None:
        self.grad = None

    # --- operators ----------------------------------------------------------------------------
    def _lift(self, other: Any) -> Tensor:
        """A Python number or array as a constant tensor on this tensor's backend and dtype;
        the shapes must broadcast, checked here so that no kernel sees a bad pair."""
        if isinstance(other, Tensor):
            lifted = other
        elif isinstance(other, numbers.Real) or (isinstance(other, np.ndarray)
                                                 and other.dtype.kind in "biuf"):
            lifted = Tensor(self.backend.from_numpy(np.asarray(other), self.dtype), self.backend)
        else:
            kind = (f"array of dtype {other.dtype}" if isinstance(other, np.ndarray)
                    else type(other).__name__)
            raise TypeError(f"unsupported operand: {kind}; expected a Tensor, a real number "
                            "or a NumPy array of real numbers")
        try:
            np.broadcast_shapes(self.shape, lifted.shape)
        except ValueError:
            raise ValueError(f"operand shapes {self.shape} and {lifted.shape} do not "
                             "broadcast") from None
        return lifted

    def __add__(self, other: Any) -> Tensor:
        return F.Add.apply(self, self._lift(other))

    def __radd__(self, other: Any) -> Tensor:
        return F.Add.apply(self._lift(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return F.Sub.apply(self, self._lift(other))

    def __rsub__(self, other: Any) -> Tensor:
        return F.Sub.apply(self._lift(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return F.Mul.apply(self, self._lift(other))

    def __rmul__(self, other: Any) -> Tensor:
        return F.Mul.apply(self._lift(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return F.Div.apply(self, self._lift(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return F.Div.apply(self._lift(other), self)

    def __neg__(self) -> Tensor:
        return F.Neg.apply(self)

    def __pow__(self, exponent: Any) -> Tensor:
        if isinstance(exponent, Tensor):
            return F.pow(self, exponent)
        if not isinstance(exponent, numbers.Real) or isinstance(exponent, bool):
            raise TypeError(f"**: exponent={exponent!r} must be a real number or a Tensor")
        return F.Pow.apply(self, exponent=float(exponent))

    def __rpow__(self, base: Any) -> Tensor:
        return F.pow(self._lift(base), self)

    def __matmul__(self, other: Any) -> Tensor:
        return F.matmul(self, other)

    def __getitem__(self, index: Any) -> Tensor:
        return F.index(self, index)

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError(
            "tensors do not support item assignment (t[i] = v): autograd saves input values "
            "for the backward pass, and writing into a tensor in place would silently make "
            "those saved values, and so the gradients, wrong. Build a new tensor instead, e.g. "
            "mc.functional.where(mask, v, t) or arithmetic such as t * keep + v * (1 - keep), "
            "or edit a copy: a = t.numpy(); a[i] = v; t = mc.tensor(a)")

    # comparisons: bool tensors, never differentiable (PyTorch's type promotion, see
    # functional.indexing.compare)
    def __lt__(self, other: Any) -> Tensor:
        return F.compare(self, other, "lt")

    def __le__(self, other: Any) -> Tensor:
        return F.compare(self, other, "le")

    def __gt__(self, other: Any) -> Tensor:
        return F.compare(self, other, "gt")

    def __ge__(self, other: Any) -> Tensor:
        return F.compare(self, other, "ge")

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return F.compare(self, other, "eq")

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return F.compare(self, other, "ne")

    # --- methods ------------------------------------------------------------------------------
    def exp(self) -> Tensor:
        return F.Exp.apply(self)

    def log(self) -> Tensor:
        return F.Log.apply(self)

    def relu(self) -> Tensor:
        return F.Relu.apply(self)

    def sigmoid(self) -> Tensor:
        return F.Sigmoid.apply(self)

    def tanh(self) -> Tensor:
        return F.Tanh.apply(self)

    def maximum(self, other: Any) -> Tensor:
        return F.maximum(self, other)

    def minimum(self, other: Any) -> Tensor:
        return F.minimum(self, other)

    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return F.sum(self, dim, keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return F.mean(self, dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return F.amax(self, dim, keepdim)

    def reshape(self, *shape: Any) -> Tensor:
        return F.reshape(self, *shape)

    def permute(self, *dims: Any) -> Tensor:
        return F.permute(self, *dims)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return F.transpose(self, dim0, dim1)

    def matmul(self, other: Tensor) -> Tensor:
        return F.matmul(self, other)

    def softmax(self, dim: int = -1) -> Tensor:
        return F.softmax(self, dim)

    def log_softmax(self, dim: int = -1) -> Tensor:
        return F.log_softmax(self, dim)

    def flatten(self, start_dim: int = 0) -> Tensor:
        return F.flatten(self, start_dim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return F.argmax(self, dim, keepdim)

    def unsqueeze(self, dim: int) -> Tensor:
        return F.unsqueeze(self, dim)

    def squeeze(self, dim: Any = None) -> Tensor:
        return F.squeeze(self, dim)

    def view(self, *shape: Any) -> Tensor:
        """``reshape``: arrays here are always contiguous, so every view is a reshape."""
        return F.reshape(self, *shape)

    @property
    def T(self) -> Tensor:
        return F.transpose_all(self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        return F.clamp(self, min, max)

    clip = clamp

    def abs(self) -> Tensor:
        return F.abs(self)

    def __abs__(self) -> Tensor:
        return F.abs(self)

    def sqrt(self) -> Tensor:
        return F.sqrt(self)

    def pow(self, exponent: Any) -> Tensor:
        """``self ** exponent`` for a real number or a tensor ``exponent``."""
        return F.pow(self, exponent)

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        """The smallest element, or ``(values, indices)`` along ``dim`` (PyTorch's ``min``)."""
        return F.min(self, dim, keepdim)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None) -> Tensor:
        return F.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None) -> Tensor:
        return F.std(self, dim, unbiased, keepdim, correction=correction)

    def split(self, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
        return F.split(self, split_size, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return F.chunk(self, chunks, dim)


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False,
           backend: str | ModuleType | None = None) -> Tensor:
    """Build a leaf tensor from a NumPy array, a nested list, a number or a Tensor.

    Without ``dtype``, the dtype follows the data, as in PyTorch: NumPy float32/float64 arrays
    keep theirs; integers (Python ints, NumPy integer arrays of any width) become int64;
    booleans become bool; other floats (Python floats, float16) become the default dtype
    (float32). So ``tensor([1.0, 2.0])`` is float32 and ``tensor(np.arange(3))`` is int64.
    ``dtype`` is one of float32, float64, int64, bool; only float tensors may set
    ``requires_grad``.
    """
    be = get_backend(backend)
    if isinstance(data, Tensor):
        data = data.numpy()
    try:
        arr = np.asarray(data)
    except ValueError as err:
        raise ValueError(f"tensor(): data is not a rectangular array: {err}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"tensor(): data of dtype {arr.dtype} is not supported; expected real "
                        "numbers or booleans")
    if dtype is not None:
        dt = as_dtype(dtype, floating=False)
    elif arr.dtype.kind == "b":
        dt = bool_
    elif arr.dtype.kind in "iu":
        dt = int64
    elif arr.dtype in FLOAT_DTYPES and isinstance(data, (np.ndarray, np.generic)):
        dt = np.dtype(arr.dtype)
    else:
        dt = get_default_dtype()
    if requires_grad and dt not in FLOAT_DTYPES:
        raise TypeError(f"tensor(): requires_grad=True needs a float dtype; this tensor would "
                        f"be {dt} (pass dtype=mc.float32 or float data)")
    return Tensor(be.from_numpy(arr, dt), be, requires_grad=requires_grad)


def from_numpy(array: np.ndarray, requires_grad: bool = False,
               backend: str | ModuleType | None = None) -> Tensor:
    """A leaf tensor on the array's own memory, as ``torch.from_numpy``: no copy on the CPU
    backends (``numpy``, ``numba``), so writing into ``array`` afterwards changes the tensor;
    minicond itself never writes into a tensor's memory (every kernel returns new arrays).
    On the ``cuda`` backend the values are copied to the device. ``array`` must be a NumPy
    array of dtype float32, float64, int64 or bool (``tensor`` converts anything else)."""
    be = get_backend(backend)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy(): array must be a numpy.ndarray, got "
                        f"{type(array).__name__} (use mc.tensor for lists and numbers)")
    dt = np.dtype(array.dtype)
    if dt not in FLOAT_DTYPES and dt not in (int64, bool_):
        raise TypeError(f"from_numpy(): array has dtype {dt}; expected float32, float64, int64 "
                        "or bool (mc.tensor converts other dtypes, with a copy)")
    if requires_grad and dt not in FLOAT_DTYPES:
        raise TypeError(f"from_numpy(): requires_grad=True needs a float array; this one is "
                        f"{dt}")
    data = array if be.name in ("numpy", "numba") else be.from_numpy(array, dt)
    return Tensor(data, be, requires_grad=requires_grad)


from . import autograd  # noqa: E402  (autograd and functional build on Tensor: import last)
from . import functional as F  # noqa: E402
