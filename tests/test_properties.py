"""Algebraic properties of CondConv that hold for any configuration:

* conv is linear in its kernel, so y_b = Σ_e r_be · conv2d(x_b, W_e) (+ bias);
* one-hot routing is a static conv with the chosen expert; E = 1 with r = 1 is conv2d;
* each example's output depends on that example only (batch composition does not matter);
* the routing gradient is gr_be = ⟨gK_b, W_e⟩ with gK_b the conv weight gradient of example b.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF
from helpers import random_cotangent
from hypothesis import given
from hypothesis import strategies as st
from strategies import conv_cases, fixture_settings, normal

import minicond as mc

F = mc.functional
TOL = dict(rtol=1e-9, atol=1e-10)


def as_tensors(backend: str, *arrays, requires_grad: bool = False):
    return [None if a is None else mc.tensor(a, dtype="float64", requires_grad=requires_grad,
                                             backend=backend) for a in arrays]


@fixture_settings
@given(data=st.data())
def test_condconv_is_a_mixture_of_expert_convolutions(backend, size_limit, data):
    """y_b = Σ_e r_be (conv2d(x_b, W_e) + bias_e) with a mixed bias, or
    Σ_e r_be conv2d(x_b, W_e) + bias with a static one."""
    case = data.draw(conv_cases(size_limit), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    mixed = data.draw(st.booleans(), label="mixed bias")
    bias_shape = ((E, case.out_channels) if mixed else (case.out_channels,)) if case.bias \
        else None
    x, r, W, bias = normal(case.seed, case.x_shape, (case.batch, E), (E, *case.weight_shape),
                           bias_shape)
    kw = case.conv_kwargs()
    xt, rt, Wt, bt = as_tensors(backend, x, r, W, bias)
    y = F.cond_conv2d(xt, rt, Wt, bt, **kw).numpy()
    expected = np.zeros(case.out_shape)
    for e in range(E):
        expert_bias = None if (bias is None or not mixed) else as_tensors(backend, bias[e])[0]
        y_e = F.conv2d(xt, as_tensors(backend, W[e])[0], expert_bias, **kw).numpy()
        expected += r[:, e, None, None, None] * y_e
    if bias is not None and not mixed:
        expected += bias[None, :, None, None]
    np.testing.assert_allclose(y, expected, **TOL)


@fixture_settings
@given(data=st.data())
def test_one_hot_routing_is_a_static_conv(backend, size_limit, data):
    """Each example routed entirely to one expert e_b gives conv2d(x_b, W_{e_b}) + bias."""
    case = data.draw(conv_cases(size_limit), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    chosen = data.draw(st.lists(st.integers(0, E - 1), min_size=case.batch,
                                max_size=case.batch), label="experts")
    x, W, bias = normal(case.seed, case.x_shape, (E, *case.weight_shape),
                        (case.out_channels,) if case.bias else None)
    r = np.eye(E)[chosen]
    kw = case.conv_kwargs()
    xt, rt, Wt, bt = as_tensors(backend, x, r, W, bias)
    y = F.cond_conv2d(xt, rt, Wt, bt, **kw).numpy()
    for b, e in enumerate(chosen):
        xb, We = as_tensors(backend, x[b:b + 1], W[e])
        np.testing.assert_allclose(y[b:b + 1], F.conv2d(xb, We, bt, **kw).numpy(), **TOL)


@fixture_settings
@given(data=st.data())
def test_one_hot_routing_gradients_are_the_static_convs(backend, size_limit, data):
    """With the whole batch routed to expert e: gx and gbias are conv2d's, gW_e is conv2d's
    weight gradient and the other experts get zero."""
    case = data.draw(conv_cases(size_limit), label="case")
    E = data.draw(st.integers(2, 4), label="E")
    e = data.draw(st.integers(0, E - 1), label="expert")
    x, W, bias = normal(case.seed, case.x_shape, (E, *case.weight_shape), (case.out_channels,))
    r = np.zeros((case.batch, E))
    r[:, e] = 1.0
    kw = case.conv_kwargs()
    c = random_cotangent(case.out_shape)
    xc, rc, Wc, bc = as_tensors(backend, x, r, W, bias, requires_grad=True)
    (F.cond_conv2d(xc, rc, Wc, bc, **kw) * c).sum().backward()
    xs, We, bs = as_tensors(backend, x, W[e], bias, requires_grad=True)
    (F.conv2d(xs, We, bs, **kw) * c).sum().backward()
    np.testing.assert_allclose(xc.grad.numpy(), xs.grad.numpy(), **TOL)
    np.testing.assert_allclose(bc.grad.numpy(), bs.grad.numpy(), **TOL)
    expected_gW = np.zeros_like(W)
    expected_gW[e] = We.grad.numpy()
    np.testing.assert_allclose(Wc.grad.numpy(), expected_gW, **TOL)


@fixture_settings
@given(data=st.data())
def test_single_expert_with_unit_routing_is_conv2d(backend, size_limit, data):
    """E = 1, r = 1: output and the gradients of x, the weight and the bias equal conv2d's."""
    case = data.draw(conv_cases(size_limit), label="case")
    x, w, bias = normal(case.seed, case.x_shape, case.weight_shape,
                        (case.out_channels,) if case.bias else None)
    kw = case.conv_kwargs()
    c = random_cotangent(case.out_shape)
    xc, Wc, bc = as_tensors(backend, x, w[None], bias, requires_grad=True)
    (rc,) = as_tensors(backend, np.ones((case.batch, 1)))
    yc = F.cond_conv2d(xc, rc, Wc, bc, **kw)
    xs, ws, bs = as_tensors(backend, x, w, bias, requires_grad=True)
    ys = F.conv2d(xs, ws, bs, **kw)
    np.testing.assert_allclose(yc.numpy(), ys.numpy(), **TOL)
    (yc * c).sum().backward()
    (ys * c).sum().backward()
    np.testing.assert_allclose(xc.grad.numpy(), xs.grad.numpy(), **TOL)
    np.testing.assert_allclose(Wc.grad.numpy()[0], ws.grad.numpy(), **TOL)
    if bias is not None:
        np.testing.assert_allclose(bc.grad.numpy(), bs.grad.numpy(), **TOL)


