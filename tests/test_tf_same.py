"""padding="tf_same" (TensorFlow's "SAME", timm's ``Conv2dSame``/``pad_same``) against timm in
float64: outputs and the gradient of every input, over drawn sizes (odd ones included),
strides, dilations, kernels and groups, on every backend; the layers against timm's layers; an
all-element finite-difference check; the padding modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import compare_with_torch, gradcheck, random_cotangent
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import fixture_settings, normal

import minicond as mc
import minicond.functional as F
from minicond.functional.conv import same_padding

timm_padding = pytest.importorskip("timm.layers.padding", reason="timm is not installed")
from timm.layers.cond_conv2d import CondConv2d as TimmCondConv2d  # noqa: E402
from timm.layers.conv2d_same import Conv2dSame, conv2d_same  # noqa: E402


@st.composite
def tf_same_cases(draw, size_limit: int):
    """(x shape, weight shape [Cout, Cin/G, kh, kw], stride, dilation, groups, bias)."""
    groups = draw(st.integers(1, 2))
    cin = groups * draw(st.integers(1, max(1, size_limit // 4)))
    cout = groups * draw(st.integers(1, max(1, size_limit // 4)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = (draw(st.integers(1, size_limit + 1)), draw(st.integers(1, size_limit + 1)))
    batch = draw(st.integers(1, 2))
    return ((batch, cin, *size), (cout, cin // groups, *kernel), stride, dilation, groups,
            draw(st.booleans()), draw(st.integers(0, 2**16)))


def test_same_padding_is_timms_and_gives_ceil_n_over_s():
    for n in range(1, 12):
        for k in range(1, 6):
            for s in range(1, 5):
                for d in range(1, 4):
                    before, after = same_padding(n, k, s, d, tf=True)
                    total = timm_padding.get_same_padding(n, k, s, d)
                    assert (before, after) == (total // 2, total - total // 2)
                    assert (n + before + after - d * (k - 1) - 1) // s + 1 == math.ceil(n / s)


@settings(fixture_settings, max_examples=20)
@given(data=st.data())
def test_conv2d_tf_same_matches_timm(backend, size_limit, data):
    x_shape, w_shape, stride, dilation, groups, has_bias, seed = data.draw(
        tf_same_cases(size_limit), label="case")
    x, w, b = normal(seed, x_shape, w_shape, (w_shape[0],) if has_bias else None)
    compare_with_torch(
        lambda x, w, b: F.conv2d(x, w, b, stride, "tf_same", dilation, groups),
        lambda x, w, b: conv2d_same(x, w, b, stride, (0, 0), dilation, groups),
        [x, w, b], backend=backend)


def _torch_cond_conv2d_same(x, r, W, bias, stride, dilation, groups):
    """Each example convolved with its own mixed kernel, padded as timm's pad_same."""
    E = W.shape[0]
    K = (r @ W.reshape(E, -1)).reshape((x.shape[0],) + W.shape[1:])
    beta = None if bias is None else r @ bias
    return torch.cat([conv2d_same(x[b:b + 1], K[b], None if beta is None else beta[b],
                                  stride, (0, 0), dilation, groups)
                      for b in range(x.shape[0])])


@settings(fixture_settings, max_examples=20)
@given(data=st.data(), experts=st.integers(1, 3))
def test_cond_conv2d_tf_same_matches_timm(backend, size_limit, data, experts):
    x_shape, w_shape, stride, dilation, groups, has_bias, seed = data.draw(
        tf_same_cases(size_limit), label="case")
    x, r, W, bias = normal(seed, x_shape, (x_shape[0], experts), (experts, *w_shape),
                           (experts, w_shape[0]) if has_bias else None)
    compare_with_torch(
        lambda x, r, W, b: F.cond_conv2d(x, r, W, b, stride, "tf_same", dilation, groups),
        lambda x, r, W, b: _torch_cond_conv2d_same(x, r, W, b, stride, dilation, groups),
        [x, r, W, bias], backend=backend)


LAYER_CASES = [dict(kernel_size=3, stride=2), dict(kernel_size=(2, 5), stride=(3, 1)),
               dict(kernel_size=3, stride=2, dilation=2), dict(kernel_size=4, stride=1),
               dict(kernel_size=3, stride=2, groups=4)]


