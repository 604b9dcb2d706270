"""Every kernel of the table, on every compiled backend, agrees with the NumPy reference.

Each test draws a configuration (convolutions and CondConv from ``strategies.conv_cases``),
runs the same kernel call on ``numpy_ref`` and on the backend under test, and compares the
results in float32 and float64. ``test_every_kernel_is_covered`` holds the list of kernels
exercised here against ``table.KERNELS``, so a kernel added to the table without an agreement
test fails the suite. Backends that cannot run here are skipped with their reason; the CUDA
simulator gets tiny shapes (``size_limit``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import conv_cases, fixture_settings, pad_cases

from conftest import backend_available, limit_for, require_backend
from minicond.backends import BACKEND_NAMES, get_backend, numpy_ref
from minicond.backends.table import KERNELS

COVERED: set[str] = set()
DTYPES = ("float32", "float64")


def covers(*names: str):
    """Record which kernels a test compares; checked against the table below."""
    COVERED.update(names)
    return lambda test: test


def test_every_kernel_is_covered():
    assert not set(KERNELS) - COVERED, f"kernels without an agreement test: " \
                                       f"{sorted(set(KERNELS) - COVERED)}"
    assert not COVERED - set(KERNELS), f"unknown kernels: {sorted(COVERED - set(KERNELS))}"


@pytest.fixture(params=[n for n in BACKEND_NAMES if n != "numpy"])
def other(request) -> str:
    """A backend to hold against ``numpy_ref``; skipped, with the reason, if it cannot run."""
    return require_backend(request.param)


@pytest.fixture
def limit(other) -> int:
    return limit_for(other)


@pytest.fixture(params=DTYPES)
def dtype(request) -> np.dtype:
    return np.dtype(request.param)


def tolerance(dtype: np.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10,
                                                                    "atol": 1e-10}


def agree(other: str, name: str, args: tuple, dtype: np.dtype, exact: bool = False,
          host_output: bool = False, host_args: tuple[int, ...] = ()) -> None:
    """Call kernel ``name`` on numpy_ref and on ``other`` with the same arguments and compare.

    Floating NumPy arrays in ``args`` are cast to ``dtype``; they and int64/bool arrays are
    moved onto the backend for ``other``, except the arguments at positions ``host_args``
    (index arrays, which kernels take as NumPy arrays); everything else (ints, tuples) passes
    through unchanged. Outputs are backend arrays, read back with ``to_numpy``, unless
    ``host_output``.
    """
    be = get_backend(other)

    def host(a):
        return a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a

    def dev(k, a):
        if k in host_args or not isinstance(a, np.ndarray):
            return a
        a = host(a)
        return be.from_numpy(a, a.dtype)

    want = getattr(numpy_ref, name)(*map(host, args))
    got = getattr(be, name)(*(dev(k, a) for k, a in enumerate(args)))
    if not isinstance(want, tuple):
        want, got = (want,), (got,)
    assert len(got) == len(want), f"{name}: {len(got)} outputs, expected {len(want)}"
    for k, (w, g) in enumerate(zip(want, got, strict=True)):
        if host_output:
            assert isinstance(g, np.ndarray), f"{name} output {k}: {type(g)} is not NumPy's"
        else:
            g = be.to_numpy(g)
        assert g.shape == w.shape, f"{name} output {k}: shape {g.shape}, expected {w.shape}"
        assert g.dtype == w.dtype, f"{name} output {k}: dtype {g.dtype}, expected {w.dtype}"
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=f"{name} output {k}")
        else:
            np.testing.assert_allclose(g, w, err_msg=f"{name} output {k}",
                                       **tolerance(dtype))


def shapes(draw, limit: int, min_dims: int = 0, max_dims: int = 3) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(1, limit), min_size=min_dims, max_size=max_dims)))


# --- creation and transfer -----------------------------------------------------------------

@covers("from_numpy", "to_numpy", "full", "astype")
@fixture_settings
@given(data=st.data())
def test_creation_and_transfer(other, limit, dtype, data):
    be = get_backend(other)
    shape = shapes(data.draw, limit)
    a = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal(shape)
    agree(other, "to_numpy", (a,), dtype, exact=True, host_output=True)   # after from_numpy
    value = data.draw(st.floats(-1e3, 1e3))
    agree(other, "full", (shape, value, dtype), dtype, exact=True)
    target = np.dtype(data.draw(st.sampled_from(DTYPES + ("int64", "bool"))))
    agree(other, "astype", (a, target), dtype, exact=True)
    # int64 and bool arrays move, fill and convert too (to int64: truncation toward zero)
    for kind in ("int64", "bool"):
        k = np.asarray(3 * a).astype(kind)
        agree(other, "to_numpy", (k,), dtype, exact=True, host_output=True)
        agree(other, "astype", (k, dtype), dtype, exact=True)
        agree(other, "astype", (k, target), dtype, exact=True)
        agree(other, "full", (shape, data.draw(st.integers(-5, 5)), kind), dtype, exact=True)
    # from_numpy also converts: a float64 array lands as ``dtype``
    np.testing.assert_array_equal(be.to_numpy(be.from_numpy(a, dtype)), a.astype(dtype))


@covers("dropout_mask")
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_dropout_mask_contract(other, limit, dtype, p):
    """Backends may draw with their own generator; all keep the contract: values 0 or
    1/(1−p), the same seed gives the same mask, and about 1−p of the units are kept."""
    be = get_backend(other)
    shape = (2 * limit, 6 * limit)
    for seed in (0, 2**31 - 1):
        mask = be.to_numpy(be.dropout_mask(shape, p, dtype, seed))
        assert mask.shape == shape and mask.dtype == dtype
        scale = dtype.type(1 / (1 - p))
        assert np.all((mask == 0) | (mask == scale))
        np.testing.assert_array_equal(be.to_numpy(be.dropout_mask(shape, p, dtype, seed)),
                                      mask)
        kept = np.mean(mask != 0)
        # Bernoulli(1−p) draws: 6 standard deviations is far beyond chance
        assert abs(kept - (1 - p)) <= 6 * np.sqrt(p * (1 - p) / mask.size) + 1e-12


# --- elementwise ---------------------------------------------------------------------------

@st.composite
def broadcast_pairs(draw, limit: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast: b drops leading axes of a and sets some axes to 1."""
    a = shapes(draw, limit, 1, 4)
    b = a[draw(st.integers(0, len(a))):]
    b = tuple(1 if draw(st.booleans()) else n for n in b)
    return (a, b) if draw(st.booleans()) else (b, a)


