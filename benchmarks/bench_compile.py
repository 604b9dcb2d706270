"""Cold and warm start of the Numba CPU backend: how long its compiled kernels take to build.

Each measurement runs in a fresh process with its own Numba cache directory. Cold: an empty
cache, ``import minicond``, then one call of every compiled path of the backend in one dtype
(dense, grouped, pointwise, banded and depthwise convolutions in both depthwise loop
structures, their gradients, shared and per-example weights, with and without a bias;
im2col/col2im, padding in every mode, scatter-add, erf, sigmoid and SiLU, ReLU and its
gradient, batch norm, the Adam step), on tiny shapes, with the thresholds lowered so that the
thread-pool and parallel paths compile too. Warm: the same in a new process with that cache
filled, which loads the machine code instead of compiling it.

    python benchmarks/bench_compile.py                  # float32
    python benchmarks/bench_compile.py --dtype float64
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def exercise(dtype_name: str) -> None:
    """Call every compiled path once (runs in the child process)."""
    import numpy as np

    from minicond.backends import get_backend

    be = get_backend("numba")
    be.INLINE_COST = 0          # the pool paths
    be.PARALLEL_COST = 0        # the parallel (prange) paths
    dt = np.dtype(dtype_name)
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dt)

    one = ((1, 1), (1, 1), (1, 1))
    for B, C, Cout, H, k, G, stride in ((2, 4, 6, 9, 3, 1, (1, 1)), (1, 4, 6, 9, 3, 2, (2, 1)),
                                        (2, 4, 6, 9, 1, 1, (1, 1)), (2, 4, 4, 12, 3, 4, (1, 1)),
                                        (2, 4, 4, 9, 3, 4, (2, 2))):
        pad = (k // 2, k // 2)
        x = arr(B, C, H, H)
        for w in (arr(Cout, C // G, k, k), arr(B, Cout, C // G, k, k)):
            for bias in (None, arr(Cout)):
                y = be.conv2d_forward(x, w, stride, pad, (1, 1), G, bias)
            be.conv2d_backward_input(y, w, x.shape, stride, pad, (1, 1), G)
            be.conv2d_backward_weight(x, y, w.shape, stride, pad, (1, 1), G)
    x = arr(2, 3, 7, 7)
    cols = be.im2col(x, (3, 3), *one)
    be.col2im(cols, x.shape, (3, 3), *one)
    for mode in ("zeros", "reflect", "replicate", "circular"):
        be.pad_backward(be.pad(x, (1, 2, 2, 1), mode), (1, 2, 2, 1), mode)
    be.scatter_add((5,), np.array([0, 2, 2], dtype=np.int64), arr(3))
    be.erf(arr(10))
    gamma, beta = arr(3), arr(3)
    for stats in ((None, None), (arr(3), np.abs(arr(3)) + 1)):
        out = be.batch_norm_forward(x, gamma, beta, *stats, 1e-5)
        be.batch_norm_backward(x, x, gamma, out[1], out[2], stats[0] is None)
    be.relu_backward(x, x)
    be.relu(x)
    be.sigmoid(x)
    be.silu(x)
    for decoupled in (False, True):
        be.adam_update(arr(5), arr(5), arr(5), np.abs(arr(5)), 1, 1e-3, 0.9, 0.999, 1e-8, 0.01,
                       decoupled)


def run(dtype: str, cache: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    code = (f"import time; t0 = time.perf_counter(); import sys; sys.path.insert(0, {_here()!r})"
            f"; import bench_compile as b; b.exercise({dtype!r}); "
            "print(time.perf_counter() - t0)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _here() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="minicond-numba-cache-") as cache:
        t0 = time.perf_counter()
        cold = run(args.dtype, cache)
        warm = run(args.dtype, cache)
        wall = time.perf_counter() - t0
    print(f"numba backend, {args.dtype}: cold {cold:.1f} s (empty cache: import and every "
          f"compiled path), warm {warm:.2f} s (cache filled), {wall:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
