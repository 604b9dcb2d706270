"""A layer given an input that does not fit says so in its own terms: the layer's name and its
own argument (``in_channels``), not the name of a function it calls inside."""

from __future__ import annotations

import numpy as np
import pytest

import minicond as mc


def _x(shape, dtype="float32", backend="numpy"):
    return mc.tensor(np.ones(shape), dtype=dtype, backend=backend)


@pytest.mark.parametrize("make", [
    lambda: mc.nn.CondConv2d(3, 8, 3, backend="numpy"),
    lambda: mc.nn.Conv2d(3, 8, 3, backend="numpy"),
    lambda: mc.nn.Router(3, 4, backend="numpy"),
])
def test_wrong_channel_count_names_the_layer_and_in_channels(make):
    layer = make()
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"^{name}: x has shape \(2, 4, 8, 8\).*"
                                         r"expected in_channels=3"):
        layer(_x((2, 4, 8, 8)))


def test_linear_wrong_features_names_in_features():
    layer = mc.nn.Linear(3, 2, backend="numpy")
    with pytest.raises(ValueError, match=r"^Linear: x has shape \(5, 4\).*in_features=3"):
        layer(_x((5, 4)))


@pytest.mark.parametrize("make", [
    lambda: mc.nn.CondConv2d(3, 8, 3, backend="numpy"),
    lambda: mc.nn.Conv2d(3, 8, 3, backend="numpy"),
])
def test_wrong_dtype_names_the_layer_not_its_router(make):
    layer = make()
    name = type(layer).__name__
    with pytest.raises(TypeError, match=rf"^{name}: x has dtype float64 but the layer's "
                                        "parameters are float32"):
        layer(_x((2, 3, 8, 8), dtype="float64"))


def test_wrong_backend_names_the_layer_not_its_router():
    layer = mc.nn.CondConv2d(3, 8, 3, backend="numpy")
    with pytest.raises(ValueError, match=r"^CondConv2d: x is on backend 'numba' but the "
                                         r"layer's parameters are on 'numpy'"):
        layer(_x((2, 3, 8, 8), backend="numba"))


def test_given_routing_weights_the_check_still_runs_first():
    layer = mc.nn.CondConv2d(3, 8, 3, num_experts=2, backend="numpy")
    r = _x((2, 2))
    with pytest.raises(ValueError, match="^CondConv2d: .*in_channels=3"):
        layer(_x((2, 5, 8, 8)), routing_weights=r)