@covers("compare", "where")
@fixture_settings
@given(data=st.data(), kind=st.sampled_from(["float", "int64", "bool"]))
def test_compare_and_where(other, limit, dtype, data, kind):
    """Comparisons give bool arrays; ``where`` selects; both on every dtype of the table."""
    sa, sb = data.draw(broadcast_pairs(limit))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    # a coarse grid, so that equal values occur
    a, b = (np.asarray(np.round(2 * rng.standard_normal(s))) for s in (sa, sb))
    if kind != "float":
        a, b = a.astype(kind), b.astype(kind)
    for op in ("lt", "le", "gt", "ge", "eq", "ne"):
        agree(other, "compare", (a, b, op), dtype, exact=True)
    cond = rng.standard_normal(sb[-1:] if sb else ()) > 0
    agree(other, "where", (cond, a, b), dtype, exact=True)


@covers("add", "sub", "mul", "div", "gt", "eq", "power_tensor")
@fixture_settings
@given(data=st.data())
def test_binary_elementwise(other, limit, dtype, data):
    sa, sb = data.draw(broadcast_pairs(limit))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    for name in ("add", "sub", "mul"):
        agree(other, name, (a, b), dtype)
    agree(other, "div", (a, np.sign(b) * (np.abs(b) + 0.5)), dtype)
    agree(other, "power_tensor", (np.abs(a) + 0.1, b), dtype)
    # equal values must occur for eq/gt to be tested: round to a coarse grid
    a, b = np.round(a), np.round(b)
    agree(other, "gt", (a, b), dtype, exact=True)
    agree(other, "eq", (a, b), dtype, exact=True)


