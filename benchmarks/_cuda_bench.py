"""CondConv on the GPU: minicond's CUDA backend against PyTorch CUDA (cuDNN), in one process.

Called by ``bench_condconv.py --backend cuda`` through :func:`run_cuda`, or run directly
(``python3 benchmarks/_cuda_bench.py --json out.json``; ``--kernels`` times one CondConv
step kernel by kernel and the host cost per call; ``--ptx`` counts the integer divisions of
the compiled GEMMs, without a GPU). A configuration ``(B, C, HW, E)`` is a
batch of B images with C input and output channels, HW×HW pixels, E experts, a 3×3 kernel with
padding 1 and a static bias. Three implementations of the same layer are timed:

* ``minicond``: ``mc.functional.cond_conv2d(x, r, W, bias)`` on ``backend="cuda"``;
* ``torch_grouped``: the grouped-convolution trick, K = r·W reshaped to ``[B·C, C, 3, 3]`` and
  one convolution with ``groups=B`` over the batch folded into channels;
* ``torch_static``: one ordinary convolution with a single expert (what CondConv costs at
  best, for scale).

``fwd`` times the forward pass; ``fwd+bwd`` the forward pass and the backward pass to x, r, W
and the bias with a fixed random cotangent. Each timing is the median over ``repeats`` runs
of one synchronised iteration (device synchronised before the clock starts and before it
stops), after warm-up runs that include JIT compilation and cuDNN's algorithm search. TF32 is
off in PyTorch, so all three compute in float32.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

GPU_CONFIGS = [(128, 64, 32, 8), (256, 128, 16, 8)]
DEFAULT_CONFIGS = [(8, 32, 32, 4), (32, 64, 32, 8), (64, 64, 16, 8)]
# Back-to-back launches of the host-cost measurement in ``kernel_breakdown``.
LAUNCHES = 1000


def _parse_configs(configs: Any) -> list[tuple[int, int, int, int]]:
    """Configurations from tuples or "B,C,HW,E" strings; the GPU sizes are always added."""
    out = []
    for c in configs or DEFAULT_CONFIGS:
        t = tuple(int(v) for v in (c.replace("x", ",").split(",") if isinstance(c, str) else c))
        if len(t) != 4:
            raise ValueError(f"config {c!r} must be (B, C, HW, E)")
        out.append(t)
    return out + [c for c in GPU_CONFIGS if c not in out]


def _median_time(step: Callable[[], None], sync: Callable[[], None], repeats: int,
                 warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bench_config(cfg, repeats: int, warmup: int) -> list[dict]:
    import torch
    import torch.nn.functional as TF
    from numba import cuda

    import minicond as mc

    B, C, HW, E = cfg
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, C, HW, HW)).astype(np.float32)
    r = (1 / (1 + np.exp(-rng.standard_normal((B, E))))).astype(np.float32)
    W = (rng.standard_normal((E, C, C, 3, 3)) * (1 / np.sqrt(9 * C))).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    gy = rng.standard_normal((B, C, HW, HW)).astype(np.float32)

    # minicond
    mx, mr, mW, mb = (mc.tensor(a, backend="cuda", requires_grad=True) for a in (x, r, W, bias))
    mgy = mc.tensor(gy, backend="cuda")

    def mc_fwd():
        with mc.no_grad():
            return mc.functional.cond_conv2d(mx, mr, mW, mb, padding=1)

    def mc_fwd_bwd():
        for t in (mx, mr, mW, mb):
            t.grad = None
        y = mc.functional.cond_conv2d(mx, mr, mW, mb, padding=1)
        y.backward(mgy)

    # PyTorch
    dev = torch.device("cuda")
    tx, tr, tW, tb = (torch.tensor(a, device=dev, requires_grad=True) for a in (x, r, W, bias))
    tgy = torch.tensor(gy, device=dev)

    def grouped():
        K = (tr @ tW.reshape(E, -1)).reshape(B * C, C, 3, 3)
        y = TF.conv2d(tx.reshape(1, B * C, HW, HW), K, padding=1, groups=B)
        return y.reshape(B, C, HW, HW) + tb.reshape(1, C, 1, 1)

    def static():
        return TF.conv2d(tx, tW[0], tb, padding=1)

    def torch_fwd(f):
        def run():
            with torch.no_grad():
                f()
        return run

    def torch_fwd_bwd(f):
        def run():
            for t in (tx, tr, tW, tb):
                t.grad = None
            f().backward(tgy)
        return run

    # the three compute the same layer: check before timing
    y_mc = mc_fwd().numpy()
    with torch.no_grad():
        y_th = grouped().cpu().numpy()
    rel_err = float(np.linalg.norm(y_mc - y_th) / np.linalg.norm(y_th))

    msync = cuda.synchronize
    tsync = torch.cuda.synchronize
    rows = []
    for mode, mc_step, t_step in (("fwd", mc_fwd, torch_fwd),
                                  ("fwd+bwd", mc_fwd_bwd, torch_fwd_bwd)):
        t_mc = _median_time(mc_step, msync, repeats, warmup)
        t_grouped = _median_time(t_step(grouped), tsync, repeats, warmup)
        t_static = _median_time(t_step(static), tsync, repeats, warmup)
        rows.append({"B": B, "C": C, "HW": HW, "E": E, "mode": mode,
                     "t_minicond_ms": t_mc * 1e3, "t_torch_grouped_ms": t_grouped * 1e3,
                     "t_torch_static_ms": t_static * 1e3,
                     "grouped_over_minicond": t_grouped / t_mc,
                     "forward_rel_err_vs_torch": rel_err})
    return rows


def run_cuda(args: Any) -> list[dict]:
    """Benchmark every configuration of ``args.configs`` (plus the GPU sizes), print a table and
    write ``args.json`` if set. ``args.quick`` cuts repeats and keeps two configurations."""
    import torch
    from numba import cuda

    if not torch.cuda.is_available() or not cuda.is_available():
        raise SystemExit("--backend cuda needs a CUDA GPU visible to both PyTorch and Numba")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    configs = _parse_configs(getattr(args, "configs", None))
    quick = bool(getattr(args, "quick", False))
    repeats = int(getattr(args, "repeats", None) or (5 if quick else 20))
    if quick:
        configs = configs[:2]
    rows = []
    for cfg in configs:
        rows += _bench_config(cfg, repeats, warmup=3)
    device = torch.cuda.get_device_name()
    header = (f"{'B':>4} {'C':>4} {'HW':>3} {'E':>2} {'mode':>8} {'minicond ms':>12} "
              f"{'torch grouped':>14} {'torch static':>13} {'grouped/mc':>11} {'rel err':>8}")
    print(f"CondConv 3x3 pad 1, float32 (TF32 off), median of {repeats}, {device}")
    print(header)
    for row in rows:
        print(f"{row['B']:>4} {row['C']:>4} {row['HW']:>3} {row['E']:>2} {row['mode']:>8} "
              f"{row['t_minicond_ms']:>12.3f} {row['t_torch_grouped_ms']:>14.3f} "
              f"{row['t_torch_static_ms']:>13.3f} {row['grouped_over_minicond']:>11.2f} "
              f"{row['forward_rel_err_vs_torch']:>8.1e}")
    if getattr(args, "json", None):
        with open(args.json, "w") as fh:
            json.dump({"device": device, "repeats": repeats, "rows": rows}, fh, indent=2)
    return rows


def kernel_breakdown(cfg=(32, 64, 32, 8), repeats: int = 20) -> list[dict]:
    """Median time of each backend kernel that one CondConv step launches, at ``cfg``, and of
    a tiny ``add`` (the cost of one launch from Python); first the host cost per call, the
    mean over ``LAUNCHES`` back-to-back 4-element adds followed by one synchronisation."""
    from numba import cuda

    from minicond.backends import get_backend

    be = get_backend("cuda")
    B, C, HW, E = cfg
    rng = np.random.default_rng(0)

    def dev(*shape):
        return be.from_numpy(rng.standard_normal(shape).astype(np.float32), np.float32)

    x, r, W, gy = dev(B, C, HW, HW), dev(B, E), dev(E, C, C, 3, 3), dev(B, C, HW, HW)
    K = be.mix_experts(r, W)
    tiny = dev(4)
    geo = ((1, 1), (1, 1), (1, 1), 1)
    steps = {
        "launch (add of 4 floats)": lambda: be.add(tiny, tiny),
        "mix_experts": lambda: be.mix_experts(r, W),
        "conv2d_forward (per-example)": lambda: be.conv2d_forward(x, K, *geo),
        "conv2d_backward_input": lambda: be.conv2d_backward_input(gy, K, x.shape, *geo),
        "conv2d_backward_weight (5-D)": lambda: be.conv2d_backward_weight(
            x, gy, K.shape, *geo),
        "mix_experts_backward": lambda: be.mix_experts_backward(r, W, K),
        "sum over (0, 2, 3)": lambda: be.sum(gy, (0, 2, 3), False),
        "add bias [1, C, 1, 1]": lambda: be.add(gy, be.reshape(be.sum(gy, (0, 2, 3), False),
                                                              (1, C, 1, 1))),
    }
    rows = []
    # Host cost per call: 1,000 back-to-back launches of the 4-element add and one
    # synchronisation at the end, so the GPU's own time (a few µs) overlaps the host's.
    for _ in range(10):
        be.add(tiny, tiny)
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(LAUNCHES):
        be.add(tiny, tiny)
    cuda.synchronize()
    per_call = (time.perf_counter() - t0) / LAUNCHES
    rows.append({"kernel": f"host cost per call (add of 4 floats, mean of {LAUNCHES})",
                 "ms": per_call * 1e3})
    print(f"host cost per call: {per_call * 1e3:.4f} ms (4-element add, {LAUNCHES} launches, "
          "one synchronisation)")
    print(f"kernel breakdown at {cfg}")
    for label, step in steps.items():
        t = _median_time(step, cuda.synchronize, repeats, warmup=2)
        rows.append({"kernel": label, "ms": t * 1e3})
        print(f"  {label:<32} {t * 1e3:9.3f} ms")
    return rows


# --- static evidence without a GPU: integer divisions in the compiled convolution GEMMs -------

def _ptx_loops(ptx: str) -> tuple[dict, dict, list]:
    """Basic blocks (label -> lines), successors, and the loop nesting forest of a PTX kernel:
    loops as (header, blocks, depth), found as strongly connected components of the block
    graph, recursing into each after dropping the edges back to its header."""
    body = ptx[ptx.index("{", ptx.index(".entry")):].splitlines()
    order, text, name = ["entry"], {"entry": []}, "entry"
    for line in body:
        m = re.match(r"^\s*(\$[\w$]+):", line)
        if m:
            name = m.group(1)
            order.append(name)
            text[name] = []
        else:
            text[name].append(line)
    succ = {}
    for idx, b in enumerate(order):
        nxt, falls = set(), True
        for line in text[b]:
            m = re.search(r"(@!?%p\d+\s+)?bra(?:\.uni)?\s+(\$[\w$]+);", line)
            if m:
                nxt.add(m.group(2))
                falls = falls and bool(m.group(1))
            if re.search(r"\bret;", line):
                falls = False
        if falls and idx + 1 < len(order):
            nxt.add(order[idx + 1])
        succ[b] = nxt

    def components(nodes, edges):
        index, low, stack, on, out = {}, {}, [], set(), []

        def visit(v):
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in edges[v]:
                if w not in nodes:
                    continue
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                out.append(comp)
        for v in nodes:
            if v not in index:
                visit(v)
        return out

    loops = []

    def nest(nodes, edges, depth):
        for comp in components(nodes, edges):
            v = next(iter(comp))
            if len(comp) == 1 and v not in edges[v]:
                continue
            entries = [u for u in comp if any(u in edges[w] for w in edges if w not in comp)]
            header = entries[0] if entries else min(comp)
            loops.append((header, comp, depth))
            inner = {u: (edges[u] - {header}) if u in comp else edges[u] for u in edges}
            nest(comp - {header}, inner, depth + 1)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    nest(set(order), succ, 0)
    return text, succ, loops


def ptx_divisions(dtype=np.float32) -> list[dict]:
    """Static 64-bit integer division sites (``div``/``rem`` ``.s64``/``.u64``) of each GEMM
    kernel compiled for sm_90, by where they sit: in a loop that fills an operand tile element
    by element (the hot path), in a loop that fills an index table, once per k-tile, or once
    per thread. Needs the CUDA compiler (NVRTC), not a GPU; run without the simulator."""
    from numba import cuda

    from minicond.backends import numba_cuda

    rows = []
    for label, fn, sig in numba_cuda.kernel_signatures(dtype):
        if not label.startswith("gemm_"):
            continue
        ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
        text, _, loops = _ptx_loops(ptx)
        innermost = {}
        for lid, (_, comp, _) in enumerate(loops):     # parents come before their children
            for b in comp:
                innermost[b] = lid
        where = {"tile fill (per element)": 0, "index table (per entry)": 0,
                 "per k-tile": 0, "once per thread": 0}
        for b, lines in text.items():
            n = sum(1 for line in lines if re.search(r"\b(div|rem)\.[su]64\b", line))
            if not n:
                continue
            if b not in innermost:
                where["once per thread"] += n
                continue
            body = "\n".join(line for v in loops[innermost[b]][1] for line in text[v])
            fma, tile = re.search(r"fma\.rn\.f", body), re.search(r"st\.shared\.f", body)
            if fma or not (tile or re.search(r"st\.shared\.[bsu]64", body)):
                where["per k-tile"] += n
            elif tile:
                where["tile fill (per element)"] += n
            else:
                where["index table (per entry)"] += n
        rows.append({"kernel": label, **where})
        print(f"  {label:<18} " + "  ".join(f"{k}: {v}" for k, v in where.items()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", help="B,C,HW,E ...")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kernels", action="store_true",
                        help="time each kernel of one CondConv step instead")
    parser.add_argument("--ptx", action="store_true",
                        help="count the integer divisions of the compiled GEMMs (no GPU needed)")
    args = parser.parse_args()
    if args.ptx:
        rows = ptx_divisions()
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=2)
    elif args.kernels:
        rows = kernel_breakdown()
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=2)
    else:
        run_cuda(args)


if __name__ == "__main__":
    main()
