"""conv2d against torch.nn.functional.conv2d: outputs and the gradients of x, weight and bias,
in float64 with a random cotangent, over drawn stride, padding, dilation, groups and sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import compare_with_torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import conv_cases, fixture_settings, normal

import minicond as mc

# PyTorch notes that it copies the input for an even "same" kernel; that is its business.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def check_conv(case, backend: str) -> None:
    x, w, b = normal(case.seed, case.x_shape, case.weight_shape,
                     (case.out_channels,) if case.bias else None)
    kwargs = case.conv_kwargs()
    compare_with_torch(lambda x, w, b: mc.functional.conv2d(x, w, b, **kwargs),
                       lambda x, w, b: TF.conv2d(x, w, b, **kwargs),
                       [x, w, b], backend=backend)


@fixture_settings
@given(data=st.data())
def test_conv2d_matches_torch(backend, size_limit, data):
    case = data.draw(conv_cases(size_limit), label="case")
    check_conv(case, backend)


@fixture_settings
@given(data=st.data())
def test_conv2d_string_padding_matches_torch(backend, size_limit, data):
    case = data.draw(conv_cases(size_limit, padding_kinds=("same", "valid")), label="case")
    check_conv(case, backend)


@pytest.mark.parametrize("kernel, dilation", [((2, 2), 1), ((4, 3), 1), ((2, 4), (3, 1)),
                                              ((3, 2), 2)])
def test_conv2d_same_padding_with_even_kernel(backend, kernel, dilation):
    """An even dilated kernel pads one more at the bottom/right, as PyTorch does."""
    x, w, b = normal(7, (2, 2, 5, 6), (3, 2, *kernel), (3,))
    compare_with_torch(
        lambda x, w, b: mc.functional.conv2d(x, w, b, padding="same", dilation=dilation),
        lambda x, w, b: TF.conv2d(x, w, b, padding="same", dilation=dilation),
        [x, w, b], backend=backend)


def test_conv2d_depthwise_matches_torch(backend):
    """groups = Cin = Cout: each channel convolved with its own kernel."""
    x, w, b = normal(3, (2, 4, 6, 5), (4, 1, 3, 3), (4,))
    compare_with_torch(
        lambda x, w, b: mc.functional.conv2d(x, w, b, stride=2, padding=1, groups=4),
        lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1, groups=4),
        [x, w, b], backend=backend)


def test_conv2d_float32_matches_torch(backend):
    """The default dtype: float32 in, float32 out, equal to PyTorch within float32 rounding."""
    x, w, b = (a.astype(np.float32) for a in normal(5, (2, 3, 7, 7), (4, 3, 3, 3), (4,)))
    y = mc.functional.conv2d(mc.tensor(x, backend=backend), mc.tensor(w, backend=backend),
                             mc.tensor(b, backend=backend), stride=2, padding=1)
    expected = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                         stride=2, padding=1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_conv2d_gradient_of_one_input_only(backend):
    """Only x requires a gradient: x.grad matches PyTorch and the weight gets none."""
    xa, wa = normal(11, (1, 2, 5, 5), (3, 2, 3, 3))
    x = mc.tensor(xa, dtype="float64", requires_grad=True, backend=backend)
    w = mc.tensor(wa, dtype="float64", backend=backend)
    c = np.random.default_rng(2).standard_normal((1, 3, 3, 3))
    (mc.functional.conv2d(x, w) * c).sum().backward()
    xt = torch.tensor(xa, requires_grad=True)
    (TF.conv2d(xt, torch.tensor(wa)) * torch.tensor(c)).sum().backward()
    assert w.grad is None
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size", [5, 12])        # small and wider planes take other loops
@pytest.mark.parametrize("groups,bad", [(3, np.nan), (1, np.nan), (1, np.inf)],
                         ids=["depthwise-nan", "dense-nan", "dense-inf"])
def test_a_nonfinite_weight_reaches_only_the_pixels_its_tap_reads(backend, groups, bad, size):
    """w[0, 0, 0, 0] (tap (0, 0)) non-finite, padding 1, a size×size input: the input gradient
    is non-finite exactly on the (size − 1)² pixels that tap reads (h, w ≤ size − 2) of the
    channels it connects, and equals the NumPy reference there and elsewhere."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, size, size))
    w = rng.standard_normal((3, 3 // groups, 3, 3))
    w[0, 0, 0, 0] = bad
    grads = {}
    for be in ("numpy", backend):
        xt = mc.tensor(x, dtype="float64", requires_grad=True, backend=be)
        wt = mc.tensor(w, dtype="float64", backend=be)
        with np.errstate(invalid="ignore"):
            mc.functional.conv2d(xt, wt, padding=1, groups=groups).sum().backward()
        grads[be] = xt.grad.numpy()
    expected = np.zeros((1, 3, size, size), dtype=bool)
    expected[0, 0, :size - 1, :size - 1] = True   # channel 0 feeds output 0 in both cases
    assert np.array_equal(~np.isfinite(grads[backend]), expected)
    np.testing.assert_array_equal(np.isnan(grads[backend]), np.isnan(grads["numpy"]))
    np.testing.assert_allclose(grads[backend], grads["numpy"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [5, 12])
@pytest.mark.parametrize("groups", [3, 1], ids=["depthwise", "dense"])
def test_a_nonfinite_input_reaches_only_the_weight_taps_that_read_it(backend, groups, size):
    """x[0, 0, 2, size − 1] (the last column) infinite, a 3×3 kernel with padding 1: the taps
    of column j = 0 never read the last column, so their weight gradients stay finite, and
    every weight gradient equals the NumPy reference's."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, size, size))
    x[0, 0, 2, size - 1] = np.inf
    w = rng.standard_normal((3, 3 // groups, 3, 3))
    grads = {}
    for be in ("numpy", backend):
        xt = mc.tensor(x, dtype="float64", backend=be)
        wt = mc.tensor(w, dtype="float64", requires_grad=True, backend=be)
        with np.errstate(invalid="ignore"):
            (mc.functional.conv2d(xt, wt, padding=1, groups=groups) * 1.5).sum().backward()
        grads[be] = wt.grad.numpy()
    assert np.isfinite(grads[backend][:, :, :, 0]).all()
    assert not np.isfinite(grads[backend][0, 0, :, 1:]).all()
    np.testing.assert_array_equal(np.isfinite(grads[backend]), np.isfinite(grads["numpy"]))
    np.testing.assert_allclose(grads[backend], grads["numpy"], rtol=1e-12, atol=1e-12)


def test_an_empty_batch_gives_empty_results_and_gradients(backend):
    """B = 0 through conv2d, cond_conv2d and both layers: empty outputs, empty input
    gradients and zero parameter gradients, on every backend."""
    x = np.zeros((0, 4, 6, 5))
    w, W = normal(0, (6, 2, 3, 3), (3, 6, 2, 3, 3))
    xt = mc.tensor(x, dtype="float64", requires_grad=True, backend=backend)
    wt = mc.tensor(w, dtype="float64", requires_grad=True, backend=backend)
    y = mc.functional.conv2d(xt, wt, stride=2, padding="tf_same", groups=2)
    assert y.shape == (0, 6, 3, 3)
    y.sum().backward()
    assert xt.grad.shape == x.shape and not wt.grad.numpy().any()
    r = mc.tensor(np.zeros((0, 3)), dtype="float64", requires_grad=True, backend=backend)
    Wt = mc.tensor(W, dtype="float64", requires_grad=True, backend=backend)
    xt = mc.tensor(x, dtype="float64", requires_grad=True, backend=backend)
    y = mc.functional.cond_conv2d(xt, r, Wt, padding=1, groups=2)
    y.sum().backward()
    assert y.shape == (0, 6, 6, 5) and r.grad.shape == (0, 3) and not Wt.grad.numpy().any()
    for layer in (mc.nn.Conv2d(4, 6, 3, padding=1, backend=backend, dtype="float64"),
                  mc.nn.CondConv2d(4, 6, 3, padding=1, num_experts=2, backend=backend,
                                   dtype="float64").eval()):
        xt = mc.tensor(x, dtype="float64", requires_grad=True, backend=backend)
        y = layer(xt)
        y.sum().backward()
        assert y.shape == (0, 6, 6, 5) and xt.grad.shape == x.shape
        assert all(not p.grad.numpy().any() for p in layer.parameters())


def test_zero_out_channels_or_experts_is_refused():
    x = mc.tensor(np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="conv2d: weight has out_channels Cout=0"):
        mc.functional.conv2d(x, mc.tensor(np.zeros((0, 2, 3, 3))))
    r = mc.tensor(np.zeros((1, 0)))
    with pytest.raises(ValueError, match="cond_conv2d: weight has shape .*E=0 experts"):
        mc.functional.cond_conv2d(x, r, mc.tensor(np.zeros((0, 4, 2, 3, 3))))
    with pytest.raises(ValueError, match="cond_conv2d: weight has out_channels Cout=0"):
        mc.functional.cond_conv2d(x, mc.tensor(np.zeros((1, 2))),
                                  mc.tensor(np.zeros((2, 0, 2, 3, 3))))
    with pytest.raises(ValueError, match="mix_experts: weight has shape .*E=0"):
        mc.functional.mix_experts(r, mc.tensor(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="Conv2d: out_channels=0"):
        mc.nn.Conv2d(2, 0, 3)
    with pytest.raises(ValueError, match="CondConv2d: out_channels=0"):
        mc.nn.CondConv2d(2, 0, 3)
    with pytest.raises(ValueError, match="CondConv2d: num_experts=0"):
        mc.nn.CondConv2d(2, 4, 3, num_experts=0)
