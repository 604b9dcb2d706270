"""minicond.testing: gradcheck passes on correct backwards and names the input and element of a
wrong one; assert_close names the worst element; the strategies draw valid configurations."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import fixture_settings

import minicond as mc
from minicond.autograd import Function
from minicond.testing import GradcheckError, assert_close, gradcheck
from minicond.testing import strategies as mst

F = mc.functional


class ScaledSquare(Function):
    """y = a · b²; ∂L/∂a = g·b², ∂L/∂b = 2·g·a·b, plus ``bump`` added to ∂L/∂b at ``where``
    (zero for the correct op)."""

    bump = 0.0
    where = (1, 2)

    @staticmethod
    def forward(ctx, a, b):
        be = ctx.backend
        ctx.save_for_backward(a, b)
        return be.mul(a, be.mul(b, b))

    @classmethod
    def backward(cls, ctx, g):
        a, b = (ctx.backend.to_numpy(v) for v in ctx.saved)
        g = ctx.backend.to_numpy(g)
        gb = 2.0 * g * a * b
        gb[cls.where] += cls.bump
        be = ctx.backend
        return (be.from_numpy(g * b * b, g.dtype), be.from_numpy(gb, g.dtype))


class WrongScaledSquare(ScaledSquare):
    bump = 0.5


class ForgetfulScaledSquare(ScaledSquare):
    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return (ctx.backend.mul(g, ctx.backend.mul(b, b)), None)


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal((2, 3)), rng.standard_normal((2, 3))]


def test_gradcheck_passes_on_correct_backwards(backend: str) -> None:
    a, b = _inputs()
    assert gradcheck(ScaledSquare.apply, a, b, backend=backend) is True
    assert gradcheck(F.sigmoid, mc.tensor(a, requires_grad=True, backend=backend)) is True
    if backend == "numpy":   # the other backends' convolutions: tests/test_gradcheck.py
        x, w = (np.random.default_rng(0).standard_normal(s) for s in ((1, 2, 3, 3), (1, 2, 2, 2)))
        assert gradcheck(lambda x, w: F.conv2d(x, w, padding=1), x, w)


def test_gradcheck_names_the_input_and_element_of_a_wrong_backward() -> None:
    a, b = _inputs()
    with pytest.raises(GradcheckError) as info:
        gradcheck(WrongScaledSquare.apply, a, b)
    message = str(info.value)
    assert isinstance(info.value, AssertionError)
    assert message.startswith("gradcheck(WrongScaledSquare.apply): the backward's gradient")
    assert "input 1 (shape (2, 3))" in message and "worst at [1, 2]" in message
    assert "input 0" not in message                       # the correct gradient is not blamed
    check = info.value.report.inputs[1]
    assert f"analytic {check.analytic[1, 2]:.8g}" in message
    assert f"numerical {check.numerical[1, 2]:.8g}" in message
    assert check.analytic[1, 2] - check.numerical[1, 2] == pytest.approx(0.5, abs=1e-6)
    assert "1 of 6 elements differ" in message


def test_gradcheck_report_without_raising() -> None:
    a, b = _inputs()
    report = gradcheck(WrongScaledSquare.apply, a, b, raise_exception=False)
    assert not report.ok and not report
    assert [c.position for c in report.inputs] == [0, 1]
    assert report.inputs[0].ok and not report.inputs[1].ok
    assert report.inputs[1].worst == (1, 2) and report.inputs[1].failures == 1
    assert "FAILED" in report.describe()
    good = gradcheck(ScaledSquare.apply, a, b, raise_exception=False)
    assert good.ok and good and "passed" in good.describe()


def test_gradcheck_catches_a_missing_gradient_and_a_tiny_error() -> None:
    a, b = _inputs()
    with pytest.raises(GradcheckError, match="input 1.*no gradient"):
        gradcheck(ForgetfulScaledSquare.apply, a, b)

    class Slightly(ScaledSquare):
        bump = 1e-3
    with pytest.raises(GradcheckError, match=r"worst at \[1, 2\]"):
        gradcheck(Slightly.apply, a, b)
    # the same error passes under a tolerance wider than it
    assert gradcheck(Slightly.apply, a, b, atol=1e-2)


def test_gradcheck_inputs_constants_and_tuple_outputs() -> None:
    a, b = _inputs()
    seen = []

    def fn(x, constant, n):
        seen.append((x.dtype, constant.dtype, constant.requires_grad, n))
        return x * constant * n, (x * x).sum()

    # a Tensor without requires_grad is a float64 constant; an int passes through unchanged
    report = gradcheck(fn, mc.tensor(a, dtype="float32", requires_grad=True),
                       mc.tensor(b, dtype="float32"), 3, raise_exception=False)
    assert report.ok and [c.position for c in report.inputs] == [0]
    assert seen[0] == (np.float64, np.float64, False, 3)
    assert len(seen) == 1 + 2 * a.size        # one backward pass, two evaluations per element
    with mc.no_grad():                        # records its own graph inside no_grad too
        assert gradcheck(ScaledSquare.apply, a, b)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(eps=0.0), ValueError, "eps=0.0"),
    (dict(atol=-1.0), ValueError, "atol=-1.0"),
    (dict(rtol=float("nan")), ValueError, "rtol=nan"),
])
def test_gradcheck_bad_arguments(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        gradcheck(F.sigmoid, _inputs()[0], **kwargs)


def test_gradcheck_needs_something_to_check_and_a_tensor_result() -> None:
    with pytest.raises(ValueError, match="no input to check"):
        gradcheck(F.sigmoid, mc.tensor(_inputs()[0]))
    with pytest.raises(TypeError, match="must be callable"):
        gradcheck("sigmoid", _inputs()[0])
    with pytest.raises(TypeError, match="must return a Tensor"):
        gradcheck(lambda x: x.numpy(), _inputs()[0])


def test_assert_close() -> None:
    a = np.arange(12.0).reshape(3, 4)
    assert_close(mc.tensor(a, dtype="float64"), a)
    assert_close(a, a + 1e-9)                      # within float64's default tolerances
    b = a.copy()
    b[2, 1] += 0.5
    b[0, 3] += 0.1
    with pytest.raises(AssertionError, match=r"gradient: 2 of 12 elements differ; worst at "
                                             r"\[2, 1\]: actual 9\.5, expected 9"):
        assert_close(b, a, msg="gradient")
    assert_close(b, a, atol=0.6)
    with pytest.raises(AssertionError, match=r"shapes differ: actual \(3, 4\), expected \(4, 3\)"):
        assert_close(a, a.T)
    # float32 is compared with float32's looser defaults
    assert_close(a.astype(np.float32) * (1 + 1e-7), a.astype(np.float32))
    with pytest.raises(AssertionError):
        assert_close(a * (1 + 1e-5), a)
    nan = np.array([1.0, np.nan, np.inf])
    with pytest.raises(AssertionError, match="1 of 3"):
        assert_close(nan, nan)
    assert_close(nan, nan, equal_nan=True)
    with pytest.raises(AssertionError, match="worst: actual 2"):
        assert_close(2.0, 1.0)
    with pytest.raises(ValueError, match="rtol=-1"):
        assert_close(a, a, rtol=-1, atol=0)


# --- strategies -------------------------------------------------------------------------------

@settings(max_examples=15)
@given(case=mst.conv_cases(size_limit=5))
def test_conv_cases_are_valid(case) -> None:
    x, w, b = mst.normal(case.seed, case.x_shape, case.weight_shape,
                         (case.out_channels,) if case.bias else None)
    y = F.conv2d(mc.tensor(x), mc.tensor(w), None if b is None else mc.tensor(b),
                 **case.conv_kwargs())
    assert y.shape == case.out_shape


@settings(max_examples=15)
@given(case=mst.condconv_cases(size_limit=5, padding_modes=("zeros", "reflect", "circular")),
       data=st.data())
def test_condconv_cases_build_a_layer_of_the_stated_shapes(case, data) -> None:
    layer = mc.nn.CondConv2d(**case.layer_kwargs(), dtype="float64").eval()
    assert layer.weight.shape == case.weight_shape
    assert (None if layer.bias is None else layer.bias.shape) == case.bias_shape
    x = data.draw(mst.tensors(case.x_shape))
    r = data.draw(mst.routing_weights(case.conv.batch, case.num_experts))
    assert r.shape == case.routing_shape
    assert layer(x).shape == case.out_shape
    assert layer(x, mc.tensor(r)).shape == case.out_shape


@settings(max_examples=30)
@given(data=st.data(), kind=st.sampled_from(mst.ROUTING_KINDS))
def test_routing_weights_are_what_a_router_makes(data, kind) -> None:
    r = data.draw(mst.routing_weights(st.integers(1, 4), st.integers(1, 5), kinds=(kind,)))
    assert r.ndim == 2 and r.dtype == np.float64
    if kind == "sigmoid":
        assert np.all((r > 0) & (r < 1))
    else:
        np.testing.assert_allclose(r.sum(axis=1), 1.0)
    if kind == "one_hot":
        assert set(np.unique(r)) <= {0.0, 1.0}


@settings(fixture_settings, max_examples=10)
@given(data=st.data(), dtype=st.sampled_from(["float32", "float64"]))
def test_tensors_have_the_asked_shape_dtype_and_backend(backend, data, dtype) -> None:
    t = data.draw(mst.tensors((2, 3), dtype, backend=backend, requires_grad=True))
    assert t.shape == (2, 3) and t.dtype == np.dtype(dtype) and t.requires_grad
    assert t.backend is mc.get_backend(backend)
    shaped = data.draw(mst.arrays(st.tuples(st.integers(0, 3), st.integers(1, 2))))
    assert shaped.ndim == 2 and shaped.dtype == np.float64
    with pytest.raises(ValueError, match="shape=.*must be a tuple"):
        data.draw(mst.arrays((2, -1)))


def test_strategies_say_what_they_need_without_hypothesis(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.delitem(sys.modules, "minicond.testing.strategies")
    with pytest.raises(ImportError, match="needs hypothesis: pip install hypothesis"):
        importlib.import_module("minicond.testing.strategies")
