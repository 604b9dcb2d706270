"""The global random state: parameter initialisation and dropout masks draw from it.

``manual_seed(s)`` makes a whole run repeatable on a given backend.
"""

from __future__ import annotations

import numpy as np

_generator = [np.random.default_rng(0)]


def manual_seed(seed: int) -> None:
    """Reset the global generator (as ``torch.manual_seed``)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed={seed!r} must be a non-negative int")
    _generator[0] = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    """The global NumPy generator (host side)."""
    return _generator[0]


def next_seed() -> int:
    """A fresh 63-bit seed for a kernel that draws its own random numbers (dropout)."""
    return int(_generator[0].integers(0, 2**63 - 1))


def get_state() -> dict:
    """The generator's state, for checkpoints."""
    return _generator[0].bit_generator.state


def set_state(state: dict) -> None:
    g = np.random.default_rng()
    g.bit_generator.state = state
    _generator[0] = g
