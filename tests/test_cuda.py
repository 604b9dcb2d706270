"""The CUDA backend: compiled for the real target, reported clearly when it cannot run, and
moving tensors and modules on and off the device.

The simulator (``NUMBA_ENABLE_CUDASIM=1``, set by the root ``conftest.py`` when no driver is
found) runs the kernels as Python threads and so accepts code a GPU would reject. The PTX test
closes that gap: every kernel is compiled for sm_90 in a subprocess without the simulator (no
GPU needed, only the CUDA compiler libraries of ``numba-cuda[cu13]``), and float32 kernels
must contain no float64 instruction. The parity, gradcheck, property and agreement tests of
the other modules run on this backend through the ``backend`` fixture.

On a real GPU ``MINICOND_CUDA_LARGE=1`` adds the larger agreement cases below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import random_cotangent

import minicond as mc
from conftest import SIMULATOR, backend_available
from minicond.backends import get_backend, numpy_ref

CUDA_REASON = backend_available("cuda")
needs_cuda = pytest.mark.skipif(CUDA_REASON is not None, reason=str(CUDA_REASON))
needs_gpu = pytest.mark.skipif(SIMULATOR or CUDA_REASON is not None,
                               reason="needs a real CUDA GPU (the simulator compiles nothing)")
LARGE = os.environ.get("MINICOND_CUDA_LARGE") == "1"


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=600)


# --- compiled for the real target ---------------------------------------------------------------

PTX_SCRIPT = """
    import json, re
    import numpy as np
    from numba import cuda
    from minicond.backends import numba_cuda
    report = {}
    for dtype in (np.float32, np.float64):
        for label, fn, sig in numba_cuda.kernel_signatures(dtype):
            ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
            f64 = [line.strip() for line in ptx.splitlines() if re.search(r"\\.f64\\b", line)]
            report[f"{np.dtype(dtype).name}:{label}"] = f64[:3]
    print(json.dumps(report))
"""


# A kernel of no consequence, compiled the same way: if this fails, the CUDA compiler (NVRTC)
# is missing here, which is a fact about the machine, not about minicond's kernels.
NVRTC_PROBE = """
    from numba import cuda
    def probe(a):
        a[0] = 1.0
    cuda.compile_ptx(probe, "void(float32[:])", cc=(9, 0))