@pytest.mark.parametrize("kw", LAYER_CASES, ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("size", [(7, 9), (1, 3)])
def test_layers_match_timm_conv2d_same_and_condconv(kw, size):
    """nn.Conv2d / nn.CondConv2d with padding="tf_same" equal timm's Conv2dSame and its
    CondConv2d(padding="same") loaded with the same weights: outputs and every gradient."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, *size))
    mine = mc.nn.Conv2d(4, 8, padding="tf_same", dtype="float64", backend="numpy", **kw)
    theirs = Conv2dSame(4, 8, **kw).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(mine.weight.numpy()))
        theirs.bias.copy_(torch.from_numpy(mine.bias.numpy()))
    xm = mc.tensor(x, dtype="float64", backend="numpy", requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    ym, yt = mine(xm), theirs(xt)
    assert ym.shape == tuple(yt.shape)
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    c = random_cotangent(ym.shape)
    (ym * c).sum().backward()
    (yt * torch.from_numpy(c)).sum().backward()
    for a, b in ((xm, xt), (mine.weight, theirs.weight), (mine.bias, theirs.bias)):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)

    E = 3
    mine = mc.nn.CondConv2d(4, 8, padding="tf_same", num_experts=E, expert_bias=True,
                            dtype="float64", backend="numpy", **kw)
    theirs = TimmCondConv2d(4, 8, padding="same", num_experts=E, bias=True,
                            **kw).double()
    with torch.no_grad():   # timm keeps the experts flattened: [E, Cout·Cin/G·kh·kw]
        theirs.weight.copy_(torch.from_numpy(mine.weight.numpy().reshape(E, -1)))
        theirs.bias.copy_(torch.from_numpy(mine.bias.numpy()))
    r = rng.uniform(size=(2, E))
    xm = mc.tensor(x, dtype="float64", backend="numpy", requires_grad=True)
    rm = mc.tensor(r, dtype="float64", backend="numpy", requires_grad=True)
    xt, rt = torch.tensor(x, requires_grad=True), torch.tensor(r, requires_grad=True)
    ym, yt = mine(xm, rm), theirs(xt, rt)
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    (ym * c).sum().backward()
    (yt * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(mine.weight.grad.numpy().reshape(E, -1),
                               theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    for a, b in ((xm, xt), (rm, rt), (mine.bias, theirs.bias)):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,kernel,size", [((2, 3), (2, 3), (5, 7)), (2, 4, (6, 3))])
def test_tf_same_gradcheck(stride, kernel, size):
    """All-element finite differences, asymmetric padding on both axes (conv and CondConv)."""
    x, w, r, W = normal(3, (1, 2, *size), (3, 2, *np.broadcast_to(kernel, 2)), (1, 2),
                        (2, 3, 2, *np.broadcast_to(kernel, 2)))
    gradcheck(lambda x, w: F.conv2d(x, w, stride=stride, padding="tf_same"), [x, w])
    gradcheck(lambda x, r, W: F.cond_conv2d(x, r, W, stride=stride, padding="tf_same"),
              [x, r, W])


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_tf_same_with_a_padding_mode_pads_in_that_mode(mode):
    """A non-zeros padding_mode pads the same amounts as tf_same does, in that mode."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 6))
    layer = mc.nn.Conv2d(3, 5, 3, stride=2, padding="tf_same", padding_mode=mode,
                         dtype="float64", backend="numpy")
    pads = timm_padding.pad_same_arg([7, 6], [3, 3], [2, 2])
    expected = TF.conv2d(TF.pad(torch.from_numpy(x), pads, mode=mode),
                         torch.from_numpy(layer.weight.numpy()),
                         torch.from_numpy(layer.bias.numpy()), stride=2)
    np.testing.assert_allclose(layer(mc.tensor(x, dtype="float64", backend="numpy")).numpy(),
                               expected.numpy(), rtol=1e-10, atol=1e-12)


def test_same_needs_stride_one_and_names_tf_same():
    x = mc.tensor(np.zeros((1, 1, 5, 5)))
    w = mc.tensor(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="conv2d: padding='same' needs stride=1.*tf_same"):
        F.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ValueError, match="Conv2d: padding='same' needs stride=1"):
        mc.nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="'tf_same'"):
        F.conv2d(x, w, padding="SAME")
    assert F.conv2d(x, w, stride=2, padding="tf_same").shape == (1, 1, 3, 3)
