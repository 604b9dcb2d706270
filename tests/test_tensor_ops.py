"""Tensor ops against PyTorch (float64, random cotangent, every input's gradient) on shapes
drawn by hypothesis, each also checked by finite differences over every element."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import compare_with_torch, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes
from strategies import fixture_settings

import minicond as mc

# The backend fixtures are function-scoped but constant for a test's examples.


def side(size_limit: int) -> int:
    """Longest axis of a drawn tensor: every element is finite-differenced, so keep it small."""
    return max(2, size_limit // 2)


def values(shape, seed, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def away_from_zero(shape, seed, low=0.1, high=1.5):
    """Values of either sign with |v| >= low: kinks and poles stay out of finite differences."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def distinct(shape, seed):
    """Values at least 1/size apart, so a max has a unique argmax and a clean derivative."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.linspace(-1.0, 1.0, n)).reshape(shape)


def check(mc_fn, torch_fn, arrays, backend):
    compare_with_torch(mc_fn, torch_fn, arrays, backend, rtol=1e-10, atol=1e-12)
    gradcheck(mc_fn, arrays, backend)


def shapes(size_limit, min_dims=1, max_dims=3):
    return array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1,
                        max_side=side(size_limit))


seeds = st.integers(0, 2**16)


# --- elementwise arithmetic -------------------------------------------------------------------

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@fixture_settings
@given(op=st.sampled_from(sorted(BINARY)), seed=seeds, data=st.data())
def test_binary_ops(backend, size_limit, op, seed, data):
    bs = data.draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                 max_side=side(size_limit)))
    a, b = bs.input_shapes
    check(BINARY[op], BINARY[op], [values(a, seed), away_from_zero(b, seed + 1, 0.5, 2.0)],
          backend)


@fixture_settings
@given(seed=seeds, data=st.data())
def test_neg(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit, min_dims=0))
    check(lambda a: -a, lambda a: -a, [values(shape, seed)], backend)


@fixture_settings
@given(p=st.sampled_from([2, 3, -1, 0, 0.5, 1.5, -2.5]), seed=seeds, data=st.data())
def test_scalar_power(backend, size_limit, p, seed, data):
    shape = data.draw(shapes(size_limit))
    # non-integer powers are real only for positive bases
    a = away_from_zero(shape, seed, 0.5, 2.0)
    if p != int(p):
        a = np.abs(a)
    check(lambda x: x ** p, lambda x: x ** p, [a], backend)


@fixture_settings
@given(seed=seeds, data=st.data())
def test_exp(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit))
    check(lambda x: x.exp(), torch.exp, [values(shape, seed, -2.0, 2.0)], backend)


@fixture_settings
@given(seed=seeds, data=st.data())
def test_log(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit))
    check(lambda x: x.log(), torch.log, [values(shape, seed, 0.2, 3.0)], backend)


# --- reductions -------------------------------------------------------------------------------

@st.composite
def reduction_dims(draw, ndim):
    """None, one axis (possibly negative) or a tuple of distinct axes."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def torch_dim(dim, ndim):
    return tuple(range(ndim)) if dim is None else dim


@fixture_settings
@given(op=st.sampled_from(["sum", "mean"]), keepdim=st.booleans(), seed=seeds, data=st.data())
def test_sum_mean(backend, size_limit, op, keepdim, seed, data):
    shape = data.draw(shapes(size_limit))
    dim = data.draw(reduction_dims(len(shape)))

    def mc_fn(x):
        return getattr(x, op)(dim, keepdim=keepdim)

    def th_fn(x):
        return getattr(x, op)(dim=torch_dim(dim, len(shape)), keepdim=keepdim)

    check(mc_fn, th_fn, [values(shape, seed)], backend)


@fixture_settings
@given(keepdim=st.booleans(), seed=seeds, data=st.data())
def test_max_matches_amax_and_gradcheck(backend, size_limit, keepdim, seed, data):
    shape = data.draw(shapes(size_limit))
    dim = data.draw(reduction_dims(len(shape)))
    check(lambda x: x.max(dim, keepdim=keepdim),
          lambda x: torch.amax(x, dim=torch_dim(dim, len(shape)), keepdim=keepdim),
          [distinct(shape, seed)], backend)