@fixture_settings
@given(data=st.data())
def test_batch_composition_does_not_change_rows(backend, size_limit, data):
    """A permuted sub-batch gives the same rows, for cond_conv2d and for the module (whose
    routing is computed from each example alone)."""
    case = data.draw(conv_cases(size_limit), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    order = data.draw(st.permutations(range(case.batch)), label="order")
    rows = order[:data.draw(st.integers(1, case.batch), label="rows")]
    x, r, W = normal(case.seed, case.x_shape, (case.batch, E), (E, *case.weight_shape))
    kw = case.conv_kwargs()
    xt, rt, Wt, xs, rs = as_tensors(backend, x, r, W, x[rows], r[rows])
    np.testing.assert_allclose(F.cond_conv2d(xs, rs, Wt, **kw).numpy(),
                               F.cond_conv2d(xt, rt, Wt, **kw).numpy()[rows], **TOL)
    layer = mc.nn.CondConv2d(case.in_channels, case.out_channels, case.kernel, num_experts=E,
                             dtype="float64", backend=backend, **kw).eval()
    np.testing.assert_allclose(layer(xs).numpy(), layer(xt).numpy()[rows], **TOL)


@fixture_settings
@given(data=st.data())
def test_routing_gradient_is_kernel_gradient_inner_expert(backend, size_limit, data):
    """gr_be = ⟨gK_b, W_e⟩ (+ ⟨Σ_ij g_b, bias_e⟩ for a mixed bias), with gK_b, the gradient
    of example b's own kernel, computed separately by PyTorch autograd."""
    case = data.draw(conv_cases(size_limit), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    mixed = data.draw(st.booleans(), label="mixed bias")
    x, r, W, bias = normal(case.seed, case.x_shape, (case.batch, E), (E, *case.weight_shape),
                           (E, case.out_channels) if mixed else (case.out_channels,))
    kw = case.conv_kwargs()
    c = random_cotangent(case.out_shape)
    (xt, Wt, bt), (rt,) = as_tensors(backend, x, W, bias), as_tensors(backend, r,
                                                                      requires_grad=True)
    (F.cond_conv2d(xt, rt, Wt, bt, **kw) * c).sum().backward()
    expected = np.empty((case.batch, E))
    for b in range(case.batch):
        K_b = torch.tensor(np.tensordot(r[b], W, axes=1), requires_grad=True)
        y_b = TF.conv2d(torch.tensor(x[b:b + 1]), K_b, **kw)
        (gK_b,) = torch.autograd.grad((y_b * torch.tensor(c[b:b + 1])).sum(), K_b)
        expected[b] = np.tensordot(W, gK_b.numpy(), axes=gK_b.ndim)
        if mixed:
            expected[b] += bias @ c[b].sum(axis=(1, 2))
    np.testing.assert_allclose(rt.grad.numpy(), expected, **TOL)
