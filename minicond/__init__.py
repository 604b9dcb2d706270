"""minicond: CondConv (conditionally parameterized convolutions) from scratch.

A small autograd engine over NumPy and Numba whose every op has a hand-derived backward,
with three interchangeable kernel backends ("numpy", "numba", "cuda").
"""

from . import data, functional, interop, models, nn, optim, testing, viz
from .autograd import enable_grad, is_grad_enabled, no_grad
from .backends import BackendUnavailableError, get_backend, set_default_backend
from .random import manual_seed
from .serialization import load, save
from .tensor import (
    Tensor,
    bool_,
    float32,
    float64,
    from_numpy,
    get_default_dtype,
    int64,
    set_default_dtype,
    tensor,
)

bool = bool_  # noqa: A001 - PyTorch's name, ``mc.bool``

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "Tensor", "bool", "bool_", "data", "enable_grad", "float32",
    "float64", "from_numpy", "functional", "int64",
    "get_backend", "get_default_dtype", "interop", "is_grad_enabled", "manual_seed", "models", "nn",
    "no_grad", "optim", "set_default_backend", "set_default_dtype", "tensor", "testing", "viz",
    "load", "save",
]
