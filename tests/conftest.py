"""Shared test configuration: hypothesis profiles and the backend fixture.

Every parity, gradcheck and property test takes the ``backend`` fixture and so runs once per
backend. A backend that cannot run here is skipped with its reason shown (``pytest -ra``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minicond as mc
from minicond.backends import BACKEND_NAMES, BackendUnavailableError, get_backend

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=40, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "dev", deadline=None, max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def backend_available(name: str) -> str | None:
    """None when ``name`` can run here, else the reason it cannot."""
    try:
        get_backend(name)
    except BackendUnavailableError as err:
        return str(err)
    return None


@pytest.fixture(params=BACKEND_NAMES)
def backend(request) -> str:
    """The backend name; skipped, with the reason, where that backend cannot run."""
    reason = backend_available(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


@pytest.fixture
def size_limit(backend) -> int:
    """Largest spatial size and channel count for a drawn shape on this backend: tiny in the
    CUDA simulator, which runs one Python thread per CUDA thread."""
    return 4 if (backend == "cuda" and SIMULATOR) else 8


@pytest.fixture(autouse=True)
def _seed():
    mc.manual_seed(0)
    np.random.seed(0)
