"""conv_transpose2d and nn.ConvTranspose2d against PyTorch (float64, random cotangent, the
gradients of x, weight and bias), by finite differences over every element, and as the
adjoint of conv2d, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compare_with_torch, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import fixture_settings

import minicond as mc
import minicond.functional as F

ct_settings = settings(fixture_settings, max_examples=20)


@st.composite
def cases(draw, size_limit):
    """(x shape, weight shape, bias?, keyword arguments) with a non-empty output."""
    G = draw(st.integers(1, 2))
    cin, cout = G * draw(st.integers(1, 2)), G * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    op = tuple(draw(st.integers(0, max(a, b) - 1)) for a, b in zip(s, d, strict=True))
    H, W = draw(st.integers(1, size_limit // 2 + 1)), draw(st.integers(1, size_limit // 2 + 1))
    out = [(n - 1) * st_ + dd * (k - 1) + 1 - 2 * pp + o
           for n, st_, dd, k, pp, o in zip((H, W), s, d, (kh, kw), p, op, strict=True)]
    if min(out) < 1:
        p = (0, 0)
    kw_ = {"stride": s, "padding": p, "output_padding": op, "groups": G, "dilation": d}
    return (draw(st.integers(1, 2)), cin, H, W), (cin, cout // G, kh, kw), draw(
        st.booleans()), kw_


@ct_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_conv_transpose2d_matches_torch(backend, size_limit, data, seed):
    x_shape, w_shape, with_bias, kw = data.draw(cases(size_limit))
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
    if with_bias:
        arrays.append(rng.standard_normal(w_shape[1] * kw["groups"]))
    compare_with_torch(lambda *a: F.conv_transpose2d(*a, **kw),
                       lambda *a: torch.nn.functional.conv_transpose2d(*a, **kw), arrays,
                       backend, rtol=1e-10, atol=1e-10)
    if backend == "numpy":  # the gradients are the same kernels on every backend, compared
        gradcheck(lambda *a: F.conv_transpose2d(*a, **kw), arrays, backend)  # above


def test_conv_transpose_is_the_adjoint_of_conv(backend):
    """⟨conv2d(u, K), x⟩ = ⟨u, conv_transpose2d(x, K)⟩ for stride 2, padding 1, groups 2."""
    rng = np.random.default_rng(3)
    K = mc.tensor(rng.standard_normal((4, 1, 3, 3)), dtype="float64", backend=backend)
    u = mc.tensor(rng.standard_normal((1, 2, 7, 7)), dtype="float64", backend=backend)
    y = F.conv2d(u, K, stride=2, padding=1, groups=2)
    x = mc.tensor(rng.standard_normal(y.shape), dtype="float64", backend=backend)
    t = F.conv_transpose2d(x, K, stride=2, padding=1, groups=2)
    assert t.shape == u.shape
    np.testing.assert_allclose((y * x).sum().item(), (u * t).sum().item(), rtol=1e-12)


def test_module_matches_torch_and_initialises_like_it():
    mc.random.manual_seed(0)
    layer = mc.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                  dtype="float64")
    assert layer.weight.shape == (4, 3, 3, 3) and layer.bias.shape == (6,)
    bound = 1 / np.sqrt(3 * 3 * 3)
    assert np.abs(layer.weight.numpy()).max() <= bound
    assert np.abs(layer.weight.numpy()).max() > 0.5 * bound
    ref = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                   dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.weight.numpy()))
        ref.bias.copy_(torch.tensor(layer.bias.numpy()))
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 5))
    np.testing.assert_allclose(layer(mc.tensor(x, dtype="float64")).numpy(),
                               ref(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)
    assert set(dict(layer.named_parameters())) == {"weight", "bias"}


def test_errors_name_the_argument():
    x = mc.tensor(np.zeros((1, 4, 3, 3)))
    w = mc.tensor(np.zeros((4, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"conv_transpose2d: output_padding=\(2, 2\) must be "
                                         r"smaller than either stride=\(2, 2\)"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"conv_transpose2d: weight has shape \(3, 2, 3, 3\), "
                                         "whose first axis 3 must equal x's channels Cin=4"):
        F.conv_transpose2d(x, mc.tensor(np.zeros((3, 2, 3, 3))))
    with pytest.raises(ValueError, match="conv_transpose2d: groups=3 must divide "
                                         "in_channels=4"):
        F.conv_transpose2d(x, w, groups=3)
    with pytest.raises(ValueError, match=r"conv_transpose2d: bias has shape \(3,\); expected "
                                         r"\(4,\)"):
        F.conv_transpose2d(x, w, mc.tensor(np.zeros(3)), groups=2)
    with pytest.raises(ValueError, match="conv_transpose2d: the output would be -1x-1"):
        F.conv_transpose2d(mc.tensor(np.zeros((1, 4, 1, 1))), mc.tensor(np.zeros((4, 2, 1, 1))),
                           padding=1)
    with pytest.raises(ValueError, match="ConvTranspose2d: groups=2 must divide "
                                         "out_channels=3"):
        mc.nn.ConvTranspose2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: x has shape \(1, 4, 3, 3\).*"
                                         "in_channels=2"):
        mc.nn.ConvTranspose2d(2, 2, 3)(x.float())