@fixture_settings
@given(keepdim=st.booleans(), seed=seeds, data=st.data())
def test_max_with_ties_shares_the_gradient_like_amax(backend, size_limit, keepdim, seed, data):
    shape = data.draw(shapes(size_limit))
    dim = data.draw(reduction_dims(len(shape)))
    # three distinct values: most maxima are tied
    a = np.random.default_rng(seed).integers(-1, 2, size=shape).astype(np.float64)
    compare_with_torch(lambda x: x.max(dim, keepdim=keepdim),
                       lambda x: torch.amax(x, dim=torch_dim(dim, len(shape)), keepdim=keepdim),
                       [a], backend, rtol=1e-12, atol=1e-12)


def test_max_tie_gradient_is_split_equally(backend):
    x = mc.tensor(np.array([[1.0, 3.0, 3.0, 3.0], [0.0, 2.0, 2.0, -1.0]]), requires_grad=True,
                  backend=backend)
    x.max(1).backward(np.array([3.0, 1.0]))
    np.testing.assert_allclose(x.grad.numpy(), [[0, 1, 1, 1], [0, 0.5, 0.5, 0]], rtol=1e-12)


# --- shape ops --------------------------------------------------------------------------------

@fixture_settings
@given(seed=seeds, data=st.data())
def test_reshape(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit))
    new = list(data.draw(st.permutations(shape)))
    if len(new) > 1 and data.draw(st.booleans()):  # merge two neighbouring axes
        i = data.draw(st.integers(0, len(new) - 2))
        new[i:i + 2] = [new[i] * new[i + 1]]
    if data.draw(st.booleans()):  # let one axis be inferred
        new[data.draw(st.integers(0, len(new) - 1))] = -1
    as_tuple = data.draw(st.booleans())
    check(lambda x: x.reshape(tuple(new)) if as_tuple else x.reshape(*new),
          lambda x: x.reshape(new), [values(shape, seed)], backend)


@fixture_settings
@given(seed=seeds, data=st.data())
def test_transpose(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit, min_dims=2, max_dims=4))
    n = len(shape)
    d0, d1 = data.draw(st.integers(-n, n - 1)), data.draw(st.integers(-n, n - 1))
    check(lambda x: x.transpose(d0, d1), lambda x: x.transpose(d0, d1), [values(shape, seed)],
          backend)


@fixture_settings
@given(seed=seeds, data=st.data())
def test_permute(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit, max_dims=4))
    n = len(shape)
    perm = data.draw(st.permutations(range(n)))
    perm = [p - n if data.draw(st.booleans()) else p for p in perm]
    check(lambda x: x.permute(*perm), lambda x: x.permute(*perm), [values(shape, seed)], backend)


@fixture_settings
@given(seed=seeds, data=st.data())
def test_flatten(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit, max_dims=4))
    start = data.draw(st.integers(-len(shape), len(shape) - 1))
    check(lambda x: x.flatten(start), lambda x: torch.flatten(x, start), [values(shape, seed)],
          backend)


# --- matmul -----------------------------------------------------------------------------------

@fixture_settings
@given(seed=seeds, data=st.data())
def test_matmul_batched_with_broadcast_batch_dims(backend, size_limit, seed, data):
    s = side(size_limit)
    batch = data.draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2,
                                                    max_side=s))
    m, k, n = (data.draw(st.integers(1, s)) for _ in range(3))
    a_shape = batch.input_shapes[0] + (m, k)
    b_shape = batch.input_shapes[1] + (k, n)
    a, b = values(a_shape, seed), values(b_shape, seed + 1)
    check(lambda a, b: a @ b, torch.matmul, [a, b], backend)
    ta, tb = (mc.tensor(v, backend=backend) for v in (a, b))
    np.testing.assert_array_equal(ta.matmul(tb).numpy(), (ta @ tb).numpy())


# --- activations ------------------------------------------------------------------------------

