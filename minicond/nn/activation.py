"""Activation layers (no parameters): ReLU, SiLU, Sigmoid, Tanh, GELU, LeakyReLU, Softplus,
Hardswish, Softmax, LogSoftmax, and Identity.

Layer (docs/architecture.md): ``nn``. Each calls one function of ``minicond.functional``; arguments
are checked when the layer is built.
"""

from __future__ import annotations

import math
from typing import Any

from .. import functional as F
from .._validate import check_choice, check_float, check_int, check_tensor
from ..tensor import Tensor
from .module import Module


class ReLU(Module):
    """y = max(x, 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class SiLU(Module):
    """y = x·σ(x) (swish)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class Sigmoid(Module):
    """y = σ(x) = 1/(1 + e⁻ˣ)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """y = tanh x."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class GELU(Module):
    """y = x·Φ(x) (``approximate="none"``) or its tanh approximation (``"tanh"``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = check_choice("GELU", "approximate", approximate, ("none", "tanh"))

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class LeakyReLU(Module):
    """y = x where x > 0, else ``negative_slope``·x."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = check_float("LeakyReLU", "negative_slope", negative_slope,
                                          -math.inf, math.inf)
        if inplace:
            raise ValueError("LeakyReLU: inplace=True is not supported (autograd keeps the "
                             "input for backward)")

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Softplus(Module):
    """y = log(1 + e^{βx})/β, and x where βx > ``threshold``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = check_float("Softplus", "beta", beta, -math.inf, math.inf)
        if self.beta == 0.0:
            raise ValueError("Softplus: beta=0 divides by zero; expected a nonzero number")
        self.threshold = check_float("Softplus", "threshold", threshold, -math.inf, math.inf)

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardswish(Module):
    """y = x·min(max(x + 3, 0), 6)/6."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        if inplace:
            raise ValueError("Hardswish: inplace=True is not supported (autograd keeps the "
                             "input for backward)")

    def forward(self, x: Tensor) -> Tensor:
        return F.hardswish(x)


def _implicit_softmax_dim(ndim: int) -> int:
    """PyTorch's legacy choice when ``dim`` is None: 0 for 0-, 1- and 3-D inputs, else 1."""
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """Softmax along ``dim`` (None: PyTorch's legacy implicit choice; pass ``dim``)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = None if dim is None else check_int("Softmax", "dim", dim, -(2**31))

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor("Softmax", "x", x)
        return F.softmax(x, _implicit_softmax_dim(x.ndim) if self.dim is None else self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log softmax along ``dim`` (None: as :class:`Softmax`)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = None if dim is None else check_int("LogSoftmax", "dim", dim, -(2**31))

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor("LogSoftmax", "x", x)
        return F.log_softmax(x, _implicit_softmax_dim(x.ndim) if self.dim is None
                             else self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Identity(Module):
    """y = x; arguments are accepted and ignored, as in ``torch.nn.Identity`` (a stand-in
    for a layer that a configuration switches off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x
