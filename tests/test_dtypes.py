"""int64 and bool tensors: how ``mc.tensor`` picks a dtype, conversions, comparisons and
``argmax`` against PyTorch, and the clear refusals (no gradient, no differentiable op)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from strategies import fixture_settings

import minicond as mc
import minicond.functional as F

# cheap ops: fewer examples than the profile's default keep the suite short
small = settings(fixture_settings, max_examples=15)


# --- mc.tensor picks the dtype from the data, as torch.tensor does -------------------------------

CASES = [  # (data, mc dtype); NumPy arrays are built in the test (conftest reads params)
    ([1.0, 2.0], np.float32),
    ([1, 2], np.int64),
    ([True, False], np.bool_),
    ([1, 2.5], np.float32),
    (3, np.int64),
    (2.5, np.float32),
    (True, np.bool_),
    ("arange int64", np.int64),
    ("arange int32", np.int64),
    ("arange uint8", np.int64),
    ("zeros bool", np.bool_),
    ("zeros float16", np.float32),
    ("zeros float32", np.float32),
    ("zeros float64", np.float64),
    ("scalar float64", np.float64),
]


def build(data):
    if not isinstance(data, str):
        return data
    kind, dtype = data.split()
    if kind == "arange":
        return np.arange(3, dtype=dtype)
    return np.zeros(2, dtype=dtype) if kind == "zeros" else np.dtype(dtype).type(1.5)


@pytest.mark.parametrize("data, expected", CASES, ids=[str(c[0]) for c in CASES])
def test_tensor_dtype_follows_the_data_like_torch(data, expected):
    data = build(data)
    t = mc.tensor(data, backend="numpy")
    assert t.dtype == expected
    # PyTorch agrees wherever it has the same dtype (it keeps int32/uint8/float16 as such)
    if not (isinstance(data, np.ndarray) and data.dtype in (np.int32, np.uint8, np.float16)):
        assert str(torch.tensor(data).dtype).removeprefix("torch.") == t.dtype.name
    np.testing.assert_array_equal(t.numpy(), np.asarray(data).astype(expected))
    assert mc.tensor(t).dtype == expected  # a tensor keeps its dtype


def test_dtype_names_are_exported():
    assert mc.int64 == np.int64 and mc.bool == np.bool_ and mc.bool_ == np.bool_
    assert mc.tensor([1.5, -2.5], dtype=mc.int64).numpy().tolist() == [1, -2]
    assert mc.tensor([0.0, 2.0], dtype="bool").numpy().tolist() == [False, True]


def test_int_and_bool_tensors_never_require_grad():
    with pytest.raises(TypeError, match="requires_grad.*int64"):
        mc.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="requires_grad.*bool"):
        mc.tensor([1.0], dtype=mc.bool, requires_grad=True)
    with pytest.raises(TypeError, match=r"requires_grad_\(\).*int64"):
        mc.tensor([1, 2]).requires_grad_()
    x = mc.tensor([1.5, 2.5], requires_grad=True)
    assert not x.long().requires_grad and not x.bool().requires_grad
    assert x.double().requires_grad  # a float leaf stays a float leaf


@pytest.mark.parametrize("method, dtype", [("long", np.int64), ("bool", np.bool_),
                                           ("float", np.float32), ("double", np.float64)])
def test_conversions(backend, method, dtype):
    a = np.array([[-2.7, -0.5, 0.0], [0.4, 1.0, 3.9]])
    for src in (a, a.astype(np.int64), a > 0):
        t = getattr(mc.tensor(src, backend=backend), method)()
        th = getattr(torch.tensor(src), method)()
        assert t.dtype == dtype and t.device == backend
        np.testing.assert_array_equal(t.numpy(), th.numpy())
        np.testing.assert_array_equal(t.to(dtype=dtype).numpy(), th.numpy())
    assert mc.tensor(a, backend=backend).to("int64").dtype == np.int64


def test_item_and_truth_value():
    assert mc.tensor(3).item() == 3 and isinstance(mc.tensor(3).item(), int)
    assert mc.tensor(True).item() is True
    assert isinstance(mc.tensor(1.5).item(), float)
    assert bool(mc.tensor([2.0]) > 1) and not bool(mc.tensor(0))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(mc.tensor([1.0, 2.0]) > 0)


def test_tensors_stay_hashable_by_identity():
    a, b = mc.tensor([1.0]), mc.tensor([1.0])
    assert len({a, b, a}) == 2 and {a: 1}[a] == 1


# --- comparisons ---------------------------------------------------------------------------------

OPS = {"lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
       "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}
KINDS = ("float32", "float64", "int64", "bool")


def sample(shape, kind, seed):
    """Values on a coarse grid (so ties occur) of dtype ``kind``."""
    a = np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float64) / 2
    return (a > 0) if kind == "bool" else a.astype(kind) if kind != "int64" else \
        np.round(a * 2).astype(np.int64)


@small
@given(op=st.sampled_from(sorted(OPS)), ka=st.sampled_from(KINDS), kb=st.sampled_from(KINDS),
       other=st.sampled_from(["tensor", "int", "float", "array"]), seed=st.integers(0, 99),
       data=st.data())
def test_comparisons_match_torch(backend, size_limit, op, ka, kb, other, seed, data):
    bs = data.draw(mutually_broadcastable_shapes(num_shapes=2, max_dims=3,
                                                 max_side=max(2, size_limit // 2)))
    sa, sb = bs.input_shapes
    a = sample(sa, ka, seed)
    x, xt = mc.tensor(a, backend=backend), torch.tensor(a)
    fn = OPS[op]
    if other == "tensor":
        b = sample(sb, kb, seed + 1)
        y, yt = fn(x, mc.tensor(b, backend=backend)), fn(xt, torch.tensor(b))
    elif other == "array":
        b = sample(sb, kb, seed + 1)
        y, yt = fn(x, b), fn(xt, torch.tensor(b).to(xt.dtype))
        # NumPy on the left defers to the tensor (reflected comparison)
        z = fn(b, x)
        assert isinstance(z, mc.Tensor)
        np.testing.assert_array_equal(z.numpy(), fn(torch.tensor(b).to(xt.dtype), xt).numpy())
    else:
        c = 1 if other == "int" else 0.5
        y, yt = fn(x, c), fn(xt, c)
        np.testing.assert_array_equal(fn(c, x).numpy(), fn(c, xt).numpy())
    assert y.dtype == np.bool_ and not y.requires_grad and y.device == backend
    np.testing.assert_array_equal(y.numpy(), yt.numpy())


def test_comparison_of_float32_with_float64_tensors_is_in_float64():
    a = mc.tensor(np.array([0.1], dtype=np.float32))
    b = mc.tensor(np.array([0.1], dtype=np.float64))
    assert (a != b).item() == (torch.tensor(a.numpy()) != torch.tensor(b.numpy())).item()


def test_comparison_errors_name_the_operator():
    x = mc.tensor([1.0, 2.0], backend="numpy")
    with pytest.raises(ValueError, match=r">=.*\(2,\).*\(3,\)"):
        _ = x >= mc.tensor([1.0, 2.0, 3.0], backend="numpy")
    with pytest.raises(TypeError, match="<.*str"):
        _ = x < "a"
    with pytest.raises(ValueError, match="backends"):
        _ = x == mc.tensor([1.0, 2.0], backend="numba")


# --- argmax --------------------------------------------------------------------------------------

@small
@given(keepdim=st.booleans(), seed=st.integers(0, 99), data=st.data(),
       kind=st.sampled_from(["float32", "float64", "int64"]))
def test_argmax_matches_torch(backend, size_limit, keepdim, seed, data, kind):
    shape = tuple(data.draw(st.lists(st.integers(1, max(2, size_limit // 2)), min_size=1,
                                     max_size=3)))
    a = sample(shape, kind, seed)  # ties: the first maximum wins, in both
    dim = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    y = mc.tensor(a, backend=backend).argmax(dim, keepdim=keepdim)
    yt = torch.tensor(a).argmax(dim, keepdim=keepdim)
    assert y.dtype == np.int64 and y.shape == tuple(yt.shape)
    np.testing.assert_array_equal(y.numpy(), yt.numpy())
    np.testing.assert_array_equal(F.argmax(mc.tensor(a, backend=backend), dim).numpy(),
                                  torch.argmax(torch.tensor(a), dim).numpy())


def test_argmax_errors():
    with pytest.raises(TypeError, match="argmax.*dim"):
        mc.tensor([1.0, 2.0]).argmax(dim=(0,))
    with pytest.raises(TypeError, match="argmax.*bool"):
        mc.tensor([True]).argmax()
    with pytest.raises(ValueError, match="argmax.*dim=3"):
        mc.tensor([1.0, 2.0]).argmax(3)


# --- differentiable operations refuse int64 and bool ----------------------------------------------

REFUSING = {
    "Add": lambda x: x + 1.0,
    "Mul": lambda x: x * x,
    "Neg": lambda x: -x,
    "Exp": lambda x: x.exp(),
    "Mean": lambda x: x.mean(),
    "Relu": lambda x: x.relu(),
    "Softmax": lambda x: x.softmax(-1),
    "MatMul": lambda x: x.reshape(1, -1) @ x.reshape(-1, 1),
    "Conv2d": lambda x: F.conv2d(x.reshape(1, 1, 1, -1), x.reshape(1, 1, 1, -1)),
}


@pytest.mark.parametrize("kind", ["int64", "bool"])
@pytest.mark.parametrize("name", sorted(REFUSING))
def test_differentiable_ops_refuse_int_and_bool(name, kind):
    x = mc.tensor(np.array([1, 0, 2]).astype(kind), backend="numpy")
    with pytest.raises(TypeError, match=rf"{name}.*{kind}.*float32 and float64"):
        REFUSING[name](x)


def test_shape_ops_and_indexing_move_int_and_bool():
    labels = mc.tensor(np.arange(6).reshape(2, 3), backend="numpy")
    assert labels.reshape(3, 2).dtype == np.int64
    np.testing.assert_array_equal(labels.permute(1, 0).numpy(), np.arange(6).reshape(2, 3).T)
    np.testing.assert_array_equal(labels[1, ::-1].numpy(), [5, 4, 3])
    mask = labels > 2
    np.testing.assert_array_equal(mask[:, 0].numpy(), [False, True])
    np.testing.assert_array_equal(labels.flatten().numpy(), np.arange(6))


def test_int_and_bool_tensors_sum_to_int64_like_torch(backend):
    a = np.array([[3, -1, 2], [0, 5, -4]])
    for src in (a, a > 0):
        for dim, keepdim in ((None, False), (0, False), (1, True), ((0, 1), True)):
            y = mc.tensor(src, backend=backend).sum(dim, keepdim=keepdim)
            yt = torch.tensor(src).sum(() if dim is None else dim, keepdim=keepdim) \
                if dim is not None else torch.tensor(src).sum()
            assert y.dtype == np.int64 and not y.requires_grad
            np.testing.assert_array_equal(y.numpy(), yt.numpy())
    pred, labels = mc.tensor([1, 2, 0, 2]), mc.tensor([1, 0, 0, 2])
    assert (pred == labels).sum().item() == 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_from_numpy_shares_the_array_on_the_cpu_backends(backend, dtype):
    a = np.arange(6).reshape(2, 3).astype(dtype)
    t = mc.from_numpy(a, backend=backend)
    assert t.dtype == np.dtype(dtype) and t.shape == (2, 3) and not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), a)
    a[0, 0] = 1                                     # the array's memory is the tensor's
    assert bool(t.numpy()[0, 0] == 1) == (backend in ("numpy", "numba"))


def test_from_numpy_gradients_and_refusals(backend):
    a = np.linspace(-1, 1, 5)
    x = mc.from_numpy(a, requires_grad=True, backend=backend)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * a)
    np.testing.assert_array_equal(a, np.linspace(-1, 1, 5))     # never written by minicond
    with pytest.raises(TypeError, match=r"from_numpy\(\): array has dtype int32"):
        mc.from_numpy(np.arange(3, dtype=np.int32), backend=backend)
    with pytest.raises(TypeError, match="numpy.ndarray, got list"):
        mc.from_numpy([1.0, 2.0], backend=backend)
    with pytest.raises(TypeError, match="requires_grad=True needs a float array"):
        mc.from_numpy(np.arange(3), requires_grad=True, backend=backend)