@fixture_settings
@given(seed=seeds, data=st.data())
def test_relu(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit))
    check(lambda x: x.relu(), torch.relu, [away_from_zero(shape, seed)], backend)


def test_relu_gradient_at_zero_is_zero_like_torch(backend):
    a = np.array([-1.0, 0.0, 0.0, 2.0])
    compare_with_torch(lambda x: x.relu(), torch.relu, [a], backend)


@fixture_settings
@given(seed=seeds, data=st.data())
def test_sigmoid(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit))
    check(lambda x: x.sigmoid(), torch.sigmoid, [values(shape, seed, -4.0, 4.0)], backend)


@fixture_settings
@given(dim=st.integers(-3, 2), seed=seeds, data=st.data())
def test_softmax_and_log_softmax(backend, size_limit, dim, seed, data):
    shape = data.draw(array_shapes(min_dims=3, max_dims=3, max_side=side(size_limit)))
    a = values(shape, seed, -3.0, 3.0)
    check(lambda x: x.softmax(dim), lambda x: torch.softmax(x, dim), [a], backend)
    check(lambda x: x.log_softmax(dim), lambda x: torch.log_softmax(x, dim), [a], backend)


EXTREMES = np.array([-1e30, -1e4, -800.0, -90.0, -1.0, 0.0, 1.0, 90.0, 800.0, 1e4, 1e30])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_stable_for_large_inputs(backend, dtype):
    tdtype = getattr(torch, dtype)
    a = EXTREMES.astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise",
                                                divide="raise"):
        warnings.simplefilter("error")
        x = mc.tensor(a, requires_grad=True, backend=backend)
        y = x.sigmoid()
        y.backward(np.ones_like(a))
    xt = torch.tensor(a, dtype=tdtype, requires_grad=True)
    yt = torch.sigmoid(xt)
    yt.backward(torch.ones_like(yt))
    assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(x.grad.numpy()))
    # atol covers float32 denormals (σ(−90) ≈ 8e-40), which PyTorch flushes to zero
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_is_stable_for_large_inputs(backend, dtype, fn):
    tdtype = getattr(torch, dtype)
    a = np.stack([np.array([1e4, 1e4 - 1.0, -1e4, 0.0]), np.array([-1e4, -1e4 + 3.0, -2e4, -3e4]),
                  np.array([3e4, 3e4, 3e4, 3e4])]).astype(dtype)
    g = np.random.default_rng(0).standard_normal(a.shape).astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise"):
        warnings.simplefilter("error")
        x = mc.tensor(a, requires_grad=True, backend=backend)
        y = getattr(x, fn)(1)
        y.backward(g)
    xt = torch.tensor(a, dtype=tdtype, requires_grad=True)
    yt = getattr(torch, fn)(xt, 1)
    yt.backward(torch.tensor(g))
    assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(x.grad.numpy()))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=tol)


# --- Python scalars and NumPy arrays on either side -------------------------------------------

CONSTANT_OPS = {
    "radd": (lambda x, c: c + x),
    "rsub": (lambda x, c: c - x),
    "rmul": (lambda x, c: c * x),
    "rdiv": (lambda x, c: c / x),
    "add": (lambda x, c: x + c),
    "sub": (lambda x, c: x - c),
    "mul": (lambda x, c: x * c),
    "div": (lambda x, c: x / c),
}


@fixture_settings
@given(op=st.sampled_from(sorted(CONSTANT_OPS)),
       kind=st.sampled_from(["int", "float", "numpy scalar", "array", "broadcast array"]),
       seed=seeds, data=st.data())
