"""A shape fuzzer for the convolutions: random configurations, degenerate ones on purpose, run on
every compiled backend and compared with the NumPy reference.

Each backend runs in its own subprocess (``python tests/test_fuzz.py BACKEND``), so a crash of
compiled code is a failed test with its output, not a dead test run. For each configuration
the subprocess computes ``conv2d`` or ``cond_conv2d`` in float32 and float64 on numpy and on
the backend, backpropagates a random cotangent, and compares the output and every gradient:
non-finite values (NaN, ±inf are injected into some inputs) must stand at the same places with
the same values, finite ones agree within rounding. The configurations include an empty batch,
1×1 outputs, a kernel as large as the padded input, a stride larger than the input, depthwise
and grouped kernels, "same"/"tf_same"/"valid" padding and per-expert biases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
# Configurations per backend: the CUDA simulator runs one Python thread per CUDA thread.
COUNTS = {"numba": 200, "cuda": 30}
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def draw_config(rng: np.random.Generator, limit: int) -> dict:
    """One valid convolution; ``limit`` bounds spatial sizes and channel counts."""
    depthwise = rng.random() < 0.2
    groups = int(rng.integers(1, 3)) if not depthwise else int(rng.integers(1, limit + 1))
    cin = groups * (1 if depthwise else int(rng.integers(1, max(2, limit // groups) + 1)))
    cout = cin if depthwise else groups * int(rng.integers(1, max(2, limit // groups) + 1))
    kernel = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    stride = [int(rng.integers(1, 5)), int(rng.integers(1, 5))]
    dilation = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    kind = rng.choice(["int", "pair", "same", "valid", "tf_same"])
    if kind == "same":
        stride = [1, 1]
    if kind == "int":
        padding = int(rng.integers(0, 3))
        pads = [padding, padding]
    elif kind == "pair":
        pads = [int(rng.integers(0, 3)), int(rng.integers(0, 3))]
        padding = tuple(pads)
    else:
        padding, pads = str(kind), [0, 0]   # "same"/"tf_same" fit any size; "valid" pads 0
    size = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = 1 if kind in ("same", "tf_same") else max(1, span - 2 * pads[axis])
        shape = rng.choice(["fits", "smallest", "below stride"])
        if shape == "smallest":          # the kernel as large as the padded input: 1 output
            n = smallest
        elif shape == "below stride":    # a stride larger than the input
            n = max(smallest, min(stride[axis] - 1, limit + 2))
        else:
            n = int(rng.integers(smallest, max(smallest, limit + 2) + 1))
        size.append(n)
    batch = int(rng.choice([0, 1, 2, 2]))
    experts = int(rng.integers(1, 4))
    return dict(op=str(rng.choice(["conv2d", "cond_conv2d"])), batch=batch, cin=cin, cout=cout,
                groups=groups, kernel=kernel, stride=stride, dilation=dilation,
                padding=padding, size=size, experts=experts,
                bias=str(rng.choice(["none", "shared", "expert"])),
                nonfinite=bool(rng.random() < 0.35), seed=int(rng.integers(2**31)))


def inputs(cfg: dict) -> list[np.ndarray | None]:
    """The arrays of one configuration, with a NaN or ±inf at a random place when asked."""
    rng = np.random.default_rng(cfg["seed"])
    kshape = (cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"])
    x = rng.standard_normal((cfg["batch"], cfg["cin"], *cfg["size"]))
    if cfg["op"] == "conv2d":
        arrays = [x, rng.standard_normal(kshape)]
        arrays.append(None if cfg["bias"] == "none" else rng.standard_normal(cfg["cout"]))
    else:
        E = cfg["experts"]
        bias = {"none": None, "shared": (cfg["cout"],), "expert": (E, cfg["cout"])}[cfg["bias"]]
        arrays = [x, rng.uniform(size=(cfg["batch"], E)), rng.standard_normal((E, *kshape)),
                  None if bias is None else rng.standard_normal(bias)]
    if cfg["nonfinite"]:
        candidates = [a for a in arrays if a is not None and a.size]
        target = candidates[int(rng.integers(len(candidates)))]
        target.flat[int(rng.integers(target.size))] = rng.choice([np.nan, np.inf, -np.inf])
    return arrays


def run(cfg: dict, backend: str, dtype: str) -> list[np.ndarray]:
    """Output and the gradient of every input of one configuration on ``backend``."""
    import minicond as mc
    import minicond.functional as F

    tensors = [None if a is None else mc.tensor(a, dtype=dtype, backend=backend,
                                                requires_grad=True) for a in inputs(cfg)]
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                  groups=cfg["groups"])
    fn = F.conv2d if cfg["op"] == "conv2d" else F.cond_conv2d
    y = fn(*tensors, **kwargs)
    c = np.random.default_rng(cfg["seed"] + 1).standard_normal(y.shape)
    (y * mc.tensor(c, dtype=dtype, backend=backend)).sum().backward()
    return [y.numpy()] + [t.grad.numpy() for t in tensors if t is not None]


def mismatch(expected: np.ndarray, got: np.ndarray, dtype: str) -> str | None:
    """Why ``got`` differs from ``expected``, or None: same shape and dtype, the same
    non-finite values at the same places, finite values within rounding."""
    if expected.shape != got.shape or expected.dtype != got.dtype:
        return f"shape/dtype {got.shape} {got.dtype}, expected {expected.shape} {expected.dtype}"
    fe, fg = np.isfinite(expected), np.isfinite(got)
    if not np.array_equal(fe, fg):
        return f"non-finite at {np.argwhere(fe != fg)[:4].tolist()} (one side only)"
    if not np.array_equal(expected[~fe], got[~fg], equal_nan=True):
        return "non-finite values differ (NaN vs ±inf)"
    scale = float(np.abs(expected[fe]).max()) if fe.any() else 0.0
    tol = (1e-10 if dtype == "float64" else 2e-5) * max(1.0, scale)
    err = float(np.abs(expected[fe] - got[fg]).max()) if fe.any() else 0.0
    return None if err <= tol else f"max |Δ| = {err:.3g} > {tol:.3g}"


def fuzz(backend: str, count: int, limit: int) -> int:
    """Run ``count`` configurations on ``backend``; print every mismatch; their number."""
    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)   # NaN/inf arithmetic is the point here
    rng = np.random.default_rng(2024)
    failures = 0
    for k in range(count):
        cfg = draw_config(rng, limit)
        for dtype in ("float64", "float32"):
            expected = run(cfg, "numpy", dtype)
            got = run(cfg, backend, dtype)
            for name, e, g in zip(["y", "g0", "g1", "g2", "g3"], expected, got, strict=False):
                why = mismatch(e, g, dtype)
                if why:
                    failures += 1
                    print(f"config {k} {dtype} {name}: {why}\n  {cfg}")
    print(f"{count} configurations on {backend}, {failures} mismatches")
    return failures


@pytest.mark.parametrize("backend", sorted(COUNTS))
def test_fuzz_backend_against_numpy(backend):
    from conftest import require_backend

    require_backend(backend)
    count = COUNTS[backend]
    limit = 4 if backend == "cuda" and SIMULATOR else 6
    root = str(HERE.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, str(Path(__file__)), backend, str(count), str(limit)],
                          capture_output=True, text=True, timeout=600, cwd=root, env=env)
    report = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, f"{backend} fuzz run failed (exit {proc.returncode}):\n{report}"
    assert f"{count} configurations on {backend}, 0 mismatches" in proc.stdout, report


def test_fuzz_draws_the_degenerate_cases():
    """The generator really produces what the module docstring promises."""
    rng = np.random.default_rng(2024)
    cfgs = [draw_config(rng, 4) for _ in range(COUNTS["cuda"])]
    seen = {"empty batch": any(c["batch"] == 0 for c in cfgs),
            "tf_same": any(c["padding"] == "tf_same" for c in cfgs),
            "depthwise": any(c["groups"] == c["cin"] == c["cout"] > 1 for c in cfgs),
            "stride above input": any(c["stride"][a] > c["size"][a] for c in cfgs
                                      for a in range(2)),
            "non-finite": any(c["nonfinite"] for c in cfgs),
            "1×1 output, kernel = padded input": any(
                c["padding"] == "valid" and all(
                    c["dilation"][a] * (c["kernel"][a] - 1) + 1 == c["size"][a]
                    for a in range(2)) for c in cfgs),
            "cond_conv2d": any(c["op"] == "cond_conv2d" for c in cfgs)}
    assert all(seen.values()), seen


if __name__ == "__main__":
    name, n, lim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.exit(1 if fuzz(name, n, lim) else 0)
