"""Invalid arguments: every public entry point rejects bad values, drawn by hypothesis, with a
ValueError or TypeError whose message names the argument.

Each strategy below draws one bad call, a ``Case``: a thunk, the exception classes it may
raise, and a pattern the message must contain (the argument's name).
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicond as mc
import minicond.functional as F
from minicond.backends import BACKEND_NAMES, numpy_ref
from minicond.nn import CondConv2d, Conv2d, Dropout, Linear, Router

BAD = (ValueError, TypeError)


@dataclass
class Case:
    call: Callable[[], object]
    exc: type[Exception] | tuple[type[Exception], ...]
    names: str  # regex the message must match: the argument's name
    label: str = ""

    def __repr__(self) -> str:
        return f"Case({self.label or self.names})"


def check(case: Case) -> None:
    with pytest.raises(case.exc, match=case.names):
        case.call()


def t(shape, dtype="float64"):
    return mc.tensor(np.random.default_rng(0).standard_normal(shape), dtype=dtype,
                     backend="numpy")


# --- bad scalar values --------------------------------------------------------------------------

non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
not_a_number = st.one_of(st.text(max_size=3), st.none(), st.just([0.5]), st.just(1j))
bad_probability = st.one_of(non_finite, st.floats(max_value=-1e-6, allow_nan=False,
                                                  allow_infinity=False),
                            st.floats(min_value=1.000001, allow_nan=False,
                                      allow_infinity=False))
non_positive_int = st.integers(max_value=0)
negative_int = st.integers(max_value=-1)
not_an_int = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                       st.just(True), st.just(2.0))
unknown_name = st.text(max_size=8).filter(lambda s: s not in BACKEND_NAMES)
bad_dtype = st.sampled_from(["float16", "int32", "int64", "complex64", "bool", "str",
                             "bfloat16", np.float16, np.int32, int, complex, bool, object])
# tensors also hold int64 and bool (not differentiable); parameters and layers do not
bad_tensor_dtype = st.sampled_from(["float16", "int32", "complex64", "str", "bfloat16",
                                    np.float16, np.int32, np.uint8, complex, object])
bad_pair = st.one_of(st.tuples(st.integers(1, 3)), st.tuples(*[st.integers(1, 3)] * 3))


def bad_int_value(minimum: int):
    """(value, exception) for an int argument that must be >= minimum."""
    return st.one_of(st.tuples(st.integers(max_value=minimum - 1), st.just(ValueError)),
                     st.tuples(not_an_int, st.just(TypeError)))


def bad_pair_value(minimum: int):
    """(value, exception) for an int-or-pair argument whose entries must be >= minimum."""
    return st.one_of(
        bad_int_value(minimum),
        st.tuples(st.tuples(st.integers(minimum, 3), st.integers(max_value=minimum - 1)),
                  st.just(ValueError)),
        st.tuples(bad_pair, st.just(ValueError)))


# --- mc.tensor, Tensor.backward, Tensor.to ---------------------------------------------------

@st.composite
def tensor_cases(draw, kind):
    if kind == "dtype":
        dt = draw(bad_tensor_dtype)
        return Case(lambda: mc.tensor([1.0, 2.0], dtype=dt), TypeError, "dtype", kind)
    if kind == "data type":
        data = draw(st.one_of(st.text(min_size=1, max_size=3), st.complex_numbers(),
                              st.lists(st.text(min_size=1, max_size=2), min_size=1,
                                       max_size=3), st.none(), st.just({"a": 1}),
                              st.just(np.array([1 + 2j]))))
        return Case(lambda: mc.tensor(data), TypeError, "data", kind)
    if kind == "ragged":
        n = draw(st.integers(1, 3))
        data = [[0.0] * n, [0.0] * (n + draw(st.integers(1, 2)))]
        return Case(lambda: mc.tensor(data), ValueError, "data", kind)
    name = draw(unknown_name | st.integers())
    return Case(lambda: mc.tensor([1.0], backend=name), ValueError, "backend", kind)


@pytest.mark.parametrize("kind", ["dtype", "data type", "ragged", "backend"])
@given(data=st.data())
def test_tensor_rejects_bad_arguments(kind, data):
    check(data.draw(tensor_cases(kind)))


@st.composite
def backward_cases(draw, kind):
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    y = t(shape).requires_grad_() * 2.0
    if kind == "omitted":
        if y.numel() == 1:
            y = y.reshape(1, 1) * np.ones((1, 2))
        return Case(lambda: y.backward(), ValueError, "grad", kind)
    if kind == "shape":
        bad = tuple(draw(st.lists(st.integers(1, 3), max_size=3).filter(
            lambda s: tuple(s) != shape)))
        return Case(lambda: y.backward(np.ones(bad)), ValueError, "grad", kind)
    g = draw(st.one_of(st.text(min_size=1, max_size=3), st.just(np.ones(shape, complex)),
                       st.just(object())))
    return Case(lambda: y.backward(g), TypeError, "grad", kind)


@pytest.mark.parametrize("kind", ["omitted", "shape", "type"])
@given(data=st.data())
def test_backward_rejects_bad_arguments(kind, data):
    check(data.draw(backward_cases(kind)))


@given(bad=st.one_of(st.tuples(st.just("backend"), unknown_name.filter(
    lambda s: s not in ("float32", "float64", "int64", "bool"))),
    st.tuples(st.just("dtype"), bad_tensor_dtype)))
def test_to_rejects_unknown_backend_and_dtype(bad):
    arg, value = bad
    x = t((2,))
    exc = ValueError if arg == "backend" else TypeError
    with pytest.raises(exc, match=arg):
        x.to(**{arg: value})


# --- conv2d, cond_conv2d, mix_experts --------------------------------------------------------

@st.composite
def conv_cases(draw, cond: bool, kind: str):
    """A valid convolution with exactly one argument spoiled."""
    g = draw(st.integers(1, 2))
    cin, cout, k, E, B = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2)), 3, 2, 2
    args = dict(x=t((B, cin, 5, 5)), weight=t((E, cout, cin // g, k, k) if cond
                                               else (cout, cin // g, k, k)),
                bias=t((cout,)), stride=1, padding=1, dilation=1, groups=g)
    if cond:
        args["routing_weights"] = t((B, E))
    fn = F.cond_conv2d if cond else F.conv2d
    exc: type[Exception] = ValueError
    names = kind.split()[0]
    if kind == "x ndim":
        args["x"] = t(tuple(range(1, draw(st.sampled_from([1, 2, 3, 5])) + 1)))
    elif kind == "x type":
        args["x"], exc = draw(st.sampled_from([args["x"].numpy(), None, [1.0]])), TypeError
    elif kind == "weight ndim":
        nd = draw(st.sampled_from([2, 3, 4, 6] if cond else [2, 3, 5]))
        args["weight"] = t((1,) * nd)
    elif kind == "groups":
        value, exc = draw(st.one_of(bad_int_value(1), st.tuples(st.sampled_from([3, 5]),
                                                                 st.just(ValueError))))
        args["groups"] = value
    elif kind in ("stride", "padding", "dilation"):
        args[kind], exc = draw(bad_pair_value(0 if kind == "padding" else 1))
        # a string padding is an unknown mode (ValueError), not a bad type
        if kind == "padding" and isinstance(args[kind], str):
            exc = ValueError
    elif kind == "padding string":
        args["padding"], names = draw(st.text(max_size=6).filter(
            lambda s: s not in ("same", "valid"))), "padding"
    elif kind == "same with stride":
        args["padding"], args["stride"], names = "same", draw(st.integers(2, 4)), "padding"
    elif kind == "kernel too large":
        size = draw(st.integers(1, 2))
        args["x"] = t((B, cin, size, draw(st.integers(1, 6))))
        args["padding"], args["dilation"] = 0, draw(st.integers(1, 2))
        names = "kernel"
    elif kind == "weight channels":
        shape = list(args["weight"].shape)
        shape[-3] += draw(st.integers(1, 2))
        args["weight"] = t(tuple(shape))
        names = "weight|channels"
    elif kind == "bias shape":
        n = args["weight"].shape[-4]
        args["bias"] = t(draw(st.sampled_from([(n + 1,), (n, 1), (1, n, 1)])))
    elif kind == "dtype mix":
        which = draw(st.sampled_from(["weight", "bias"] + (["routing_weights"] if cond else [])))
        args[which] = args[which].float()
        exc, names = TypeError, "dtype"
    elif kind == "routing ndim":
        args["routing_weights"] = t(draw(st.sampled_from([(B,), (B, E, 1)])))
        names = "routing_weights"
    elif kind == "routing shape":
        args["routing_weights"] = t(draw(st.sampled_from([(B + 1, E), (B, E + 1), (1, 1)])))
        names = "routing_weights"
    elif kind == "routing type":
        args["routing_weights"], exc = np.ones((B, E)), TypeError
        names = "routing_weights"
    if cond:
        return Case(lambda: fn(args["x"], args["routing_weights"], args["weight"],
                               args["bias"], args["stride"], args["padding"], args["dilation"],
                               args["groups"]), exc, names, kind)
    return Case(lambda: fn(args["x"], args["weight"], args["bias"], args["stride"],
                           args["padding"], args["dilation"], args["groups"]), exc, names, kind)


CONV_KINDS = ["x ndim", "x type", "weight ndim", "groups", "stride", "padding", "dilation",
              "padding string", "same with stride", "kernel too large", "weight channels",
              "bias shape", "dtype mix"]


@pytest.mark.parametrize("kind", CONV_KINDS)
@given(data=st.data())
def test_conv2d_rejects_bad_arguments(kind, data):
    check(data.draw(conv_cases(False, kind)))


@pytest.mark.parametrize("kind", CONV_KINDS + ["routing ndim", "routing shape", "routing type"])
@given(data=st.data())
def test_cond_conv2d_rejects_bad_arguments(kind, data):
    check(data.draw(conv_cases(True, kind)))


def test_cond_conv2d_rejects_a_bias_of_the_wrong_expert_count():
    with pytest.raises(ValueError, match="bias"):
        F.cond_conv2d(t((1, 2, 4, 4)), t((1, 3)), t((3, 4, 2, 3, 3)), t((2, 4)))


@st.composite
def mix_cases(draw, kind):
    B, E = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    r, W = t((B, E)), t((E, 2, 2))
    exc, names = ValueError, "weight"
    if kind == "routing ndim":
        r, names = t(draw(st.sampled_from([(E,), (B, E, 1)]))), "routing_weights"
    elif kind == "weight ndim":
        W = t((E,))
    elif kind == "experts":
        W = t((E + draw(st.integers(1, 2)), 2))
    else:
        r, exc, names = r.numpy(), TypeError, "routing_weights"
    return Case(lambda: F.mix_experts(r, W), exc, names, kind)


@pytest.mark.parametrize("kind", ["routing ndim", "weight ndim", "experts", "type"])
@given(data=st.data())
def test_mix_experts_rejects_bad_arguments(kind, data):
    check(data.draw(mix_cases(kind)))


# --- pad, linear, dropout, pooling, softmax ---------------------------------------------------

@st.composite
def pad_cases(draw, kind):
    H, W = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    x = t((1, 2, H, W))
    mode, exc, names = "zeros", ValueError, "pad"
    if kind == "x ndim":
        x, names = t((2,) * draw(st.sampled_from([1, 2, 3, 5]))), "x"
        pads = 1
    elif kind == "mode":
        mode = draw(st.text(max_size=8).filter(
            lambda s: s not in F.PAD_MODES + ("constant",)))
        pads, names = 1, "mode"
    elif kind == "negative":
        pads = draw(st.one_of(negative_int, st.tuples(negative_int, *[st.integers(0, 2)] * 3)))
    elif kind == "type":
        pads, exc = draw(st.one_of(st.floats(), st.text(max_size=2),
                                   st.tuples(st.just(1.5), st.just(1), st.just(1),
                                             st.just(1)))), TypeError
    elif kind == "length":
        pads = tuple(draw(st.lists(st.integers(0, 2), max_size=6).filter(lambda s: len(s) != 4)))
    elif kind == "reflect":
        mode, pads = "reflect", draw(st.integers(min(H, W), 6))
    else:
        mode, pads = "circular", draw(st.integers(min(H, W) + 1, 7))
    return Case(lambda: F.pad(x, pads, mode), exc, names, kind)


@pytest.mark.parametrize("kind", ["x ndim", "mode", "negative", "type", "length", "reflect",
                                  "circular"])
@given(data=st.data())
def test_pad_rejects_bad_arguments(kind, data):
    check(data.draw(pad_cases(kind)))


@st.composite
def linear_cases(draw, kind):
    n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x, w, b = t((2, n_in)), t((n_out, n_in)), t((n_out,))
    exc, names = ValueError, kind.split()[0]
    if kind == "x features":
        x = t((2, n_in + draw(st.integers(1, 2))))
    elif kind == "weight ndim":
        w = t(draw(st.sampled_from([(n_in,), (1, n_out, n_in)])))
    elif kind == "bias shape":
        b = t(draw(st.sampled_from([(n_out + 1,), (1, n_out)])))
    elif kind == "type":
        x, exc, names = x.numpy(), TypeError, "x"
    else:
        w, exc, names = w.float(), TypeError, "dtype"
    return Case(lambda: F.linear(x, w, b), exc, names, kind)


@pytest.mark.parametrize("kind", ["x features", "weight ndim", "bias shape", "type", "dtype"])
@given(data=st.data())
def test_linear_rejects_bad_arguments(kind, data):
    check(data.draw(linear_cases(kind)))


@given(p=st.one_of(st.tuples(bad_probability, st.just(ValueError)),
                   st.tuples(not_a_number, st.just(TypeError))))
def test_dropout_rejects_bad_probabilities(p):
    value, exc = p
    with pytest.raises(exc, match=r"\bp="):
        F.dropout(t((2, 3)), value)
    with pytest.raises(exc, match=r"\bp="):
        Dropout(value)


def test_dropout_rejects_a_non_tensor():
    with pytest.raises(TypeError, match="x"):
        F.dropout(np.ones(3), 0.5)


@given(shape=st.one_of(st.lists(st.integers(1, 3), max_size=3),
                       st.lists(st.integers(1, 3), min_size=5, max_size=6),
                       st.tuples(st.integers(1, 2), st.integers(1, 2), st.just(0),
                                 st.integers(0, 2)).map(list)))
def test_global_avg_pool2d_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="x"):
        F.global_avg_pool2d(t(tuple(shape)))


@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3), data=st.data())
def test_softmax_rejects_bad_dims(shape, data):
    n = len(shape)
    dim, exc = data.draw(st.one_of(
        st.tuples(st.integers(max_value=-n - 1) | st.integers(min_value=n), st.just(ValueError)),
        st.tuples(st.floats() | st.text(max_size=2) | st.just(True), st.just(TypeError))))
    for fn in (F.softmax, F.log_softmax):
        with pytest.raises(exc, match="dim"):
            fn(t(tuple(shape)), dim)


# --- shape ops, indexing and matmul -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["count", "two -1", "below -1", "type", "zero with -1"])
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3), data=st.data())
def test_reshape_rejects_bad_shapes(kind, shape, data):
    x = t(tuple(shape))
    numel = x.numel()
    exc = ValueError
    if kind == "count":
        new = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3).filter(
            lambda s: int(np.prod(s)) != numel))
    elif kind == "two -1":
        new = [-1, -1]
    elif kind == "below -1":
        new = [data.draw(st.integers(max_value=-2)), 1]
    elif kind == "type":
        new, exc = [data.draw(st.floats() | st.text(max_size=2)), 1], TypeError
    else:
        new = [0, -1]
    with pytest.raises(exc, match="shape"):
        x.reshape(*new)


@pytest.mark.parametrize("kind", ["count", "repeat", "range", "type"])
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=4), data=st.data())
def test_permute_rejects_bad_dims(kind, shape, data):
    n = len(shape)
    x = t(tuple(shape))
    exc = ValueError
    dims = list(range(n))
    if kind == "count":
        dims = data.draw(st.lists(st.integers(0, n - 1), max_size=n + 2).filter(
            lambda d: len(d) != n))
    elif kind == "repeat":
        if n == 1:
            dims = [0, 0]
        else:
            dims[1] = dims[0]
    elif kind == "range":
        dims[data.draw(st.integers(0, n - 1))] = data.draw(
            st.integers(min_value=n) | st.integers(max_value=-n - 1))
    else:
        dims[0], exc = data.draw(st.floats() | st.text(max_size=2) | st.just(None)), TypeError
    with pytest.raises(exc, match="dim"):
        x.permute(*dims)


@pytest.mark.parametrize("kind", ["range", "list range", "float", "float list",
                                  "float tensor", "too many", "mask shape", "str"])
@given(n=st.integers(1, 4), data=st.data())
def test_index_rejects_bad_indices(kind, n, data):
    x = t((n, 2))
    if kind in ("range", "list range"):
        i = data.draw(st.integers(n, 2**40) | st.integers(-2**40, -n - 1))
        index, exc = (i if kind == "range" else [0, i]), IndexError
    elif kind in ("too many", "mask shape"):
        exc = IndexError
        index = (0, 1, 0) if kind == "too many" else np.array([True] * (n + 1))
    else:
        exc = TypeError
        index = {"float": 1.5, "float list": [0.0, 1.0], "str": "a",
                 "float tensor": mc.tensor([0.0], backend="numpy")}[kind]
    with pytest.raises(exc, match="index"):
        x[index]


@st.composite
def matmul_cases(draw, kind):
    m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
    exc, names = ValueError, r"\ba\b|\bb\b|operand"
    if kind == "ndim":
        a, b = draw(st.sampled_from([(t((k,)), t((k, n))), (t((m, k)), t((k,))),
                                     (t(()), t((k, n)))]))
    elif kind == "inner":
        a, b = t((m, k)), t((k + draw(st.integers(1, 2)), n))
    elif kind == "batch":
        a, b = t((2, m, k)), t((3, k, n))
        names = "batch"
    else:
        a, b, exc, names = t((m, k)), np.ones((k, n)), TypeError, r"\bb\b"
    return Case(lambda: F.matmul(a, b), exc, names, kind)


@pytest.mark.parametrize("kind", ["ndim", "inner", "batch", "type"])
@given(data=st.data())
def test_matmul_rejects_bad_operands(kind, data):
    check(data.draw(matmul_cases(kind)))


@given(other=st.one_of(st.text(max_size=2), st.none(), st.just([1.0]),
                       st.just(np.array(["a"])), st.just(1j)))
def test_operators_reject_unsupported_operands(other):
    x = t((2,))
    for op in (lambda: x + other, lambda: x * other, lambda: other - x, lambda: x / other):
        with pytest.raises(TypeError, match="operand"):
            op()


@given(shape=st.lists(st.integers(2, 4), min_size=1, max_size=2))
def test_operators_reject_shapes_that_do_not_broadcast(shape):
    x = t((5, 7))
    for other in (np.ones(shape), t(tuple(shape))):
        with pytest.raises(ValueError, match="broadcast"):
            x + other


@given(exponent=st.one_of(st.text(max_size=2), st.none(), st.just(True)))
def test_power_needs_a_real_scalar_exponent(exponent):
    with pytest.raises(TypeError, match="exponent"):
        t((2,)) ** exponent
    # a tensor exponent is allowed, if its shape broadcasts
    with pytest.raises(ValueError, match="exponent"):
        t((2,)) ** t((3,))


# --- modules ----------------------------------------------------------------------------------

@st.composite
def conv_module_cases(draw, cond: bool, kind: str):
    kwargs: dict[str, object] = {}
    names, exc = kind.split()[0], ValueError
    if kind in ("in_channels", "out_channels", "num_experts"):
        kwargs[kind], exc = draw(bad_int_value(1))
    elif kind in ("kernel_size", "stride", "dilation", "padding"):
        kwargs[kind], exc = draw(bad_pair_value(0 if kind == "padding" else 1))
        # a string padding is an unknown mode (ValueError), not a bad type
        if kind == "padding" and isinstance(kwargs[kind], str):
            exc = ValueError
    elif kind == "groups":
        kwargs["groups"], exc = draw(st.one_of(bad_int_value(1), st.tuples(
            st.sampled_from([3, 5]), st.just(ValueError))))
    elif kind == "padding string":
        kwargs["padding"] = draw(st.text(max_size=6).filter(lambda s: s not in ("same",
                                                                                 "valid")))
    elif kind == "same with stride":
        kwargs["padding"], kwargs["stride"], names = "same", draw(st.integers(2, 3)), "padding"
    elif kind == "padding_mode":
        kwargs["padding_mode"] = draw(st.text(max_size=8).filter(lambda s: s not in F.PAD_MODES))
    elif kind == "dtype":
        kwargs["dtype"], exc = draw(bad_dtype), TypeError
    elif kind == "backend":
        kwargs["backend"] = draw(unknown_name)
    elif kind == "dropout_rate":
        kwargs["dropout_rate"], exc = draw(st.one_of(
            st.tuples(st.one_of(bad_probability, st.just(1.0)), st.just(ValueError)),
            st.tuples(not_a_number, st.just(TypeError))))
    elif kind == "routing":
        kwargs["routing"] = draw(st.text(max_size=8).filter(
            lambda s: s not in ("sigmoid", "softmax")))
    elif kind == "temperature":
        kwargs["temperature"], exc = draw(st.one_of(
            st.tuples(st.one_of(non_finite, st.floats(max_value=0.0, allow_nan=False)),
                      st.just(ValueError)),
            st.tuples(not_a_number, st.just(TypeError))))
    base = dict(in_channels=4, out_channels=4, kernel_size=3)
    base.update(kwargs)
    cls = CondConv2d if cond else Conv2d
    return Case(lambda: cls(**base), exc, names, kind)


MODULE_KINDS = ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                "groups", "padding string", "same with stride", "padding_mode", "dtype",
                "backend"]


@pytest.mark.parametrize("kind", MODULE_KINDS)
@given(data=st.data())
def test_conv2d_module_rejects_bad_arguments(kind, data):
    check(data.draw(conv_module_cases(False, kind)))


@pytest.mark.parametrize("kind", MODULE_KINDS + ["num_experts", "dropout_rate", "routing",
                                                 "temperature"])
@given(data=st.data())
def test_condconv2d_module_rejects_bad_arguments(kind, data):
    check(data.draw(conv_module_cases(True, kind)))


@pytest.mark.parametrize("kind", ["x ndim", "x type", "routing shape", "routing type",
                                  "kernel too large"])
@given(data=st.data())
def test_condconv2d_forward_rejects_bad_inputs(kind, data):
    layer = CondConv2d(2, 4, 3, num_experts=3)
    x = mc.tensor(np.ones((2, 2, 5, 5), np.float32), backend=layer.weight.backend)
    r = None
    exc, names = ValueError, "x"
    if kind == "x ndim":
        x = mc.tensor(np.ones((2,) * data.draw(st.sampled_from([2, 3, 5])), np.float32))
    elif kind == "x type":
        x, exc = np.ones((2, 2, 5, 5), np.float32), TypeError
    elif kind == "routing shape":
        r = mc.tensor(np.ones(data.draw(st.sampled_from([(2, 2), (3, 3), (2,), (2, 3, 1)])),
                              np.float32))
        names = "routing_weights"
    elif kind == "routing type":
        r, exc, names = np.ones((2, 3)), TypeError, "routing_weights"
    else:
        x, names = mc.tensor(np.ones((2, 2, 2, data.draw(st.integers(1, 5))), np.float32)), \
            "kernel"
    with pytest.raises(exc, match=names):
        layer(x, r)


@given(size=st.integers(1, 3), extra=st.integers(0, 2), mode=st.sampled_from(["reflect",
                                                                               "circular"]))
def test_module_padding_modes_reject_padding_larger_than_the_input(size, extra, mode):
    """reflect needs padding < size and circular padding <= size, checked before any kernel."""
    pad = size + extra + (0 if mode == "reflect" else 1)
    x = mc.tensor(np.ones((1, 2, size, size + 4), np.float32))
    for layer in (Conv2d(2, 2, 1, padding=pad, padding_mode=mode),
                  CondConv2d(2, 2, 1, padding=pad, padding_mode=mode, num_experts=2).eval()):
        with pytest.raises(ValueError, match=f"{mode} padding"):
            layer(x)


@given(cin=st.integers(1, 5).filter(lambda c: c != 2))
def test_layers_reject_inputs_with_the_wrong_channel_count(cin):
    x = mc.tensor(np.ones((1, cin, 4, 4), np.float32))
    for layer in (Conv2d(2, 4, 3), CondConv2d(2, 4, 3, num_experts=2)):
        with pytest.raises(ValueError, match="channels|in_features"):
            layer(x)
    with pytest.raises(ValueError, match="in_features"):
        Linear(2, 3)(mc.tensor(np.ones((4, cin), np.float32)))

@st.composite
def router_cases(draw, kind):
    kwargs: dict[str, object] = dict(in_channels=3, num_experts=2)
    exc = ValueError
    if kind in ("in_channels", "num_experts"):
        kwargs[kind], exc = draw(bad_int_value(1))
    elif kind == "dropout_rate":
        kwargs[kind], exc = draw(st.one_of(st.tuples(bad_probability, st.just(ValueError)),
                                           st.tuples(not_a_number, st.just(TypeError))))
    elif kind == "routing":
        kwargs[kind] = draw(st.text(max_size=8).filter(lambda s: s not in ("sigmoid",
                                                                            "softmax")))
    else:
        kwargs[kind], exc = draw(st.one_of(
            st.tuples(st.one_of(non_finite, st.floats(max_value=0.0, allow_nan=False)),
                      st.just(ValueError)),
            st.tuples(not_a_number, st.just(TypeError))))
    return Case(lambda: Router(**kwargs), exc, kind, kind)


@pytest.mark.parametrize("kind", ["in_channels", "num_experts", "dropout_rate", "routing",
                                  "temperature"])
@given(data=st.data())
def test_router_rejects_bad_arguments(kind, data):
    check(data.draw(router_cases(kind)))


@given(arg=st.sampled_from(["in_features", "out_features"]), bad=bad_int_value(1))
def test_linear_module_rejects_bad_sizes(arg, bad):
    value, exc = bad
    kwargs = dict(in_features=2, out_features=2)
    kwargs[arg] = value
    with pytest.raises(exc, match=arg):
        Linear(**kwargs)


# --- global state -----------------------------------------------------------------------------

@given(seed=st.one_of(negative_int, st.floats(), st.text(max_size=3), st.none(),
                      st.just(True)))
def test_manual_seed_rejects_bad_seeds(seed):
    with pytest.raises(BAD, match="seed"):
        mc.manual_seed(seed)


@given(name=st.one_of(unknown_name, st.integers(), st.none().map(lambda _: 3.5)))
def test_backend_registry_rejects_unknown_names(name):
    before = mc.get_backend()
    with pytest.raises(ValueError, match="backend"):
        mc.get_backend(name)
    with pytest.raises(ValueError, match="backend"):
        mc.set_default_backend(name)
    assert mc.get_backend() is before, "a failed set_default_backend changed the default"


@given(dtype=bad_dtype | st.none())
def test_set_default_dtype_rejects_other_dtypes(dtype):
    with pytest.raises(TypeError, match="dtype"):
        mc.set_default_dtype(dtype)
    assert mc.get_default_dtype() == np.float32


# --- mixing backends or dtypes in one op -----------------------------------------------------

def other_backend() -> types.ModuleType:
    """A second CPU backend: the reference kernels under another name."""
    clone = types.ModuleType("numpy_clone")
    clone.__dict__.update({k: v for k, v in vars(numpy_ref).items() if not k.startswith("__")})
    clone.name = "numpy_clone"
    return clone


OPS_OF_TWO = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "matmul": lambda a, b: a @ b,
    "linear": lambda a, b: F.linear(a, b),
    "mix_experts": lambda a, b: F.mix_experts(a, b),
}


@pytest.mark.parametrize("op", sorted(OPS_OF_TWO))
def test_mixing_backends_in_one_op_is_an_error(op):
    a = mc.tensor(np.ones((2, 2)), backend="numpy")
    b = mc.tensor(np.ones((2, 2)), backend=other_backend())
    with pytest.raises(ValueError, match="backends 'numpy' and 'numpy_clone'"):
        OPS_OF_TWO[op](a, b)


def test_mixing_backends_in_conv2d_is_an_error():
    x = mc.tensor(np.ones((1, 2, 4, 4)), backend=other_backend())
    with pytest.raises(ValueError, match="backends"):
        F.conv2d(x, t((3, 2, 3, 3)))


@pytest.mark.parametrize("op", sorted(OPS_OF_TWO))
def test_mixing_dtypes_in_one_op_is_an_error(op):
    a = mc.tensor(np.ones((2, 2)), dtype="float32", backend="numpy")
    b = mc.tensor(np.ones((2, 2)), dtype="float64", backend="numpy")
    with pytest.raises(TypeError, match="dtypes float32 and float64"):
        OPS_OF_TWO[op](a, b)
