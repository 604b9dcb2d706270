"""Cross-entropy (from logits, with label smoothing) and MSE against PyTorch, with full
finite-difference gradient checks and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import compare_with_torch, gradcheck
from hypothesis import given
from hypothesis import strategies as st
from strategies import fixture_settings, normal

import minicond as mc

F = mc.functional
REDUCTIONS = ("mean", "sum", "none")


@st.composite
def classification(draw, size_limit: int = 8):
    n = draw(st.integers(1, size_limit), label="N")
    c = draw(st.integers(1, size_limit), label="C")
    seed = draw(st.integers(0, 2**16), label="seed")
    scale = draw(st.sampled_from([0.1, 1.0, 30.0]), label="logit scale")
    (logits,) = normal(seed, (n, c))
    labels = np.random.default_rng(seed).integers(0, c, size=n)
    return logits * scale, labels


@fixture_settings
@given(case=classification(), smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       reduction=st.sampled_from(REDUCTIONS))
def test_cross_entropy_matches_torch(backend, case, smoothing, reduction):
    logits, labels = case
    compare_with_torch(
        lambda z: F.cross_entropy(z, labels, label_smoothing=smoothing, reduction=reduction),
        lambda z: TF.cross_entropy(z, torch.from_numpy(labels), label_smoothing=smoothing,
                                   reduction=reduction),
        [logits], backend=backend)


def test_cross_entropy_accepts_a_list_of_labels(backend):
    (logits,) = normal(3, (4, 5))
    labels = [0, 4, 2, 2]
    compare_with_torch(lambda z: F.cross_entropy(z, labels),
                       lambda z: TF.cross_entropy(z, torch.tensor(labels)), [logits],
                       backend=backend)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_is_stable_for_huge_logits(backend, dtype):
    """Logits of ±1e4 overflow a naive exp; the loss and gradient must stay finite and equal
    PyTorch's."""
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4 + 1.0, -1e4]])
    labels = np.array([1, 1])
    z = mc.tensor(logits, dtype=dtype, requires_grad=True, backend=backend)
    loss = F.cross_entropy(z, labels, label_smoothing=0.1)
    loss.backward()
    tz = torch.tensor(logits, dtype=getattr(torch, dtype), requires_grad=True)
    ref = TF.cross_entropy(tz, torch.from_numpy(labels), label_smoothing=0.1)
    ref.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(z.grad.numpy()))
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-6)
    np.testing.assert_allclose(z.grad.numpy(), tz.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck(backend, smoothing, reduction):
    (logits,) = normal(5, (3, 4))
    labels = np.array([3, 0, 3])
    gradcheck(lambda z: F.cross_entropy(z, labels, label_smoothing=smoothing,
                                                reduction=reduction), [logits],
              backend=backend)


def test_cross_entropy_of_uniform_logits_is_log_c(backend):
    z = mc.tensor(np.zeros((2, 7)), dtype="float64", backend=backend)
    assert F.cross_entropy(z, [1, 6]).item() == pytest.approx(np.log(7), rel=1e-12)


@fixture_settings
@given(data=st.data(), reduction=st.sampled_from(REDUCTIONS))
def test_mse_matches_torch(backend, size_limit, data, reduction):
    shape = tuple(data.draw(st.lists(st.integers(1, size_limit), min_size=1, max_size=3),
                            label="shape"))
    a, b = normal(data.draw(st.integers(0, 2**16), label="seed"), shape, shape)
    compare_with_torch(lambda a, b: F.mse_loss(a, b, reduction),
                       lambda a, b: TF.mse_loss(a, b, reduction=reduction), [a, b],
                       backend=backend)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_gradcheck(backend, reduction):
    a, b = normal(9, (2, 3), (2, 3))
    gradcheck(lambda a, b: F.mse_loss(a, b, reduction), [a, b], backend=backend)


def test_mse_with_array_target(backend):
    a = mc.tensor(np.array([1.0, 2.0, 4.0]), dtype="float64", requires_grad=True,
                  backend=backend)
    loss = F.mse_loss(a, np.array([1.0, 0.0, 1.0]))
    loss.backward()
    assert loss.item() == pytest.approx((0 + 4 + 9) / 3)
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 4 / 3, 2.0])


# --- argument errors ---------------------------------------------------------------------------

def _logits(n=3, c=4):
    return mc.tensor(np.zeros((n, c)), backend="numpy")


@pytest.mark.parametrize("call,error,match", [
    (lambda: F.cross_entropy(np.zeros((3, 4)), [0, 1, 2]), TypeError, "input must be"),
    (lambda: F.cross_entropy(mc.tensor(np.zeros(4), backend="numpy"), [0]), ValueError,
     r"target has shape \(1,\); expected \(\)"),
    (lambda: F.cross_entropy(mc.tensor(np.zeros(()), backend="numpy"), 0), ValueError,
     "0-D"),
    (lambda: F.cross_entropy(_logits(), [0, 1]), ValueError, r"shape \(2,\); expected \(3,\)"),
    (lambda: F.cross_entropy(_logits(), [0, 1, 4]), ValueError, r"\[0, 4\)"),
    (lambda: F.cross_entropy(_logits(), [0, -1, 2]), ValueError, r"\[0, 4\)"),
    (lambda: F.cross_entropy(_logits(), [0.0, 1.0, 2.0]), TypeError, "integer class labels"),
    (lambda: F.cross_entropy(_logits(), np.zeros((3, 1), dtype=int)), ValueError,
     r"target has shape \(3, 1\); expected \(3,\)"),
    (lambda: F.cross_entropy(_logits(), _logits(3, 1)), TypeError, "not a float64 Tensor"),
    (lambda: F.cross_entropy(_logits(), [0, 1, 2], label_smoothing=1.5), ValueError,
     "label_smoothing=1.5"),
    (lambda: F.cross_entropy(_logits(), [0, 1, 2], label_smoothing=float("nan")), ValueError,
     "label_smoothing"),
    (lambda: F.cross_entropy(_logits(), [0, 1, 2], reduction="avg"), ValueError,
     "reduction='avg'"),
    (lambda: F.cross_entropy(_logits(0, 4), []), ValueError, "at least one row"),
    (lambda: F.mse_loss(_logits(), _logits(3, 5)), ValueError, "target has shape"),
    (lambda: F.mse_loss(_logits(), _logits(), reduction="max"), ValueError, "reduction"),
    (lambda: F.mse_loss([1.0], _logits()), TypeError, "input must be"),
])
def test_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@given(n=st.integers(1, 5), c=st.integers(1, 5), bad=st.integers(-50, 50))
def test_drawn_out_of_range_labels(n, c, bad):
    labels = np.zeros(n, dtype=np.int64)
    labels[-1] = bad
    z = mc.tensor(np.zeros((n, c)), backend="numpy")
    if 0 <= bad < c:
        assert np.isfinite(F.cross_entropy(z, labels).item())
    else:
        with pytest.raises(ValueError, match="cross_entropy: target labels"):
            F.cross_entropy(z, labels)
