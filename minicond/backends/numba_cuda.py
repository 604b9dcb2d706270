"""Numba CUDA backend (placeholder until its kernels land)."""

from . import BackendUnavailableError

name = "cuda"


def check_available() -> None:
    raise BackendUnavailableError(
        "backend 'cuda' is not implemented yet; use backend='numpy'")
