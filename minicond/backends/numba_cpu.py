"""Numba CPU backend (placeholder until its kernels land)."""

from . import BackendUnavailableError

name = "numba"


def check_available() -> None:
    raise BackendUnavailableError(
        "backend 'numba' is not implemented yet; use backend='numpy'")