def test_operators_with_python_scalars_and_numpy_arrays(backend, size_limit, op, kind, seed,
                                                        data):
    shape = data.draw(shapes(size_limit, min_dims=2))
    rng = np.random.default_rng(seed + 7)
    const = {"int": int(rng.integers(1, 5)) * int(rng.choice([-1, 1])),
             "float": float(rng.uniform(0.5, 2.0)),
             "numpy scalar": np.float64(rng.uniform(0.5, 2.0)),
             "array": away_from_zero(shape, seed + 2, 0.5, 2.0),
             "broadcast array": away_from_zero(shape[-1:], seed + 3, 0.5, 2.0)}[kind]
    fn = CONSTANT_OPS[op]
    th_const = torch.tensor(const) if isinstance(const, np.ndarray) else float(const)
    x_np = away_from_zero(shape, seed, 0.5, 2.0)
    x = mc.tensor(x_np, dtype="float64", requires_grad=True, backend=backend)
    y = fn(x, const)
    assert isinstance(y, mc.Tensor), f"{op} with {kind} returned {type(y).__name__}"
    compare_with_torch(lambda t: fn(t, const), lambda t: fn(t, th_const), [x_np], backend,
                       rtol=1e-12, atol=1e-12)


# --- shape methods, clamp, abs, sqrt, pow, min, var, std ---------------------------------------

few = settings(fixture_settings, max_examples=12)


@few
@given(seed=seeds, data=st.data())
def test_unsqueeze_squeeze_view_and_T(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit, min_dims=0, max_dims=3))
    n = len(shape)
    a = values(shape, seed)
    d = data.draw(st.integers(-n - 1, n))
    check(lambda x: x.unsqueeze(d), lambda x: x.unsqueeze(d), [a], backend)
    ones = tuple(1 if data.draw(st.booleans()) else s for s in shape)
    b = values(ones, seed + 1)
    dim = data.draw(st.none() | st.integers(-max(n, 1), max(n - 1, 0)))
    check(lambda x: x.squeeze(dim), lambda x: x.squeeze() if dim is None else x.squeeze(dim),
          [b], backend)
    check(lambda x: x.view(-1), lambda x: x.view(-1), [a], backend)
    if n == 2:
        check(lambda x: x.T, lambda x: x.T, [a], backend)


def test_T_on_other_ranks_reverses_axes_and_warns_like_torch():
    a = values((2, 3, 4), 0)
    with pytest.warns(UserWarning, match="reverses all its axes"):
        y = mc.tensor(a).T
    np.testing.assert_array_equal(y.numpy(), torch.tensor(a).permute(2, 1, 0).numpy())


@few
@given(seed=seeds, data=st.data(), bounds=st.sampled_from(
    [(-0.5, 0.5), (None, 0.25), (-0.25, None), (0.5, -0.5)]))
def test_clamp(backend, size_limit, seed, data, bounds):
    shape = data.draw(shapes(size_limit))
    lo, hi = bounds
    # on a grid that hits the bounds exactly: PyTorch (2.x) passes no gradient there
    on_grid = np.round(values(shape, seed) * 4) / 4
    compare_with_torch(lambda x: x.clamp(lo, hi), lambda x: x.clamp(lo, hi), [on_grid],
                       backend, rtol=1e-12, atol=1e-12)
    # finite differences only away from the kinks
    off = on_grid + 0.1
    gradcheck(lambda x: x.clamp(min=lo, max=hi), [off], backend)


@few
@given(seed=seeds, data=st.data())
def test_abs_sqrt_pow(backend, size_limit, seed, data):
    shape = data.draw(shapes(size_limit))
    a = away_from_zero(shape, seed)
    check(lambda x: x.abs(), torch.abs, [a], backend)
    check(lambda x: abs(x), torch.abs, [a], backend)
    check(lambda x: x.sqrt(), torch.sqrt, [np.abs(a)], backend)
    check(lambda x: x.pow(3), lambda x: x.pow(3), [a], backend)


@few
@given(seed=seeds, data=st.data())
def test_pow_with_a_tensor_exponent(backend, size_limit, seed, data):
    bs = data.draw(mutually_broadcastable_shapes(num_shapes=2, max_dims=3,
                                                 max_side=side(size_limit)))
    sa, sb = bs.input_shapes
    base, exponent = values(sa, seed, 0.3, 2.0), values(sb, seed + 1, -2.0, 2.0)
    check(lambda a, b: a.pow(b), torch.pow, [base, exponent], backend)
    check(lambda b: 2.5 ** b, lambda b: 2.5 ** b, [exponent], backend)


