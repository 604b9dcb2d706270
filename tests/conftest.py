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
# A short run of every test on a real GPU (benchmarks/gpu_check.sh), where device time is scarce.
settings.register_profile(
    "gpu", deadline=None, derandomize=True, max_examples=6, print_blob=True,
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


def require_backend(name: str) -> str:
    """``name``, or a skip of the current test with the reason that backend cannot run."""
    reason = backend_available(name)
    if reason is not None:
        pytest.skip(reason)
    return name


def limit_for(name: str) -> int:
    """Largest spatial size and channel count for a drawn shape on backend ``name``: tiny in
    the CUDA simulator, which runs one Python thread per CUDA thread."""
    return 4 if (name == "cuda" and SIMULATOR) else 8


@pytest.fixture(params=BACKEND_NAMES)
def backend(request) -> str:
    """The backend name; skipped, with the reason, where that backend cannot run."""
    return require_backend(request.param)


@pytest.fixture
def size_limit(backend) -> int:
    return limit_for(backend)


SIMULATOR_EXAMPLES = 8


@pytest.fixture(autouse=True)
def _fewer_examples_in_simulator(request):
    """Cap hypothesis examples for cuda runs in the simulator, which executes every CUDA
    thread as a Python thread. The same tests run in full on the CPU backends and on a GPU.

    Hypothesis reads a test's settings when the test is called, so swapping them for the
    duration of this one parametrisation leaves the other backends' runs untouched."""
    callspec = getattr(request.node, "callspec", None)
    fn = request.function
    current = getattr(fn, "_hypothesis_internal_use_settings", None)
    if not (SIMULATOR and callspec is not None and "cuda" in callspec.params.values()
            and current is not None and current.max_examples > SIMULATOR_EXAMPLES):
        yield
        return
    fn._hypothesis_internal_use_settings = settings(current, max_examples=SIMULATOR_EXAMPLES)
    try:
        yield
    finally:
        fn._hypothesis_internal_use_settings = current


@pytest.fixture(autouse=True)
def _seed():
    mc.manual_seed(0)
    np.random.seed(0)
