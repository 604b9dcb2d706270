"""Finite-difference gradient checks over every element of every input, float64, for each
Function of the convolution and CondConv family: Conv2d, Pad, MixExperts, CondConv2d,
GlobalAvgPool2d, Linear, Dropout, Softmax, LogSoftmax and Sigmoid, and for the whole CondConv
forward (routing path included). Shapes are tiny: each element costs two forward passes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import gradcheck
from strategies import normal

import minicond as mc

F = mc.functional

# (x shape, weight shape, conv keyword arguments): stride, symmetric and asymmetric ("same"
# with an even kernel) padding, dilation and groups, each on the smallest tensors that show
# it. Every element costs two forward passes, which in the CUDA simulator are slow.
CONV_CONFIGS = {
    "stride2-pad1": ((2, 1, 3, 3), (2, 1, 2, 2), dict(stride=2, padding=1)),
    "same-even-kernel": ((1, 2, 2, 3), (1, 2, 2, 2), dict(padding="same")),
    "same-dilated-even": ((1, 1, 3, 3), (1, 1, 2, 3), dict(padding="same", dilation=(3, 1))),
    "groups-dilation": ((1, 2, 4, 3), (2, 1, 2, 2), dict(dilation=2, groups=2, padding=(1, 0))),
    "per-axis": ((1, 1, 3, 4), (1, 1, 2, 2), dict(stride=(1, 2), padding=(0, 1),
                                                 dilation=(1, 2))),
    "valid": ((2, 1, 3, 3), (1, 1, 2, 2), dict(padding="valid")),
}


@pytest.mark.parametrize("name", CONV_CONFIGS)
def test_conv2d_gradcheck(backend, name):
    """Gradients of x, the weight and the bias."""
    x_shape, w_shape, kw = CONV_CONFIGS[name]
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kw),
              normal(1, x_shape, w_shape, (w_shape[0],)), backend=backend)


def test_conv2d_without_bias_gradcheck(backend):
    x_shape, w_shape, kw = CONV_CONFIGS["stride2-pad1"]
    gradcheck(lambda x, w: F.conv2d(x, w, **kw), normal(1, x_shape, w_shape), backend=backend)


@pytest.mark.parametrize("mode", F.PAD_MODES)
def test_pad_gradcheck(backend, mode):
    """Asymmetric pads; reflect and circular pads large enough that one input pixel is
    copied to several padded positions (its gradient is their sum)."""
    pad = (2, 1, 0, 3) if mode != "reflect" else (2, 1, 0, 2)
    gradcheck(lambda x: F.pad(x, pad, mode), normal(2, (1, 2, 3, 3)), backend=backend)


def test_mix_experts_gradcheck(backend):
    gradcheck(F.mix_experts, normal(3, (2, 3), (3, 2, 1, 1, 2)), backend=backend)


@pytest.mark.parametrize("name, bias", [
    ("stride2-pad1", "static"), ("stride2-pad1", "mixed"), ("stride2-pad1", "none"),
    ("same-even-kernel", "mixed"), ("groups-dilation", "static"), ("per-axis", "mixed")])
def test_cond_conv2d_gradcheck(backend, name, bias):
    """Gradients of x, the routing weights, the experts and the bias ([Cout] or [E, Cout])."""
    x_shape, w_shape, kw = CONV_CONFIGS[name]
    E, Cout = 2, w_shape[0]
    bias_shape = {"static": (Cout,), "mixed": (E, Cout), "none": None}[bias]
    inputs = normal(4, x_shape, (x_shape[0], E), (E, *w_shape), bias_shape)
    if bias_shape is None:
        gradcheck(lambda x, r, W: F.cond_conv2d(x, r, W, **kw), inputs[:3], backend=backend)
    else:
        gradcheck(lambda x, r, W, b: F.cond_conv2d(x, r, W, b, **kw), inputs,
                  backend=backend)


@pytest.mark.parametrize("routing", ["sigmoid", "softmax"])
def test_condconv_forward_gradcheck(backend, routing):
    """The whole layer with routing computed from x, so x's gradient has both paths:
    through the convolution and through pool → linear → sigmoid/softmax(·/τ) → mixing."""
    def layer(x, R, c, W, b):
        z = F.linear(F.global_avg_pool2d(x), R, c)
        r = F.sigmoid(z) if routing == "sigmoid" else F.softmax(z * (1 / 0.7), dim=1)
        return F.cond_conv2d(x, r, W, b, padding=1)

    gradcheck(layer, normal(5, (2, 2, 3, 3), (2, 2), (2,), (2, 1, 2, 2, 2), (1,)),
              backend=backend)


def test_global_avg_pool2d_gradcheck(backend):
    gradcheck(F.global_avg_pool2d, normal(6, (2, 2, 2, 3)), backend=backend)


@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4)], ids=["2d", "3d"])
def test_linear_gradcheck(backend, x_shape):
    gradcheck(F.linear, normal(7, x_shape, (2, 4), (2,)), backend=backend)
    gradcheck(F.linear, normal(8, x_shape, (2, 4)), backend=backend)


def test_dropout_gradcheck(backend):
    """The mask is drawn from the global generator: re-seeding before each call makes every
    evaluation of the finite difference use the same mask."""
    def seeded_dropout(x):
        mc.manual_seed(11)
        return F.dropout(x, 0.4, training=True)

    (x,) = normal(9, (2, 5))
    y = seeded_dropout(mc.tensor(x, dtype="float64", backend=backend)).numpy()
    kept = y != 0
    assert kept.any() and not kept.all(), "the mask should keep some entries and drop others"
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-12)
    gradcheck(seeded_dropout, [x], backend=backend)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_gradcheck(backend, dim):
    gradcheck(lambda a: F.softmax(a, dim=dim), normal(10, (3, 4)), backend=backend)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_log_softmax_gradcheck(backend, dim):
    gradcheck(lambda a: F.log_softmax(a, dim=dim), normal(11, (3, 4)), backend=backend)


def test_sigmoid_gradcheck(backend):
    """Includes large |a|, where a naive 1/(1 + e⁻ᵃ) would overflow."""
    (a,) = normal(12, (3, 4))
    a[0, :2] = (30.0, -30.0)
    gradcheck(F.sigmoid, [a], backend=backend)