def test_pow_exponent_gradient_at_a_zero_base_is_zero_like_torch(backend):
    compare_with_torch(lambda a, b: a ** b, torch.pow,
                       [np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 3.0])], backend)


def test_abs_gradient_at_zero_is_zero_like_torch(backend):
    compare_with_torch(lambda x: x.abs(), torch.abs, [np.array([-1.0, 0.0, 0.0, 2.0])],
                       backend)


@few
@given(keepdim=st.booleans(), seed=seeds, data=st.data())
def test_min(backend, size_limit, keepdim, seed, data):
    shape = data.draw(shapes(size_limit))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = distinct(shape, seed)
    check(lambda x: x.min(), torch.min, [a], backend)
    check(lambda x: x.min(dim, keepdim=keepdim).values,
          lambda x: x.min(dim, keepdim=keepdim).values, [a], backend)
    # ties: the values' gradient goes to the returned index only; the full min shares it
    tied = np.random.default_rng(seed).integers(-1, 2, size=shape).astype(np.float64)
    compare_with_torch(lambda x: x.min(dim, keepdim).values,
                       lambda x: x.min(dim, keepdim).values, [tied], backend)
    compare_with_torch(lambda x: x.min(), torch.min, [tied], backend)
    got = mc.tensor(tied, backend=backend).min(dim, keepdim)
    want = torch.tensor(tied).min(dim, keepdim)
    assert got.indices.dtype == np.int64 and not got.indices.requires_grad
    np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())


@few
@given(keepdim=st.booleans(), seed=seeds, data=st.data(), fn=st.sampled_from(["var", "std"]),
       how=st.sampled_from(["default", "unbiased", "biased", "correction"]))
def test_var_std(backend, size_limit, keepdim, seed, data, fn, how):
    shape = data.draw(shapes(size_limit))
    dim = data.draw(reduction_dims(len(shape)))
    axes = torch_dim(dim, len(shape))
    n = int(np.prod([shape[d] for d in ((axes,) if isinstance(axes, int) else axes)]))
    kwargs = {"default": {}, "unbiased": {"unbiased": True}, "biased": {"unbiased": False},
              "correction": {"correction": data.draw(st.sampled_from([0, 1, 2]))}}[how]
    if n <= kwargs.get("correction", 1 if kwargs.get("unbiased", True) else 0):
        kwargs = {"unbiased": False}  # n − c ≤ 0 is NaN/inf in both; tested below
    check(lambda x: getattr(x, fn)(dim, keepdim=keepdim, **kwargs),
          lambda x: getattr(torch, fn)(x, dim=torch_dim(dim, len(shape)), keepdim=keepdim,
                                       **kwargs), [values(shape, seed)], backend)


def test_std_gradient_of_a_constant_slice_is_zero_like_torch(backend):
    a = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    compare_with_torch(lambda x: x.std(1), lambda x: x.std(1), [a], backend)
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(mc.tensor([1.0], backend=backend).var().item())


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda x: x.clamp(), ValueError, "clamp: at least one of min and max"),
    (lambda x: x.clamp(min="a"), TypeError, "clamp: min='a'"),
    (lambda x: x.unsqueeze(3), ValueError, "unsqueeze: dim=3"),
    (lambda x: x.squeeze(1.5), TypeError, "squeeze: dim=1.5"),
    (lambda x: x.min(2), ValueError, "min: dim=2"),
    (lambda x: x.var(0, unbiased=True, correction=1), ValueError, "var: give unbiased"),
    (lambda x: x.std(correction=-1), ValueError, "std: correction=-1"),
    (lambda x: x.var(unbiased="yes"), TypeError, "var: unbiased='yes'"),
    (lambda x: x.pow("2"), TypeError, "pow: exponent='2'"),
    (lambda x: x.pow(mc.tensor(np.ones(4), backend="numpy")), ValueError, "pow: x of shape"),
])
def test_bad_arguments_name_the_argument(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(mc.tensor(np.ones((2, 3)), backend="numpy"))
