"""Activation layers: ReLU, SiLU and Sigmoid (no parameters).

Layer: ``nn``. Each calls one function of ``minicond.functional``.
"""

from __future__ import annotations

from .. import functional as F
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
