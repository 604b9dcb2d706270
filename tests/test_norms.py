"""layer_norm, group_norm and their modules against PyTorch (float64, random cotangent, the
gradients of x, weight and bias) and by finite differences over every element, on every
backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compare_with_torch, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes
from strategies import fixture_settings

import minicond as mc
import minicond.functional as F

norm_settings = settings(fixture_settings, max_examples=20)


def check(mc_fn, torch_fn, arrays, backend):
    compare_with_torch(mc_fn, torch_fn, arrays, backend, rtol=1e-10, atol=1e-10)
    if backend == "numpy":  # the same kernels on every backend, compared above
        gradcheck(mc_fn, arrays, backend)


@norm_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_layer_norm_matches_torch(backend, size_limit, data, seed):
    shape = data.draw(array_shapes(min_dims=1, max_dims=4, min_side=1,
                                   max_side=max(2, size_limit // 2)))
    k = data.draw(st.integers(1, len(shape)))
    dims = shape[len(shape) - k:]
    if int(np.prod(dims)) == 1:
        dims, shape = (2,) + dims[1:], shape[:len(shape) - k] + (2,) + dims[1:]
    affine = data.draw(st.sampled_from(["both", "weight", "bias", "none"]))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(dims) if affine in ("both", "weight") else None
    b = rng.standard_normal(dims) if affine in ("both", "bias") else None
    eps = data.draw(st.sampled_from([1e-5, 0.1]))
    arrays = [a for a in (x, w, b) if a is not None]

    def call(lib_fn, *a):
        it = iter(a)
        xs = next(it)
        ws = next(it) if w is not None else None
        bs = next(it) if b is not None else None
        return lib_fn(xs, dims if lib_fn is F.layer_norm else list(dims), ws, bs, eps)

    check(lambda *a: call(F.layer_norm, *a),
          lambda *a: call(torch.nn.functional.layer_norm, *a), arrays, backend)


@norm_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_group_norm_matches_torch(backend, size_limit, data, seed):
    G = data.draw(st.integers(1, 3))
    C = G * data.draw(st.integers(1, 2))
    spatial = data.draw(st.lists(st.integers(1, max(2, size_limit // 2)), max_size=2))
    if C // G * int(np.prod(spatial)) == 1:
        spatial = [2]
    shape = (data.draw(st.integers(1, 2)), C, *spatial)
    rng = np.random.default_rng(seed)
    affine = data.draw(st.booleans())
    arrays = [rng.standard_normal(shape)] + ([rng.standard_normal(C), rng.standard_normal(C)]
                                             if affine else [])
    check(lambda *a: F.group_norm(a[0], G, *a[1:]),
          lambda *a: torch.nn.functional.group_norm(a[0], G, *a[1:]), arrays, backend)


def test_modules_match_torch_and_name_parameters_like_it():
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3))
    for ours, theirs in ((mc.nn.LayerNorm([3, 3], dtype="float64"),
                          torch.nn.LayerNorm([3, 3], dtype=torch.float64)),
                         (mc.nn.GroupNorm(2, 4, eps=1e-3, dtype="float64"),
                          torch.nn.GroupNorm(2, 4, eps=1e-3, dtype=torch.float64))):
        assert set(ours.state_dict()) == set(theirs.state_dict())
        rng = np.random.default_rng(1)
        with torch.no_grad():
            for name, p in ours.named_parameters():
                v = rng.standard_normal(p.shape)
                p.data = mc.tensor(v, dtype="float64").data
                dict(theirs.named_parameters())[name].copy_(torch.tensor(v))
        np.testing.assert_allclose(ours(mc.tensor(x, dtype="float64")).numpy(),
                                   theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
    assert mc.nn.LayerNorm(4, elementwise_affine=False).weight is None
    assert mc.nn.LayerNorm(4, bias=False).bias is None
    assert mc.nn.GroupNorm(2, 4, affine=False).weight is None


def test_errors_name_the_argument():
    x = mc.tensor(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"layer_norm: x has shape \(2, 4, 3\), whose "
                                         r"trailing axes must be normalized_shape=\(4,\)"):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(4,\); expected "
                                         r"\(3,\)"):
        F.layer_norm(x, 3, mc.tensor(np.ones(4)))
    with pytest.raises(ValueError, match="layer_norm: normalized_shape=0 must be a positive"):
        F.layer_norm(x, 0)
    with pytest.raises(ValueError, match=r"group_norm: num_groups=3 must divide the "
                                         "channels C=4"):
        F.group_norm(x, 3)
    with pytest.raises(ValueError, match=r"group_norm: eps=0 must be in \(0.0, inf\)"):
        F.group_norm(x, 2, eps=0)
    with pytest.raises(ValueError, match="GroupNorm: num_groups=3 must divide "
                                         "num_channels=4"):
        mc.nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match=r"GroupNorm: x has 4 channels.*num_channels=2"):
        mc.nn.GroupNorm(1, 2)(x.float())


def test_an_empty_batch_gives_an_empty_output():
    x = mc.tensor(np.zeros((0, 4, 3, 3)))
    assert F.group_norm(x, 2).shape == (0, 4, 3, 3)
    assert F.layer_norm(x, [3, 3]).shape == (0, 4, 3, 3)
