"""cat, stack, split and chunk against PyTorch (float64, random cotangent, every input's
gradient) and by finite differences over every element, on every backend."""

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

joining_settings = settings(fixture_settings, max_examples=15)


def values(shape, seed):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape)


def check(mc_fn, torch_fn, arrays, backend):
    compare_with_torch(mc_fn, torch_fn, arrays, backend, rtol=1e-12, atol=1e-12)
    if backend == "numpy":  # the same gather/scatter kernels on every backend, compared above
        gradcheck(mc_fn, arrays, backend)


@joining_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_cat_and_stack_match_torch(backend, size_limit, data, seed):
    shape = data.draw(array_shapes(min_dims=1, max_dims=3, max_side=max(2, size_limit // 2)))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = data.draw(st.integers(1, 3))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    if sum(sizes) == 0:
        sizes[0] = 1
    shapes = [tuple(s if i == dim % len(shape) else side for i, side in enumerate(shape))
              for s in sizes]
    arrays = [values(sh, seed + k) for k, sh in enumerate(shapes)]
    check(lambda *xs: F.cat(list(xs), dim), lambda *xs: torch.cat(xs, dim), arrays, backend)
    same = [values(shape, seed + k) for k in range(n)]
    new_dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(lambda *xs: F.stack(xs, new_dim), lambda *xs: torch.stack(xs, new_dim), same,
          backend)


@joining_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_split_and_chunk_match_torch(backend, size_limit, data, seed):
    """The pieces are flattened, weighted by their number and joined; a drawn subset of them
    is left out, so their gradient must be zero."""
    shape = data.draw(array_shapes(min_dims=1, max_dims=3, max_side=max(2, size_limit // 2)))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[dim]
    kind = data.draw(st.sampled_from(["size", "sections", "chunk"]))
    if kind == "size":
        arg = data.draw(st.integers(1, n + 1))
    elif kind == "sections":
        cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
        arg = list(np.diff([0, *cuts, n]))
    else:
        arg = data.draw(st.integers(1, n + 2))
    count = len(torch.chunk(torch.empty(shape), arg, dim) if kind == "chunk"
                else torch.split(torch.empty(shape), arg, dim))
    used = data.draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=count,
                              unique=True))

    def join(pieces, lib):
        return lib.cat([pieces[k].reshape(-1) * (k + 1) for k in sorted(used)], 0)

    if kind == "chunk":
        check(lambda x: join(F.chunk(x, arg, dim), F), lambda x: join(torch.chunk(x, arg, dim),
              torch), [values(shape, seed)], backend)
    else:
        check(lambda x: join(x.split(arg, dim), F), lambda x: join(torch.split(x, arg, dim),
              torch), [values(shape, seed)], backend)


def test_tensor_methods_and_piece_shapes():
    x = mc.tensor(np.arange(14.0).reshape(2, 7))
    assert [p.shape for p in x.split(3, 1)] == [(2, 3), (2, 3), (2, 1)]
    assert [p.shape for p in x.chunk(3, 1)] == [(2, 3), (2, 3), (2, 1)]
    assert [p.shape for p in F.chunk(x, 4, 1)] == [(2, 2), (2, 2), (2, 2), (2, 1)]
    assert [p.shape for p in F.split(x, [2, 0, 5], -1)] == [(2, 2), (2, 0), (2, 5)]
    np.testing.assert_array_equal(F.cat(list(x.split(2, 1)), 1).numpy(), x.numpy())


def test_errors_name_the_argument():
    x = mc.tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"cat: tensors\[1\] has shape \(3, 3\).*dim=1"):
        F.cat([x, mc.tensor(np.zeros((3, 3)))], 1)
    with pytest.raises(ValueError, match="cat: tensors is empty"):
        F.cat([])
    with pytest.raises(TypeError, match="cat: tensors must be a list or tuple"):
        F.cat(x)
    with pytest.raises(ValueError, match=r"cat: dim=2 is out of range for a 2-D tensor"):
        F.cat([x, x], 2)
    with pytest.raises(ValueError, match=r"stack: tensors\[1\] has shape \(2, 2\)"):
        F.stack([x, mc.tensor(np.zeros((2, 2)))])
    with pytest.raises(ValueError, match=r"split: split_size_or_sections=\[1, 1\] adds up "
                                         "to 2; expected the length 3"):
        F.split(x, [1, 1], 1)
    with pytest.raises(ValueError, match=r"chunk: chunks=0 must be >= 1"):
        F.chunk(x, 0)
    with pytest.raises(TypeError, match=r"split: dim=0.5 must be an int"):
        F.split(x, 1, 0.5)