@covers("neg", "exp", "log", "sqrt", "relu", "sigmoid", "power", "silu")
@fixture_settings
@given(data=st.data(), p=st.sampled_from([2.0, 3.0, 0.5, -1.0, 1.5]))
def test_unary_elementwise(other, limit, dtype, data, p):
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    a = 4 * rng.standard_normal(shapes(data.draw, limit, 0, 3))
    a.flat[:1] = 0.0                                  # relu at its kink, sigmoid at 1/2
    positive = np.abs(a) + 0.1
    for name in ("neg", "exp", "relu", "sigmoid", "silu"):
        agree(other, name, (a,), dtype)
    agree(other, "sigmoid", (40 * a,), dtype)         # saturated on both sides
    agree(other, "silu", (40 * a,), dtype)
    agree(other, "log", (positive,), dtype)
    agree(other, "sqrt", (positive,), dtype)
    agree(other, "power", (positive, p), dtype)


@covers("maximum", "minimum", "log1p", "tanh", "erf")
@fixture_settings
@given(data=st.data())
def test_activation_maps(other, limit, dtype, data):
    sa, sb = data.draw(broadcast_pairs(limit))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    # a coarse grid makes ties, where maximum/minimum must pick the same value
    a, b = np.round(2 * rng.standard_normal(sa)), np.round(2 * rng.standard_normal(sb))
    a.flat[:1] = np.nan                               # NaN wins on either side
    agree(other, "maximum", (a, b), dtype, exact=True)
    agree(other, "minimum", (b, a), dtype, exact=True)
    x = 4 * rng.standard_normal(sa)
    x.flat[:1] = 0.0
    for name in ("tanh", "erf"):
        agree(other, name, (x,), dtype)
        agree(other, name, (40 * x,), dtype)          # saturated at ±1
    agree(other, "log1p", (np.abs(x) - 0.9,), dtype)  # arguments in (−1, ∞)


# --- reductions and shape ----------------------------------------------------------------

@covers("sum", "max", "argmax")
@fixture_settings
@given(data=st.data())
def test_reductions(other, limit, dtype, data):
    shape = shapes(data.draw, limit, 1, 4)
    a = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal(shape)
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    keepdims = data.draw(st.booleans())
    agree(other, "sum", (a, axes, keepdims), dtype)
    agree(other, "max", (a, axes, keepdims), dtype, exact=True)
    agree(other, "argmax", (a, data.draw(st.integers(0, len(shape) - 1))), dtype, exact=True)


@covers("reshape", "permute", "broadcast_to", "gather", "scatter_add")
@fixture_settings
@given(data=st.data())
def test_shape_kernels(other, limit, dtype, data):
    shape = shapes(data.draw, limit, 1, 4)
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    a = rng.standard_normal(shape)
    agree(other, "reshape", (a, (-1,) + shape[len(shape) - 1:]), dtype, exact=True)
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    agree(other, "permute", (a, axes), dtype, exact=True)
    target = (data.draw(st.integers(1, 3)),) + tuple(
        data.draw(st.integers(1, 3)) if n == 1 else n for n in shape)
    ones = tuple(1 if data.draw(st.booleans()) else n for n in shape)
    agree(other, "broadcast_to", (rng.standard_normal(ones), target), dtype, exact=True)
    # flat positions of any shape, repeats included (they must accumulate in scatter_add)
    index = rng.integers(0, a.size, size=shapes(data.draw, limit, 0, 3)).astype(np.int64)
    agree(other, "gather", (a, index), dtype, exact=True, host_args=(1,))
    for kind in ("int64", "bool"):
        agree(other, "gather", (a.round().astype(kind), index), dtype, exact=True,
              host_args=(1,))
        agree(other, "permute", (a.round().astype(kind), axes), dtype, exact=True)
    g = rng.standard_normal(index.shape)
    agree(other, "scatter_add", (shape, index, g), dtype, host_args=(1,))


# --- linear algebra and activations ----------------------------------------------------------