"""


def _nvrtc_missing() -> str | None:
    """None when kernels can be compiled to PTX here, else why not (the last error line)."""
    proc = _run_python(NVRTC_PROBE, NUMBA_ENABLE_CUDASIM="0")
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return (f"the CUDA compiler (NVRTC) cannot run here ({lines[-1] if lines else 'no output'}); "
            'install it with pip install -e ".[cuda-ptx]"')


def test_every_kernel_compiles_for_sm90_and_float32_kernels_have_no_f64():
    missing = _nvrtc_missing()
    if missing is not None:
        pytest.skip(missing)
    proc = _run_python(PTX_SCRIPT, NUMBA_ENABLE_CUDASIM="0")
    assert proc.returncode == 0, f"PTX compilation failed:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    float32 = {k: v for k, v in report.items() if k.startswith("float32:")}
    # every family of the table: maps, zips, reductions, gathers, softmax, padding, im2col,
    # the four GEMM kinds (at least 39 kernels per dtype)
    assert len(float32) >= 39, sorted(float32)
    assert len(report) == 2 * len(float32)
    offenders = {k: v for k, v in float32.items() if v}
    assert not offenders, f"float32 kernels with float64 instructions: {offenders}"
    # the float64 kernels do compute in float64 (the check above can see .f64 at all)
    assert report["float64:gemm_conv_forward"], "float64 GEMM shows no .f64 instruction"


@needs_gpu
def test_compiled_float32_kernels_on_the_gpu_have_no_f64():
    """Run a float32 training step, then read the PTX of every float32 kernel compiled so far
    in this process (dropout's included, which cannot be compiled ahead without a driver)."""
    from minicond.backends import numba_cuda

    _train_step("float32")
    checked = 0
    for kern in numba_cuda.built_kernels():
        for sig, ptx in kern.inspect_asm().items():
            if "float32" in str(sig) and "float64" not in str(sig):
                checked += 1
                assert not re.search(r"\.f64\b", ptx), f"{kern.py_func.__name__}{sig}"
    assert checked >= 10, checked


# --- unavailable: a clear error, never an import failure ----------------------------------------

def test_without_driver_or_simulator_the_error_says_how_to_get_one():
    proc = _run_python("""
        import minicond as mc
        try:
            mc.tensor([1.0, 2.0], backend="cuda")
        except mc.BackendUnavailableError as err:
            print("ERROR:", err)
        else:
            print("NO ERROR")
    """, NUMBA_ENABLE_CUDASIM="0", CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("ERROR:"), out
    for hint in ("numba-cuda[cu12]", "numba-cuda[cu13]", "NUMBA_ENABLE_CUDASIM=1"):
        assert hint in out, f"the message lacks {hint!r}: {out}"


def test_import_does_not_touch_cuda():
    proc = _run_python("""
        import sys
        import minicond
        print("numba.cuda" in sys.modules, "minicond.backends.numba_cuda" in sys.modules)
    """, NUMBA_ENABLE_CUDASIM="0", CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "False"


# --- moving data: tensors, modules, training on the device --------------------------------------

@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tensor_round_trips(dtype):
    a = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(dtype)
    x = mc.tensor(a, backend="cuda")
    assert x.device == "cuda" and x.dtype == np.dtype(dtype)
    assert not isinstance(x.data, np.ndarray)
    np.testing.assert_array_equal(x.numpy(), a)
    y = mc.tensor(a, backend="numpy").to("cuda")
    assert y.device == "cuda"
    np.testing.assert_array_equal(y.numpy(), a)
    back = y.to("numpy")
    assert back.device == "numpy" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), a)
    other = "float64" if dtype == "float32" else "float32"
    z = x.to(dtype=other)
    assert z.device == "cuda" and z.dtype == np.dtype(other)
    np.testing.assert_allclose(z.numpy(), a, rtol=1e-6)
    s = mc.tensor(np.float64(2.5), dtype=dtype, backend="cuda")   # 0-d
    assert s.shape == () and s.item() == 2.5


@needs_cuda
def test_module_to_cuda_matches_numpy_forward_and_backward():
    rng = np.random.default_rng(3)
    layer = mc.nn.CondConv2d(3, 4, 3, padding=1, num_experts=2, padding_mode="reflect")
    layer.eval()
    x = rng.standard_normal((2, 3, 5, 5))
    c = random_cotangent((2, 4, 5, 5))
    results = {}
    for be in ("numpy", "cuda"):
        layer.to(be, "float64")
        assert all(p.device == be for p in layer.parameters())
        layer.zero_grad()
        xt = mc.tensor(x, dtype="float64", requires_grad=True, backend=be)
        y = layer(xt)
        (y * c).sum().backward()
        results[be] = (y.numpy(), xt.grad.numpy(),
                       {n: p.grad.numpy() for n, p in layer.named_parameters()})
    np.testing.assert_allclose(results["cuda"][0], results["numpy"][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results["cuda"][1], results["numpy"][1], rtol=1e-10, atol=1e-12)
    for name, g in results["numpy"][2].items():
        np.testing.assert_allclose(results["cuda"][2][name], g, rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def _train_step(dtype: str) -> mc.nn.Module:
    layer = mc.nn.CondConv2d(3, 4, 3, padding=1, num_experts=3).to("cuda", dtype)
    layer.train()
    opt = mc.optim.Adam(layer.parameters(), lr=1e-2)
    x = mc.tensor(np.random.default_rng(1).standard_normal((2, 3, 4, 4)), dtype=dtype,
                  backend="cuda")
    loss = (layer(x) * layer(x)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return layer


@needs_cuda
def test_a_training_step_keeps_every_array_on_the_device():
    layer = _train_step("float32")
    for name, p in layer.named_parameters():
        assert p.device == "cuda", name
        assert not isinstance(p.data, np.ndarray), f"{name} came back to the host"
        assert p.grad is not None and not isinstance(p.grad.data, np.ndarray), name
        assert np.all(np.isfinite(p.numpy())), name


@needs_cuda
def test_default_backend_cuda():
    mc.set_default_backend("cuda")
    try:
        assert mc.tensor([1.0, 2.0]).device == "cuda"
    finally:
        mc.set_default_backend("numpy")


# --- kernels the agreement tests reach only at sizes the simulator cannot afford ---------------

@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_is_repeatable_and_has_the_right_values(dtype):
    be = get_backend("cuda")
    n = 4000 if not SIMULATOR else 300
    m1 = be.to_numpy(be.dropout_mask((n,), 0.25, dtype, 7))
    m2 = be.to_numpy(be.dropout_mask((n,), 0.25, dtype, 7))
    m3 = be.to_numpy(be.dropout_mask((n,), 0.25, dtype, 8))
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(m1, m3)
    assert m1.dtype == dtype
    assert set(np.unique(m1)) <= {dtype(0), dtype(1 / 0.75)}
    dropped = float(np.mean(m1 == 0))
    assert abs(dropped - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)


@needs_cuda
def test_gemm_split_k_and_tile_edges_agree_with_numpy():
    """Products whose K is split over blocks and whose M, N end mid-tile."""
    from minicond.backends import numba_cuda

    be = get_backend("cuda")
    rng = np.random.default_rng(5)
    k = 40 * numba_cuda.TILE_K + 3
    m, n = numba_cuda.TILE_M + 1, 3
    a = rng.standard_normal((m, k))
    b = rng.standard_normal((k, n))
    assert numba_cuda._split_count(m, n, k, 1) > 1
    got = be.to_numpy(be.matmul(be.from_numpy(a, np.float64), be.from_numpy(b, np.float64)))
    np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-12)
    r = rng.standard_normal((m, 3))
    W = rng.standard_normal((3, 2, k))
    gK = rng.standard_normal((m, 2, k))
    want = numpy_ref.mix_experts_backward(r, W, gK)
    got = be.mix_experts_backward(*(be.from_numpy(v, np.float64) for v in (r, W, gK)))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(be.to_numpy(g), w, rtol=1e-11, atol=1e-11)


def test_conv_gemm_index_tables_across_tiles_agree_with_numpy():
    """The three convolution products with every axis of the GEMM over several tiles (the
    last one partial), a stride on one axis and a dilation on the other, asymmetric padding,
    groups and a per-example weight: the index tables of each k-tile and n-tile."""
    from minicond.backends import numba_cuda

    be = get_backend("cuda")
    rng = np.random.default_rng(7)
    s, p, d, G = (2, 1), (1, 0), (1, 2), 2
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((2, 6, 2, 3, 2))
    y = numpy_ref.conv2d_forward(x, w, s, p, d, G)
    gy = rng.standard_normal(y.shape)
    # forward: N = Ho·Wo = 16, K = 12; input: N = 42, K = 18; weight: N = 12, K = 16
    assert y.shape[2] * y.shape[3] > numba_cuda.TILE_N and 12 > numba_cuda.TILE_K

    def dev(a):
        return be.from_numpy(a, np.float64)

    tol = {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(be.to_numpy(be.conv2d_forward(dev(x), dev(w), s, p, d, G)), y,
                               **tol)
    np.testing.assert_allclose(
        be.to_numpy(be.conv2d_backward_input(dev(gy), dev(w), x.shape, s, p, d, G)),
        numpy_ref.conv2d_backward_input(gy, w, x.shape, s, p, d, G), **tol)
    np.testing.assert_allclose(
        be.to_numpy(be.conv2d_backward_weight(dev(x), dev(gy), w.shape, s, p, d, G)),
        numpy_ref.conv2d_backward_weight(x, gy, w.shape, s, p, d, G), **tol)


LARGE_CONVS = [
    # (B, Cin, Cout, H, W, kernel, stride, padding, dilation, groups, per_example)
    (8, 32, 48, 17, 15, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    (4, 64, 64, 16, 16, (3, 3), (2, 2), (1, 1), (1, 1), 4, False),
    (3, 12, 18, 21, 19, (5, 3), (2, 1), (2, 0), (1, 2), 3, True),
    (32, 64, 64, 32, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
]


@pytest.mark.skipif(not LARGE, reason="larger shapes: set MINICOND_CUDA_LARGE=1 on a GPU")
@needs_cuda
@pytest.mark.parametrize("case", LARGE_CONVS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_convolutions_agree_with_numpy(case, dtype):
    B, Cin, Cout, H, W, k, s, p, d, g, per_example = case
    be = get_backend("cuda")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((B, Cin, H, W)).astype(dtype)
    wshape = ((B,) if per_example else ()) + (Cout, Cin // g) + k
    w = rng.standard_normal(wshape).astype(dtype)
    tol = {"rtol": 2e-4, "atol": 2e-4} if dtype == np.float32 else {"rtol": 1e-10,
                                                                    "atol": 1e-10}

    def dev(a):
        return be.from_numpy(a, dtype)

    y = numpy_ref.conv2d_forward(x, w, s, p, d, g)
    np.testing.assert_allclose(be.to_numpy(be.conv2d_forward(dev(x), dev(w), s, p, d, g)), y,
                               **tol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(
        be.to_numpy(be.conv2d_backward_input(dev(gy), dev(w), x.shape, s, p, d, g)),
        numpy_ref.conv2d_backward_input(gy, w, x.shape, s, p, d, g), **tol)
    np.testing.assert_allclose(
        be.to_numpy(be.conv2d_backward_weight(dev(x), dev(gy), w.shape, s, p, d, g)),
        numpy_ref.conv2d_backward_weight(x, gy, w.shape, s, p, d, g),
        rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
