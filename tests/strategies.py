"""The test suite's hypothesis strategies: minicond's own (``minicond.testing.strategies``)
plus the settings shared by tests that take pytest fixtures."""

from hypothesis import HealthCheck, settings

from minicond.testing.strategies import *  # noqa: F403
from minicond.testing.strategies import __all__  # noqa: F401

# The backend/size_limit fixtures are plain values that are safe to share across examples;
# hypothesis objects to function-scoped fixtures unless told so. Inherits the loaded profile.
fixture_settings = settings(suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
