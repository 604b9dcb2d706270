"""Parameter initialisation.

Layer (docs/architecture.md): ``nn``. PyTorch's default for Linear and Conv2d weights is
kaiming-uniform with a = √5, which reduces to U(−1/√fan_in, 1/√fan_in); biases use the same bound.
For CondConv every expert is initialised as an ordinary conv weight, fan_in = Cin/G · kh · kw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..random import generator
from ..tensor import Tensor, tensor


def uniform(shape: tuple[int, ...], bound: float, dtype: Any = None,
            backend: Any = None) -> Tensor:
    """A tensor drawn from U(−bound, bound) with the global generator."""
    values = generator().uniform(-bound, bound, size=shape)
    return tensor(values, dtype=dtype if dtype is not None else np.float32, backend=backend)


def default_bound(fan_in: int) -> float:
    """1/√fan_in: PyTorch's kaiming-uniform(a=√5) bound for weights, and its bias bound."""
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
