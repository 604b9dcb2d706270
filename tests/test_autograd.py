"""The autograd engine: gradient accumulation, shared and diamond graphs, no_grad, detach,
backward's arguments, central un-broadcasting, and dtype preservation through every op."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compare_with_torch, random_cotangent
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from strategies import fixture_settings

import minicond as mc
import minicond.functional as F

# The backend fixture is function-scoped but constant for a test's examples.


def rand(shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def leaf(a, backend, dtype="float64", requires_grad=True):
    return mc.tensor(a, dtype=dtype, requires_grad=requires_grad, backend=backend)


def torch_leaf(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


# --- accumulation and graph shapes ------------------------------------------------------------

def test_leaf_gradients_accumulate_across_backward_calls(backend):
    a = rand((3, 4))
    c1, c2 = random_cotangent((3, 4), 1), random_cotangent((3, 4), 2)
    x = leaf(a, backend)
    (x.exp() * c1).sum().backward()
    first = x.grad.numpy()
    (x * x * c2).sum().backward()

    xt = torch_leaf(a)
    (xt.exp() * torch.tensor(c1)).sum().backward()
    np.testing.assert_allclose(first, xt.grad.numpy(), rtol=1e-12)
    (xt * xt * torch.tensor(c2)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), np.exp(a) * c1 + 2 * a * c2, rtol=1e-12)


def test_zero_grad_resets_accumulation(backend):
    x = leaf(rand((2, 3)), backend)
    (x * 3.0).sum().backward()
    x.zero_grad()
    assert x.grad is None
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


def test_only_leaves_that_require_grad_receive_gradients(backend):
    x = leaf(rand((3,)), backend)
    w = leaf(rand((3,), 1), backend, requires_grad=False)
    h = x * w
    (h.exp()).sum().backward()
    assert w.grad is None
    assert h.grad is None, "an intermediate tensor must not keep a gradient"
    assert not h.is_leaf and x.is_leaf
    np.testing.assert_allclose(x.grad.numpy(), w.numpy() * np.exp(x.numpy() * w.numpy()),
                               rtol=1e-12)


def test_tensor_used_twice_adds_its_gradients(backend):
    a = rand((4, 3))
    compare_with_torch(lambda x: x * x + x, lambda x: x * x + x, [a], backend)
    x = leaf(a, backend)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * a + 1, rtol=1e-12)


@fixture_settings
@given(seed=st.integers(0, 2**16))
def test_diamond_graph_matches_torch(backend, seed):
    """x → a → (b, c) → d: the gradient of a is the sum over both paths."""
    x_np, w_np = rand((3, 4), seed), rand((4, 2), seed + 1)

    def build(x, w):
        a = x.exp() if isinstance(x, mc.Tensor) else torch.exp(x)
        b = a * 2.0
        c = (a @ w).sigmoid() if isinstance(x, mc.Tensor) else torch.sigmoid(a @ w)
        return b.sum(1, keepdim=True) * c + a.mean()

    compare_with_torch(build, build, [x_np, w_np], backend)


def test_deep_chain_does_not_recurse():
    """Backward walks the graph with an explicit stack: a long chain must not overflow.
    (A property of the engine, not of a backend.)"""
    x = leaf(np.array([0.5]), "numpy")
    y = x
    for _ in range(3000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0])


# --- recording on and off ---------------------------------------------------------------------

def test_no_grad_records_nothing(backend):
    x = leaf(rand((2, 2)), backend)
    with mc.no_grad():
        assert not mc.is_grad_enabled()
        y = (x * 2.0).exp().sum()
        with mc.enable_grad():
            z = (x * 3.0).sum()
    assert mc.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    assert x.grad is None
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 3.0))


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with mc.no_grad():
            raise ZeroDivisionError
    assert mc.is_grad_enabled()


def test_detach_cuts_the_graph_and_keeps_values(backend):
    a = rand((3, 2))
    x = leaf(a, backend)
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), 2 * a)
    # d is a constant: the gradient of x * d only reaches x through the first factor
    (x * d).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * a, rtol=1e-12)


def test_requires_grad_underscore_on_non_leaf_raises(backend):
    x = leaf(rand((2,)), backend)
    y = x * 2.0
    with pytest.raises(ValueError, match="requires_grad"):
        y.requires_grad_()
    c = leaf(rand((2,)), backend, requires_grad=False)
    assert c.requires_grad_() is c and c.requires_grad
    (c * 4.0).sum().backward()
    np.testing.assert_array_equal(c.grad.numpy(), [4.0, 4.0])


# --- backward's arguments ---------------------------------------------------------------------

@fixture_settings
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).filter(
    lambda s: int(np.prod(s)) > 1))
def test_non_scalar_backward_without_grad_raises(backend, shape):
    y = leaf(rand(shape), backend) * 2.0
    with pytest.raises(ValueError, match="grad"):
        y.backward()


def test_one_element_backward_without_grad_is_allowed(backend):
    x = leaf(rand((1, 1)), backend)
    (x * 5.0).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[5.0]])


@fixture_settings
@given(data=st.data())
def test_backward_with_wrong_grad_shape_raises(backend, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    bad = tuple(data.draw(st.lists(st.integers(1, 4), min_size=0, max_size=3).filter(
        lambda s: tuple(s) != shape)))
    y = leaf(rand(shape), backend).exp()
    with pytest.raises(ValueError, match="grad has shape"):
        y.backward(np.ones(bad))


def test_backward_with_explicit_grad_matches_torch(backend):
    a, g = rand((3, 4)), random_cotangent((3, 4))
    x = leaf(a, backend)
    x.sigmoid().backward(g)
    xt = torch_leaf(a)
    torch.sigmoid(xt).backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12)
    x2 = leaf(a, backend)
    x2.sigmoid().backward(mc.tensor(g, dtype="float64", backend=backend))
    np.testing.assert_allclose(x2.grad.numpy(), xt.grad.numpy(), rtol=1e-12)


def test_backward_on_tensor_without_grad_raises(backend):
    x = leaf(rand((2,)), backend, requires_grad=False)
    with pytest.raises(RuntimeError, match="does not require grad"):
        (x * 2.0).sum().backward()


# --- un-broadcasting --------------------------------------------------------------------------

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((3, 1, 4), (5, 4)), ((5, 4), (3, 1, 4)), ((1,), (2, 3)),
                                    ((2, 1), (1, 3)), ((), (2, 2)), ((4, 1, 1), (4, 3, 2))])
def test_unbroadcast_fixed_shapes_match_torch(backend, op, shapes):
    a, b = rand(shapes[0], 1), rand(shapes[1], 2, low=0.5, high=2.0)
    compare_with_torch(BINARY[op], BINARY[op], [a, b], backend, rtol=1e-10, atol=1e-12)


@fixture_settings
@given(op=st.sampled_from(sorted(BINARY)),
       shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
       seed=st.integers(0, 2**16))
def test_unbroadcast_drawn_shapes_match_torch(backend, op, shapes, seed):
    a, b = shapes.input_shapes
    x, y = rand(a, seed), rand(b, seed + 1, low=0.5, high=2.0)
    compare_with_torch(BINARY[op], BINARY[op], [x, y], backend, rtol=1e-10, atol=1e-12)


# --- dtype preservation -----------------------------------------------------------------------

def _pos(shape, seed=0):
    return rand(shape, seed, low=0.5, high=2.0)


# name -> (function of tensors, input arrays)
OPS = {
    "add": (lambda a, b: a + b, [rand((2, 3)), rand((3,), 1)]),
    "sub": (lambda a, b: a - b, [rand((2, 3)), rand((2, 1), 1)]),
    "mul": (lambda a, b: a * b, [rand((2, 3)), rand((2, 3), 1)]),
    "div": (lambda a, b: a / b, [rand((2, 3)), _pos((2, 3), 1)]),
    "neg": (lambda a: -a, [rand((2, 3))]),
    "pow": (lambda a: a ** 1.5, [_pos((2, 3))]),
    "exp": (lambda a: a.exp(), [rand((2, 3))]),
    "log": (lambda a: a.log(), [_pos((2, 3))]),
    "sum": (lambda a: a.sum(1), [rand((2, 3))]),
    "mean": (lambda a: a.mean(0, keepdim=True), [rand((2, 3))]),
    "max": (lambda a: a.max(1), [rand((2, 3))]),
    "reshape": (lambda a: a.reshape(3, 2), [rand((2, 3))]),
    "transpose": (lambda a: a.transpose(0, 1), [rand((2, 3))]),
    "permute": (lambda a: a.permute(2, 0, 1), [rand((2, 3, 2))]),
    "index": (lambda a: a[[1, 0, 1]], [rand((2, 3))]),
    "matmul": (lambda a, b: a @ b, [rand((2, 2, 3)), rand((3, 4), 1)]),
    "relu": (lambda a: a.relu(), [rand((2, 3))]),
    "sigmoid": (lambda a: a.sigmoid(), [rand((2, 3))]),
    "softmax": (lambda a: a.softmax(1), [rand((2, 3))]),
    "log_softmax": (lambda a: a.log_softmax(0), [rand((2, 3))]),
    "flatten": (lambda a: a.flatten(1), [rand((2, 3, 2))]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, padding=1),
               [rand((2, 2, 4, 4)), rand((3, 2, 3, 3), 1), rand((3,), 2)]),
    "cond_conv2d": (lambda x, r, w, b: F.cond_conv2d(x, r, w, b, stride=2, padding="valid"),
                    [rand((2, 2, 5, 5)), _pos((2, 3), 1), rand((3, 4, 2, 3, 3), 2),
                     rand((3, 4), 3)]),
    "mix_experts": (lambda r, w: F.mix_experts(r, w), [_pos((2, 3)), rand((3, 2, 2), 1)]),
    "pad_reflect": (lambda x: F.pad(x, (1, 2, 0, 1), "reflect"), [rand((1, 2, 3, 4))]),
    "pad_circular": (lambda x: F.pad(x, 1, "circular"), [rand((1, 2, 3, 4))]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [rand((2, 3)), rand((4, 3), 1),
                                                   rand((4,), 2)]),
    "dropout": (lambda x: F.dropout(x, 0.3), [rand((4, 5))]),
    "global_avg_pool2d": (lambda x: F.global_avg_pool2d(x), [rand((2, 3, 2, 2))]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_dtype_is_preserved_through_op_and_gradients(backend, name, dtype):
    fn, arrays = OPS[name]
    inputs = [leaf(a, backend, dtype=dtype) for a in arrays]
    y = fn(*inputs)
    assert y.dtype == np.dtype(dtype), f"{name}: output is {y.dtype}, input {dtype}"
    assert y.numpy().dtype == np.dtype(dtype)
    # a float64 NumPy cotangent must not promote a float32 graph
    (y * random_cotangent(y.shape)).sum().backward()
    for i, t in enumerate(inputs):
        assert t.grad is not None, f"{name}: input {i} got no gradient"
        assert t.grad.dtype == np.dtype(dtype), f"{name}: gradient {i} is {t.grad.dtype}"
        assert t.grad.shape == t.shape


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_python_scalars_and_arrays_keep_the_tensor_dtype(backend, dtype):
    x = leaf(rand((2, 3)), backend, dtype=dtype)
    for y in (x + 1, 2.5 * x, 1.0 - x, 3 / (x + 5.0), x * np.float64(2.0),
              np.ones((2, 3)) + x, np.ones(3, dtype=np.float64) * x, x ** 2):
        assert isinstance(y, mc.Tensor)
        assert y.dtype == np.dtype(dtype)


def test_default_dtype_is_float32():
    assert mc.get_default_dtype() == np.float32
    assert mc.tensor([1.0, 2.0]).dtype == np.float32
    assert mc.tensor(np.arange(3)).dtype == np.int64  # integers stay integers, as in PyTorch
    assert mc.tensor(np.arange(3), dtype="float32").dtype == np.float32
    assert mc.tensor(np.zeros(2)).dtype == np.float64  # a float64 array keeps its dtype


# --- a graph is used once unless retained (PyTorch's rule) ---------------------------------------

def test_second_backward_through_a_freed_graph_raises(backend):
    x = mc.tensor([1.0, 2.0, 3.0], requires_grad=True, backend=backend)
    y = (x * x).sum()                       # Mul saves its inputs
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])
    with pytest.raises(RuntimeError, match=r"Mul\.backward.*second time.*retain_graph=True"):
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])   # not accumulated twice


def test_retain_graph_allows_a_second_backward_that_accumulates(backend):
    x = mc.tensor([1.0, 2.0, 3.0], requires_grad=True, backend=backend)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0, 12.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_freed_graph_matches_torch_for_ops_that_save_nothing():
    """Like PyTorch, a graph whose ops saved no values can run backward again."""
    x = mc.tensor([1.0, 2.0], requires_grad=True, backend="numpy")
    y = (x + 1.0).sum()
    y.backward()
    y.backward()
    xt = torch.tensor([1.0, 2.0], requires_grad=True)
    yt = (xt + 1.0).sum()
    yt.backward()
    yt.backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())


class _TwoGradients(mc.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return g, g


class _WrongShape(mc.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.full((5,), 1.0, g.dtype),)


class _Missing(mc.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        return ctx.backend.add(x, y)

    @staticmethod
    def backward(ctx, g):
        return (g,)


def test_backward_returning_too_many_gradients_names_the_function():
    x = mc.tensor([1.0, 2.0], requires_grad=True, backend="numpy")
    with pytest.raises(RuntimeError, match=r"_TwoGradients\.backward returned 2 gradient"):
        _TwoGradients.apply(x).sum().backward()


def test_backward_missing_a_needed_gradient_names_the_function():
    x = mc.tensor([1.0, 2.0], requires_grad=True, backend="numpy")
    y = mc.tensor([1.0, 2.0], requires_grad=True, backend="numpy")
    with pytest.raises(RuntimeError, match=r"_Missing\.backward returned 1 gradient.*expected 2"):
        _Missing.apply(x, y).sum().backward()
    # when only the first input needs a gradient, leaving the second off is fine
    z = mc.tensor([1.0, 2.0], backend="numpy")
    _Missing.apply(x, z).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_backward_returning_a_gradient_of_the_wrong_shape_names_the_function():
    x = mc.tensor([1.0, 2.0], requires_grad=True, backend="numpy")
    with pytest.raises(RuntimeError, match=r"_WrongShape\.backward returned a gradient of "
                                           r"shape \(5,\) for an input of shape \(2,\)"):
        _WrongShape.apply(x).sum().backward()