@covers("matmul", "softmax", "log_softmax", "softmax_backward", "log_softmax_backward")
@fixture_settings
@given(data=st.data())
def test_matmul_and_softmax(other, limit, dtype, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    m, k, n = (data.draw(st.integers(1, limit)) for _ in range(3))
    batch_a, batch_b = data.draw(broadcast_pairs(3)) if data.draw(st.booleans()) else ((), ())
    agree(other, "matmul", (rng.standard_normal(batch_a + (m, k)),
                            rng.standard_normal(batch_b + (k, n))), dtype)
    shape = shapes(data.draw, limit, 1, 3)
    axis = data.draw(st.integers(0, len(shape) - 1))
    a = 5 * rng.standard_normal(shape)
    gy = rng.standard_normal(shape)
    agree(other, "softmax", (a, axis), dtype)
    agree(other, "log_softmax", (a, axis), dtype)
    y = numpy_ref.softmax(a, axis)
    agree(other, "softmax_backward", (y, gy, axis), dtype)
    agree(other, "log_softmax_backward", (numpy_ref.log_softmax(a, axis), gy, axis), dtype)


# --- convolution family ------------------------------------------------------------------

@covers("pad", "pad_backward")
@fixture_settings
@given(data=st.data())
def test_padding(other, limit, dtype, data):
    case = data.draw(pad_cases(size_limit=limit))
    left, right, top, bottom = case.pad
    pads = (top, bottom, left, right)
    rng = np.random.default_rng(case.seed)
    agree(other, "pad", (rng.standard_normal(case.x_shape), pads, case.mode), dtype)
    agree(other, "pad_backward", (rng.standard_normal(case.out_shape), pads, case.mode), dtype)


SYMMETRIC = ("int", "pair", "valid")   # kernels take (ph, pw); asymmetric pads go through pad


def geometry(case):
    """The kernel-level (kernel, stride, padding, dilation) of a symmetric conv case."""
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    return case.kernel, pair(case.stride), (case.pads[0], case.pads[2]), pair(case.dilation)


@covers("im2col", "col2im")
@fixture_settings
@given(data=st.data())
def test_im2col_col2im(other, limit, dtype, data):
    case = data.draw(conv_cases(size_limit=limit, padding_kinds=SYMMETRIC))
    kernel, stride, padding, dilation = geometry(case)
    rng = np.random.default_rng(case.seed)
    x = rng.standard_normal(case.x_shape)
    agree(other, "im2col", (x, kernel, stride, padding, dilation), dtype, exact=True)
    cols = rng.standard_normal(numpy_ref.im2col(x, kernel, stride, padding, dilation).shape)
    agree(other, "col2im", (cols, case.x_shape, kernel, stride, padding, dilation), dtype)


@covers("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")
@fixture_settings
@given(data=st.data(), per_example=st.booleans(),
       bias=st.sampled_from(["none", "shared", "per-example"]))
def test_conv2d_kernels(other, limit, dtype, data, per_example, bias):
    """Shared weights [Cout, Cin/g, kh, kw] and CondConv's per-example [B, Cout, ...]; no bias,
    a shared bias [Cout] or one per example [B, Cout]."""
    case = data.draw(conv_cases(size_limit=limit, padding_kinds=SYMMETRIC))
    _, stride, padding, dilation = geometry(case)
    rng = np.random.default_rng(case.seed)
    x = rng.standard_normal(case.x_shape)
    w_shape = ((case.batch,) if per_example else ()) + case.weight_shape
    w = rng.standard_normal(w_shape)
    gy = rng.standard_normal(case.out_shape)
    conv = (stride, padding, dilation, case.groups)
    b = {"none": None, "shared": rng.standard_normal(case.weight_shape[0]),
         "per-example": rng.standard_normal((case.batch, case.weight_shape[0]))}[bias]
    agree(other, "conv2d_forward", (x, w) + conv + (b,), dtype)
    agree(other, "conv2d_backward_input", (gy, w, case.x_shape) + conv, dtype)
    agree(other, "conv2d_backward_weight", (x, gy, w_shape) + conv, dtype)


@covers("mix_experts", "mix_experts_backward")
@fixture_settings
@given(data=st.data())
def test_mix_experts(other, limit, dtype, data):
    case = data.draw(conv_cases(size_limit=limit))
    E = data.draw(st.integers(1, limit))
    rng = np.random.default_rng(case.seed)
    r = rng.random((case.batch, E))
    W = rng.standard_normal((E,) + case.weight_shape)
    gK = rng.standard_normal((case.batch,) + case.weight_shape)
    agree(other, "mix_experts", (r, W), dtype)
    agree(other, "mix_experts_backward", (r, W, gK), dtype)


# --- training kernels ----------------------------------------------------------------------

@covers("batch_norm_forward", "batch_norm_backward", "relu_backward", "adam_update")
@fixture_settings
@given(data=st.data())
def test_training_kernels(other, limit, dtype, data):
    """Batch norm in both modes, with and without γ/β (rows long enough for the blocked sums
    and their tails); ReLU's gradient at 0, at NaN and under a non-finite g; Adam and AdamW."""
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    shape = (data.draw(st.integers(2, limit)),) + shapes(data.draw, limit, 1, 3)
    C = shape[1]
    x = 2 * rng.standard_normal(shape) + 3 * rng.standard_normal()
    if data.draw(st.booleans()):    # each channel's first value far out: the worst case of
        x[(0, slice(None)) + (0,) * (x.ndim - 2)] += 100.0   # one-pass moments shifted by it
    g = rng.standard_normal(shape)
    weight, bias = (rng.standard_normal(C) if data.draw(st.booleans()) else None
                    for _ in range(2))
    batch = data.draw(st.booleans())
    stats = (None, None) if batch else (rng.standard_normal(C), rng.uniform(0.5, 2.0, C))
    agree(other, "batch_norm_forward", (x, weight, bias) + stats + (1e-5,), dtype)
    _, mean, _, inv_std = numpy_ref.batch_norm_forward(x, weight, bias, *stats, 1e-5)
    agree(other, "batch_norm_backward", (g, x, weight, mean, inv_std, batch), dtype)
    a = np.round(x)                                   # zeros occur
    a.flat[0], a.flat[-1], g.flat[0] = 0.0, np.nan, np.inf
    agree(other, "relu_backward", (a, g), dtype, exact=True)
    p, m = rng.standard_normal(shape), rng.standard_normal(shape)
    v = rng.uniform(0.0, 2.0, shape)
    hyper = (data.draw(st.integers(1, 5)), data.draw(st.sampled_from([1e-3, 0.1])),
             data.draw(st.sampled_from([0.0, 0.9])), data.draw(st.sampled_from([0.5, 0.999])),
             data.draw(st.sampled_from([1e-8, 0.1])), data.draw(st.sampled_from([0.0, 0.01])),
             data.draw(st.booleans()))
    agree(other, "adam_update", (p, rng.standard_normal(shape), m, v) + hyper, dtype)


# --- the Numba CPU backend's dispatch branches --------------------------------------------
# conv2d_* pick a path by shape (see numba_cpu's docstring); each path against numpy_ref
# (the depthwise kernels have their own loops for unit stride and for 3×3 kernels).
# (B, C, Cout, H, W, k, stride, padding, dilation, groups, pooled)
NUMBA_BRANCHES = {
    "depthwise": (3, 5, 5, 9, 8, 3, (1, 1), (1, 1), (1, 1), 5, True),
    "depthwise-strided-dilated": (2, 4, 4, 11, 10, 3, (2, 1), (0, 2), (1, 2), 4, True),
    "depthwise-3x3-rows-strided-dilated": (2, 3, 3, 12, 7, 3, (2, 1), (2, 1), (2, 1), 3, False),
    "depthwise-3x3-pads-0-2": (2, 3, 3, 8, 9, 3, (1, 1), (0, 2), (1, 1), 3, True),
    "depthwise-one-example": (1, 6, 6, 7, 9, 5, (1, 2), (2, 2), (1, 1), 6, False),
    "depthwise-unit-stride-dilated": (2, 4, 4, 10, 11, 3, (1, 1), (2, 1), (2, 2), 4, True),
    "depthwise-unit-stride-5x5-column-dilated": (2, 3, 3, 9, 12, 5, (1, 1), (2, 0), (1, 2), 3,
                                                 False),
    "one-chunk-dense": (1, 3, 4, 9, 8, 3, (1, 1), (1, 1), (1, 1), 1, True),
    # pooled with fewer examples than MIN_CHUNKS: the forward cuts them into bands of rows
    "banded-dense": (1, 3, 4, 11, 8, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "banded-grouped-strided-dilated": (2, 4, 6, 13, 12, 3, (2, 1), (3, 0), (2, 3), 2, True),
    "pooled-grouped": (5, 4, 6, 7, 7, 3, (2, 2), (1, 0), (1, 1), 2, True),
    "pointwise": (4, 6, 3, 5, 6, 1, (1, 1), (0, 0), (1, 1), 1, True),
}


@pytest.mark.skipif(backend_available("numba") is not None, reason="numba backend unavailable")
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("branch", sorted(NUMBA_BRANCHES))
def test_numba_conv_branches(monkeypatch, branch, per_example, dtype):
    """``pooled`` sends the call through the worker pool (chunks of examples or of planes),
    which only larger calls use otherwise."""
    B, C, Cout, H, W, k, stride, padding, dilation, groups, pooled = NUMBA_BRANCHES[branch]
    if pooled:
        monkeypatch.setattr(get_backend("numba"), "INLINE_COST", 0)
    rng = np.random.default_rng(len(branch))
    x = rng.standard_normal((B, C, H, W))
    w_shape = ((B,) if per_example else ()) + (Cout, C // groups, k, k)
    w = rng.standard_normal(w_shape)
    gy = rng.standard_normal((B, Cout) + numpy_ref.conv2d_forward(x, w, stride, padding,
                                                                  dilation, groups).shape[2:])
    conv = (stride, padding, dilation, groups)
    bias = rng.standard_normal((B, Cout) if per_example else Cout)
    agree("numba", "conv2d_forward", (x, w) + conv, dtype)
    agree("numba", "conv2d_forward", (x, w) + conv + (bias,), dtype)
    agree("numba", "conv2d_backward_input", (gy, w, x.shape) + conv, dtype)
    agree("numba", "conv2d_backward_weight", (x, gy, w_shape) + conv, dtype)


# --- determinism of the Numba CPU backend -------------------------------------------------

@pytest.mark.skipif(backend_available("numba") is not None, reason="numba backend unavailable")
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("pooled", [False, True])
def test_numba_results_do_not_depend_on_the_thread_count(monkeypatch, threads, pooled):
    """Chunks depend on the shapes only and every sum has a fixed order, so the bits are the
    same run to run and for any number of worker threads. ``pooled`` sends these small
    calls through the thread pool, which only larger ones use otherwise."""
    import numba

    be = get_backend("numba")
    if pooled:
        monkeypatch.setattr(be, "INLINE_COST", 0)
        monkeypatch.setattr(be, "PARALLEL_COST", 0)     # the depthwise prange loops too
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 6, 11, 10)).astype(np.float32)
    K = rng.standard_normal((9, 4, 3, 3, 3)).astype(np.float32)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((9, 4, 11, 10)).astype(np.float32)
    conv = ((1, 1), (1, 1), (1, 1), 2)
    Kd = rng.standard_normal((9, 6, 1, 3, 3)).astype(np.float32)     # depthwise, per plane
    depthwise = ((1, 1), (1, 1), (1, 1), 6)
    strided = ((2, 2), (1, 1), (1, 1), 6)
    gs = rng.standard_normal((9, 6, 6, 5)).astype(np.float32)

    def run():
        return [be.conv2d_forward(x, K, *conv), be.conv2d_forward(x[:1], K[:1], *conv),
                be.conv2d_backward_input(gy, K, x.shape, *conv),
                be.conv2d_backward_weight(x, gy, K.shape, *conv),
                be.conv2d_backward_weight(x, gy, W.shape, *conv),
                be.conv2d_forward(x, Kd, *depthwise),
                be.conv2d_backward_input(x, Kd, x.shape, *depthwise),
                be.conv2d_backward_weight(x, x, Kd.shape, *depthwise),
                be.conv2d_backward_weight(x, x, Kd.shape[1:], *depthwise),
                *be.silu(x), be.relu(x),                  # pool chunks, parallel loops
                be.conv2d_forward(x, Kd, *strided),                   # plane blocks
                be.conv2d_backward_input(gs, Kd, x.shape, *strided),
                be.conv2d_backward_weight(x, gs, Kd.shape, *strided),
                be.pad_backward(gy, (1, 2, 3, 0), "reflect"),
                *be.batch_norm_forward(x, None, None, None, None, 1e-5),
                *be.batch_norm_backward(gy, x[:, :4], None, x[0, :4, 0, 0],
                                        np.abs(x[1, :4, 0, 0]), True)]

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    first, again = run(), run()
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", threads)
    other_count = run()
    for a, b, c in zip(first, again, other_count, strict=True):
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() == c.tobytes()
