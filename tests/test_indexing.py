"""Indexing and ``where`` against PyTorch (float64, random cotangent, every input's gradient)
and by finite differences over every element, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compare_with_torch, gradcheck, random_cotangent
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes
from strategies import fixture_settings

import minicond as mc
import minicond.functional as F

indexing_settings = settings(fixture_settings, max_examples=20)
seeds = st.integers(0, 2**16)


def values(shape, seed):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape)


def check(mc_fn, torch_fn, arrays, backend):
    compare_with_torch(mc_fn, torch_fn, arrays, backend, rtol=1e-12, atol=1e-12)
    gradcheck(mc_fn, arrays, backend)


@st.composite
def basic_index(draw, shape, negative_steps=False):
    """A tuple of ints, slices (steps 1..2, or also negative), None and at most one ...,
    addressing at most len(shape) axes."""
    steps = [1, 2, -1, -2] if negative_steps else [1, 2]
    parts, axis, used_ellipsis = [], 0, False
    while axis < len(shape) and draw(st.booleans()):
        n = shape[axis]
        kind = draw(st.sampled_from(["int", "slice", "none", "ellipsis"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-n - 1, n + 1)
            parts.append(slice(draw(bound), draw(bound), draw(st.sampled_from(steps))))
        elif kind == "none":
            parts.append(None)
            continue
        elif not used_ellipsis:
            parts.append(Ellipsis)
            used_ellipsis = True
            axis = len(shape) - sum(isinstance(p, (int, slice)) for p in parts[:-1])
            continue
        axis += 1
    return parts[0] if len(parts) == 1 and draw(st.booleans()) else tuple(parts)


@indexing_settings
@given(seed=seeds, data=st.data())
def test_basic_indexing_matches_torch(backend, size_limit, seed, data):
    shape = data.draw(array_shapes(min_dims=1, max_dims=3, max_side=max(2, size_limit // 2)))
    index = data.draw(basic_index(shape))
    a = values(shape, seed)
    if a[index].size == 0:  # an empty selection: nothing to differentiate, shape must agree
        assert mc.tensor(a, backend=backend)[index].shape == a[index].shape
        return
    check(lambda x: x[index], lambda x: x[index], [a], backend)


@indexing_settings
@given(seed=seeds, data=st.data())
def test_negative_steps_match_numpy(backend, size_limit, seed, data):
    """PyTorch has no negative slice steps; NumPy's result and the transpose of the gather
    (zeros with g added back where each output came from) are the reference."""
    shape = data.draw(array_shapes(min_dims=1, max_dims=3, max_side=max(2, size_limit // 2)))
    index = data.draw(basic_index(shape, negative_steps=True))
    a = values(shape, seed)
    x = mc.tensor(a, requires_grad=True, backend=backend)
    y = x[index]
    np.testing.assert_array_equal(y.numpy(), a[index])
    if y.numel() == 0:
        return
    g = random_cotangent(y.shape)
    y.backward(g)
    expected = np.zeros_like(a)
    expected[index] += g  # basic indexing selects each element at most once
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    gradcheck(lambda t: t[index], [a], backend)


@indexing_settings
@given(seed=seeds, data=st.data(), kind=st.sampled_from(["list", "numpy", "tensor"]))
def test_integer_array_index_on_one_axis_matches_torch(backend, size_limit, seed, data, kind):
    shape = data.draw(array_shapes(min_dims=1, max_dims=3, max_side=max(2, size_limit // 2)))
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    rows = data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=2 * n))  # repeats
    if kind == "numpy":
        rows = np.array(rows, dtype=np.int32).reshape(data.draw(st.sampled_from(
            [(-1,), (1, -1)])))
    idx_mc = mc.tensor(rows, backend=backend) if kind == "tensor" else rows
    idx_th = torch.as_tensor(np.asarray(rows), dtype=torch.int64)
    lead = (slice(None),) * axis
    check(lambda x: x[lead + (idx_mc,)], lambda x: x[lead + (idx_th,)],
          [values(shape, seed)], backend)


def test_repeated_positions_accumulate_their_gradients(backend):
    a = values((3, 2), 0)
    x = mc.tensor(a, requires_grad=True, backend=backend)
    g = np.arange(8.0).reshape(4, 2)
    x[[2, 0, 2, 2]].backward(g)
    expected = np.zeros((3, 2))
    expected[0] = g[1]
    expected[2] = g[0] + g[2] + g[3]
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    y = x[:, mc.tensor([1, 1], backend=backend)]
    np.testing.assert_array_equal(y.numpy(), a[:, [1, 1]])


@indexing_settings
@given(seed=seeds, data=st.data())
def test_boolean_mask_matches_torch(backend, size_limit, seed, data):
    shape = data.draw(array_shapes(min_dims=1, max_dims=3, max_side=max(2, size_limit // 2)))
    a = values(shape, seed)
    mask_dims = data.draw(st.integers(1, len(shape)))
    mask = np.random.default_rng(seed + 1).random(shape[:mask_dims]) > 0.4
    if not mask.any():
        mask.flat[0] = True
    as_tensor = data.draw(st.booleans())
    m = mc.tensor(mask, backend=backend) if as_tensor else mask
    check(lambda x: x[m], lambda x: x[torch.as_tensor(mask)], [a], backend)
    # a mask from a comparison of the tensor itself
    x = mc.tensor(a, backend=backend)
    np.testing.assert_array_equal(x[x > 0].numpy(), a[a > 0])


def test_integer_and_bool_tensors_index_too(backend):
    labels = mc.tensor(np.arange(12).reshape(3, 4), backend=backend)
    np.testing.assert_array_equal(labels[1:, [0, 3]].numpy(), [[4, 7], [8, 11]])
    np.testing.assert_array_equal(labels[None, -1, ::2].numpy(), [[8, 10]])
    assert labels[..., 0].dtype == np.int64 and (labels > 5)[0].dtype == np.bool_


def test_item_assignment_explains_why_and_what_instead():
    x = mc.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=r"item assignment.*autograd.*where.*numpy\(\)"):
        x[0] = 5.0


# --- where -----------------------------------------------------------------------------------

@indexing_settings
@given(seed=seeds, data=st.data(), scalar=st.sampled_from([None, "input", "other"]))
def test_where_matches_torch(backend, size_limit, seed, data, scalar):
    bs = data.draw(mutually_broadcastable_shapes(num_shapes=3, max_dims=3,
                                                 max_side=max(2, size_limit // 2)))
    sc, sa, sb = bs.input_shapes
    cond = np.random.default_rng(seed).random(sc) > 0.5
    a, b = values(sa, seed + 1), values(sb, seed + 2)
    c_mc = mc.tensor(cond, backend=backend)
    c_th = torch.as_tensor(cond)
    if scalar is None:
        check(lambda x, y: F.where(c_mc, x, y), lambda x, y: torch.where(c_th, x, y), [a, b],
              backend)
    elif scalar == "input":
        check(lambda y: F.where(c_mc, 0.5, y), lambda y: torch.where(c_th, 0.5, y), [b],
              backend)
    else:
        check(lambda x: F.where(c_mc, x, -2.0), lambda x: torch.where(c_th, x, -2.0), [a],
              backend)


def test_where_errors_name_the_argument():
    x = mc.tensor([1.0, 2.0], backend="numpy")
    with pytest.raises(TypeError, match="where: condition.*bool"):
        F.where(x, x, x)
    with pytest.raises(TypeError, match="where: input or other"):
        F.where(x > 0, 1.0, 2.0)
    with pytest.raises(ValueError, match=r"where: shapes"):
        F.where(x > 0, x, mc.tensor([1.0, 2.0, 3.0], backend="numpy"))
