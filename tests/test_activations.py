"""Activations (tanh, GELU exact and tanh form, leaky ReLU, softplus, hard swish) and the
elementwise maximum/minimum against PyTorch in float64, on every backend: outputs and input
gradients under a random cotangent, PyTorch's choices at the kinks, all-element gradient
checks, and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import compare_with_torch, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import fixture_settings

import minicond as mc

F = mc.functional

# name -> (minicond function, PyTorch function)
ACTIVATIONS = {
    "tanh": (F.tanh, torch.tanh),
    "tanh method": (lambda x: x.tanh(), lambda x: x.tanh()),
    "gelu": (F.gelu, TF.gelu),
    "gelu tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: TF.gelu(x, approximate="tanh")),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu),
    "leaky_relu 0.2": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    "softplus": (F.softplus, TF.softplus),
    "softplus beta 2 threshold 5": (lambda x: F.softplus(x, beta=2.0, threshold=5.0),
                                    lambda x: TF.softplus(x, beta=2.0, threshold=5.0)),
    "softplus beta 0.5": (lambda x: F.softplus(x, beta=0.5), lambda x: TF.softplus(x, beta=0.5)),
    "hardswish": (F.hardswish, TF.hardswish),
}
# Points where a piece changes: the subgradient taken there must be PyTorch's.
KINKS = np.array([0.0, -3.0, 3.0, 2.5, 20.0, 40.0])


@st.composite
def values(draw, size_limit: int):
    shape = tuple(draw(st.lists(st.integers(1, size_limit), min_size=0, max_size=3),
                       label="shape"))
    seed = draw(st.integers(0, 2**16), label="seed")
    scale = draw(st.sampled_from([0.5, 3.0, 30.0]), label="scale")
    x = scale * np.random.default_rng(seed).standard_normal(shape)
    x.flat[:len(KINKS)] = KINKS[:x.size]
    return x


@pytest.mark.parametrize("name", ACTIVATIONS)
@settings(fixture_settings, max_examples=10)
@given(data=st.data())
def test_activation_matches_torch(backend, size_limit, name, data):
    ours, theirs = ACTIVATIONS[name]
    x = data.draw(values(size_limit))
    compare_with_torch(ours, theirs, [x], backend=backend, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradcheck(name):
    """On the reference backend; the other backends are held to PyTorch above."""
    ours, _ = ACTIVATIONS[name]
    # away from the kinks (finite differences across one measure a jump, not a derivative)
    x = np.array([[-4.1, -2.2, -0.7, 0.3], [0.9, 1.7, 2.9, 4.4]])
    gradcheck(ours, [x])


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.filterwarnings("ignore:.*encountered in scalar multiply:RuntimeWarning")
def test_activation_extremes(backend, name, dtype):
    """Huge, infinite and NaN inputs give PyTorch's float64 values (rounded to ``dtype``):
    no overflow turns into NaN, and NaN stays NaN."""
    ours, theirs = ACTIVATIONS[name]
    x = np.array([-np.inf, -1e30, -1e4, -88.0, 88.0, 1e4, 1e30, np.inf, np.nan])
    with np.errstate(over="ignore", invalid="ignore"):
        got = ours(mc.tensor(x, dtype=dtype, backend=backend)).numpy()
    want = theirs(torch.tensor(x, dtype=torch.float64)).numpy().astype(dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
    assert got.dtype == np.dtype(dtype)


def test_gelu_at_known_points():
    x = mc.tensor(np.array([0.0, 1.0, -1.0]), dtype="float64")
    # Φ(1) = 0.841344746068543
    np.testing.assert_allclose(F.gelu(x).numpy(), [0.0, 0.841344746068543, -0.158655253931457],
                               rtol=1e-14)


# --- maximum / minimum -------------------------------------------------------------------------

@st.composite
def broadcast_pair(draw, size_limit: int):
    a = tuple(draw(st.lists(st.integers(1, size_limit), min_size=0, max_size=3)))
    b = a[draw(st.integers(0, len(a))):]
    b = tuple(1 if draw(st.booleans()) else n for n in b)
    if draw(st.booleans()):
        a, b = b, a
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    # a coarse grid makes ties, where the gradient is split
    return np.round(2 * rng.standard_normal(a)), np.round(2 * rng.standard_normal(b))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@settings(fixture_settings, max_examples=20)
@given(data=st.data())
def test_maximum_minimum_match_torch(backend, size_limit, name, data):
    a, b = data.draw(broadcast_pair(size_limit))
    compare_with_torch(getattr(F, name), getattr(torch, name), [a, b], backend=backend)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_and_pass_nan(backend, name):
    a = mc.tensor(np.array([1.0, 2.0, 5.0, np.nan]), dtype="float64", requires_grad=True,
                  backend=backend)
    b = mc.tensor(np.array([1.0, 3.0, 4.0, 0.0]), dtype="float64", requires_grad=True,
                  backend=backend)
    y = getattr(F, name)(a, b)
    y.backward(np.array([2.0, 2.0, 2.0, 2.0]))
    assert np.isnan(y.numpy()[3])
    wins = [2.0, 0.0, 2.0] if name == "maximum" else [2.0, 2.0, 0.0]
    np.testing.assert_array_equal(a.grad.numpy()[:3], [1.0, *wins[1:]])
    np.testing.assert_array_equal(b.grad.numpy()[:3], [1.0, 2.0 - wins[1], 2.0 - wins[2]])
    # PyTorch passes the whole gradient to both inputs where a NaN is compared
    np.testing.assert_array_equal([a.grad.numpy()[3], b.grad.numpy()[3]], [2.0, 2.0])


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_gradcheck(name):
    a = np.array([[0.3, -1.2, 2.0], [1.1, 0.4, -0.6]])
    b = np.array([[0.1, 0.5, -0.9]])                # broadcast over rows; no ties
    gradcheck(getattr(F, name), [a, b])


def test_maximum_with_a_number_and_as_methods():
    x = mc.tensor(np.array([-1.0, 0.5, 2.0]), dtype="float64")
    np.testing.assert_array_equal(F.maximum(x, 0.5).numpy(), [0.5, 0.5, 2.0])
    np.testing.assert_array_equal(F.minimum(x, 0.5).numpy(), [-1.0, 0.5, 0.5])
    np.testing.assert_array_equal(x.maximum(x * 0.5).numpy(), [-0.5, 0.5, 2.0])
    np.testing.assert_array_equal(x.minimum(np.zeros(3)).numpy(), [-1.0, 0.0, 0.0])


# --- one_hot -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,num_classes", [((5,), -1), ((2, 3), 7), ((0,), 4), ((), 3)])
def test_one_hot_matches_torch(backend, shape, num_classes):
    labels = np.random.default_rng(0).integers(0, 3, size=shape)
    got = F.one_hot(mc.tensor(labels, backend=backend), num_classes)
    want = TF.one_hot(torch.from_numpy(labels), num_classes).numpy()
    assert got.dtype == np.int64 and not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), want)


# --- argument errors ---------------------------------------------------------------------------

def _x():
    return mc.tensor(np.zeros(3), backend="numpy")


@pytest.mark.parametrize("call,error,match", [
    (lambda: F.tanh(np.zeros(3)), TypeError, "tanh: x must be a minicond Tensor"),
    (lambda: F.gelu(_x(), approximate="fast"), ValueError, "gelu: approximate='fast'"),
    (lambda: F.gelu(np.zeros(3)), TypeError, "gelu: x"),
    (lambda: F.leaky_relu(_x(), "0.1"), TypeError, "leaky_relu: negative_slope='0.1'"),
    (lambda: F.leaky_relu(_x(), float("nan")), ValueError, "negative_slope=nan must be finite"),
    (lambda: F.leaky_relu(_x(), inplace=True), ValueError, "leaky_relu: inplace=True"),
    (lambda: F.softplus(_x(), beta=0), ValueError, "softplus: beta=0"),
    (lambda: F.softplus(_x(), threshold=None), TypeError, "softplus: threshold=None"),
    (lambda: F.hardswish(_x(), inplace=True), ValueError, "hardswish: inplace=True"),
    (lambda: F.maximum(np.zeros(3), _x()), TypeError, "maximum: input"),
    (lambda: F.maximum(_x(), [1.0, 2.0, 3.0]), TypeError, "maximum: other: .*list"),
    (lambda: F.minimum(_x(), np.zeros(2)), ValueError, r"minimum: other: .*\(3,\) and \(2,\)"),
    (lambda: F.tanh(mc.tensor([1, 2])), TypeError, "Tanh: got a tensor of dtype int64"),
    (lambda: F.one_hot(_x()), TypeError, "one_hot: tensor must be an int64 tensor"),
    (lambda: F.one_hot(np.arange(3)), TypeError, "one_hot: tensor must be a minicond Tensor"),
    (lambda: F.one_hot(mc.tensor([0, -1])), ValueError, "one_hot: class indices must be >= 0"),
    (lambda: F.one_hot(mc.tensor([0, 3]), 3), ValueError, "index 3 is out of range for "
                                                          "num_classes=3"),
    (lambda: F.one_hot(mc.tensor([0]), -2), ValueError, "one_hot: num_classes=-2 must be >= -1"),
    (lambda: F.one_hot(mc.tensor(np.zeros(0, dtype=np.int64))), ValueError, "cannot be inferred"),
])
def test_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


SPECIAL = st.sampled_from([0.0, float("nan"), float("inf"), float("-inf")])


@given(slope=st.one_of(st.floats(-1e3, 1e3), SPECIAL, st.text(max_size=2), st.none(),
                       st.booleans()),
       beta=st.one_of(st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3), SPECIAL,
                      st.integers(-3, 3), st.none()),
       approximate=st.one_of(st.sampled_from(["none", "tanh"]), st.text(max_size=4)))
def test_drawn_arguments_are_accepted_or_named(slope, beta, approximate):
    """Every drawn argument either works (finite output for finite input) or raises a
    ValueError/TypeError that names the function and the argument."""
    x = mc.tensor(np.linspace(-3, 3, 7), dtype="float64", backend="numpy")
    calls = [("leaky_relu", "negative_slope", lambda: F.leaky_relu(x, slope)),
             ("softplus", "beta", lambda: F.softplus(x, beta=beta)),
             ("gelu", "approximate", lambda: F.gelu(x, approximate=approximate))]
    for fn, arg, call in calls:
        try:
            y = call()
        except (TypeError, ValueError) as err:
            assert str(err).startswith(f"{fn}: {arg}="), str(err)
        else:
            assert np.all(np.isfinite(y.numpy())), (fn, slope, beta, approximate)
