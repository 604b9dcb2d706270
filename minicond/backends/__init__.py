"""Backend registry: resolves the names ``"numpy"``, ``"numba"`` and ``"cuda"`` to kernel tables.

Layer (docs/architecture.md): bottom. A backend is a module defining every kernel of
:data:`table.KERNELS`. Modules are imported on first use, so importing minicond never needs Numba's
JIT or a CUDA driver.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from .table import KERNELS

BACKEND_NAMES = ("numpy", "numba", "cuda")
_MODULES = {"numpy": "numpy_ref", "numba": "numba_cpu", "cuda": "numba_cuda"}
_loaded: dict[str, ModuleType] = {}
_default: list[str] = []


class BackendUnavailableError(RuntimeError):
    """The backend exists in the registry but cannot run here (not built, or no device)."""


def get_backend(name: str | ModuleType | None = None) -> ModuleType:
    """Return the kernel table for ``name`` (``None`` means the default backend)."""
    if isinstance(name, ModuleType):
        return name
    if name is None:
        name = default_backend_name()
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(f"backend={name!r} is not a known backend; expected one of "
                         f"{', '.join(map(repr, BACKEND_NAMES))}")
    if name not in _loaded:
        module = importlib.import_module(f".{_MODULES[name]}", __name__)
        check = getattr(module, "check_available", None)
        if check is not None:
            check()
        missing = [k for k in KERNELS if not hasattr(module, k)]
        if missing:
            raise BackendUnavailableError(
                f"backend {name!r} does not implement kernels {missing}")
        _loaded[name] = module
    return _loaded[name]


def default_backend_name() -> str:
    """The default backend: set by :func:`set_default_backend`, else ``MINICOND_BACKEND``,
    else ``"numba"``."""
    if _default:
        return _default[-1]
    name = os.environ.get("MINICOND_BACKEND", "numba")
    if name not in BACKEND_NAMES:
        raise ValueError(f"MINICOND_BACKEND={name!r} is not a known backend; expected one of "
                         f"{', '.join(map(repr, BACKEND_NAMES))}")
    return name


def set_default_backend(name: str) -> None:
    """Make ``name`` the backend that new tensors use when none is given."""
    get_backend(name)  # fail now, with the backend's own message, if it cannot run
    _default[:] = [name]
