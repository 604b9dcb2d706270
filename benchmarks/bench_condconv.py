"""Time CondConv2d in minicond against PyTorch, side by side, in one process.

CPU (the default): float32, 3×3 kernels, padding 1, routing with a sigmoid in eval mode, the
same thread count for everyone (``--threads``, default 2). Variants:

    numpy          minicond, NumPy reference backend
    numba          minicond, Numba CPU backend
    numba_static   minicond's own static Conv2d of the same shape (no routing, no mixing)
    torch_seed     PyTorch, the per-example Python loop of the original CondConv2D
    torch_grouped  PyTorch, kernels mixed per example and the batch run as one grouped conv2d
    torch_static   PyTorch, a static nn.Conv2d of the same shape

Every repeat runs each variant once, in turn, so load from other processes hits all of them
alike; the reported time is the median over repeats. GFLOP/s counts the convolution only,
2·B·Cout·Cin·9·H·W for the forward pass and three times that for forward+backward.

Peak memory of forward+backward is measured in a fresh subprocess per variant: after a warm-up
step, the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), one step runs, and the
peak above the resident set before the step is reported. glibc is told to serve every block
over 64 KiB with mmap (``MALLOC_MMAP_THRESHOLD_``) so freed temporaries leave the resident set
and the next step cannot hide in memory it already holds. For minicond, ``tracemalloc`` also
reports the peak of NumPy's own allocations in the step.

``--backend cuda`` hands over to ``benchmarks/_cuda_bench.py``.

    python benchmarks/bench_condconv.py                  # the full table (several minutes)
    python benchmarks/bench_condconv.py --quick          # two configs, fewer repeats
    python benchmarks/bench_condconv.py --json results.json --configs 32,64,32,8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MAIN_CONFIGS = [(8, 16, 16, 4), (32, 32, 32, 8), (32, 64, 32, 8), (64, 64, 16, 8)]
EXPERT_SWEEP = [(32, 32, 32, e) for e in (1, 2, 4, 8, 16)]
QUICK_CONFIGS = [(8, 16, 16, 4), (32, 32, 32, 8)]
VARIANTS = ("numpy", "numba", "numba_static", "torch_seed", "torch_grouped", "torch_static")
TORCH_VARIANTS = ("torch_seed", "torch_grouped", "torch_static")
MODES = ("forward", "forward+backward")


def parse_config(text: str) -> tuple[int, int, int, int]:
    try:
        B, C, HW, E = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"config {text!r} must be B,C,HW,E (four ints)") from None
    if min(B, C, HW, E) < 1:
        raise argparse.ArgumentTypeError(f"config {text!r}: every entry must be >= 1")
    return B, C, HW, E


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per variant (default 7, or 3 with --quick)")
    p.add_argument("--configs", type=parse_config, nargs="+", metavar="B,C,HW,E",
                   help="configurations (default: the four main ones and an E sweep)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    p.add_argument("--quick", action="store_true", help="two configs, 3 repeats")
    p.add_argument("--threads", type=int, default=2, help="threads for every library")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--memory-probe", nargs=5, metavar=("VARIANT", "B", "C", "HW", "E"),
                   help=argparse.SUPPRESS)     # internal: one memory measurement, as JSON
    args = p.parse_args(argv)
    if (args.repeats is not None and args.repeats < 1) or args.threads < 1:
        p.error("--repeats and --threads must be >= 1")
    if args.backend == "cuda":      # the CUDA benchmark has its own defaults
        return args
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.configs is None:
        args.configs = QUICK_CONFIGS if args.quick else MAIN_CONFIGS + [
            c for c in EXPERT_SWEEP if c not in MAIN_CONFIGS]
    return args


def set_thread_env(threads: int) -> None:
    """Thread counts must be in the environment before NumPy, Numba or PyTorch load."""
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


# --- the variants ----------------------------------------------------------------------------

def build(variant: str, B: int, C: int, HW: int, E: int, seed: int = 0):
    """Inputs and a ``step(backward)`` closure for one variant; the same data everywhere."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((B, C, HW, HW)).astype(np.float32)
    gy_np = rng.standard_normal((B, C, HW, HW)).astype(np.float32)
    bound = 1 / np.sqrt(C * 9)
    W_np = rng.uniform(-bound, bound, (E, C, C, 3, 3)).astype(np.float32)
    b_np = rng.uniform(-bound, bound, C).astype(np.float32)
    R_np = rng.uniform(-1 / np.sqrt(C), 1 / np.sqrt(C), (E, C)).astype(np.float32)
    c_np = np.zeros(E, dtype=np.float32)
    if variant in TORCH_VARIANTS:
        return _build_torch(variant, x_np, gy_np, W_np, b_np, R_np, c_np)
    return _build_minicond(variant, x_np, gy_np, W_np, b_np, R_np, c_np)


def _build_minicond(variant, x_np, gy_np, W_np, b_np, R_np, c_np):
    import minicond as mc

    backend = "numba" if variant.startswith("numba") else "numpy"
    C = x_np.shape[1]
    if variant == "numba_static":
        layer = mc.nn.Conv2d(C, C, 3, padding=1, backend=backend)
        layer.weight.data = mc.tensor(W_np[0], backend=backend).data
    else:
        layer = mc.nn.CondConv2d(C, C, 3, padding=1, num_experts=W_np.shape[0],
                                 backend=backend)
        layer.weight.data = mc.tensor(W_np, backend=backend).data
        layer.routing.fc.weight.data = mc.tensor(R_np, backend=backend).data
        layer.routing.fc.bias.data = mc.tensor(c_np, backend=backend).data
    layer.bias.data = mc.tensor(b_np, backend=backend).data
    layer.eval()
    params = list(layer.parameters())
    gy = mc.tensor(gy_np, backend=backend)

    def step(backward: bool):
        if not backward:
            with mc.no_grad():
                return layer(mc.tensor(x_np, backend=backend))
        for p in params:
            p.grad = None
        x = mc.tensor(x_np, requires_grad=True, backend=backend)
        y = layer(x)
        y.backward(gy)
        return y
    return step


def _build_torch(variant, x_np, gy_np, W_np, b_np, R_np, c_np):
    import torch
    import torch.nn.functional as F

    B, C, H, W = x_np.shape
    E = W_np.shape[0]
    weight = torch.tensor(W_np, requires_grad=True)
    bias = torch.tensor(b_np, requires_grad=True)
    R = torch.tensor(R_np, requires_grad=True)
    c = torch.tensor(c_np, requires_grad=True)
    static_w = torch.tensor(W_np[0], requires_grad=True)
    params = [weight, bias, R, c, static_w]
    gy = torch.tensor(gy_np)

    def seed_loop(x):
        # the original layer: routing, mixing and conv one example at a time
        res = []
        for xb in x:
            xb = xb.unsqueeze(0)
            r = torch.sigmoid(F.linear(torch.flatten(F.adaptive_avg_pool2d(xb, 1)), R, c))
            kernel = torch.sum(r[:, None, None, None, None] * weight, 0)
            res.append(F.conv2d(xb, kernel, bias, 1, 1))
        return torch.cat(res, dim=0)

    def grouped(x):
        # mix per example, then the batch as groups of one conv2d
        r = torch.sigmoid(F.linear(x.mean(dim=(2, 3)), R, c))                     # [B, E]
        kernels = (r @ weight.reshape(E, -1)).reshape(B * C, C, 3, 3)
        y = F.conv2d(x.reshape(1, B * C, H, W), kernels, None, 1, 1, groups=B)
        return y.reshape(B, C, H, W) + bias[:, None, None]

    def static(x):
        return F.conv2d(x, static_w, bias, 1, 1)

    fn = {"torch_seed": seed_loop, "torch_grouped": grouped, "torch_static": static}[variant]

    def step(backward: bool):
        if not backward:
            with torch.no_grad():
                return fn(torch.from_numpy(x_np))
        for p in params:
            p.grad = None
        x = torch.from_numpy(x_np).requires_grad_(True)
        y = fn(x)
        y.backward(gy)
        return y
    return step


def conv_flops(B: int, C: int, HW: int) -> float:
    return 2.0 * B * C * C * 9 * HW * HW


# --- timing ----------------------------------------------------------------------------------

def time_config(config, variants, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per run, {mode: {variant: [t, ...]}}, variants interleaved within a repeat."""
    steps = {v: build(v, *config) for v in variants}
    times: dict[str, dict[str, list[float]]] = {m: {v: [] for v in variants} for m in MODES}
    for mode in MODES:
        backward = mode != "forward"
        for step in steps.values():
            step(backward)                   # warm-up: JIT, caches, allocator
        for _ in range(repeats):
            for v, step in steps.items():
                t0 = time.perf_counter()
                step(backward)
                times[mode][v].append(time.perf_counter() - t0)
    return times


def memory_probe(variant: str, config) -> dict[str, Any]:
    """Peak memory of one forward+backward step, above what was resident before it."""
    import gc
    import tracemalloc

    step = build(variant, *config)
    step(True)
    step(True)
    gc.collect()
    out: dict[str, Any] = {}
    clear_refs = Path("/proc/self/clear_refs")
    try:
        clear_refs.write_text("5")           # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        step(True)
        out["rss_peak_mib"] = (_status_kib("VmHWM") - before) / 1024
    except OSError:
        out["rss_peak_mib"] = None
    if not variant.startswith("torch"):
        gc.collect()
        tracemalloc.start()
        step(True)
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def measure_memory(variant: str, config, threads: int) -> dict[str, Any]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--threads", str(threads), "--memory-probe", variant,
           *map(str, config)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def summarise(config, times, memory) -> dict[str, Any]:
    B, C, HW, E = config
    flops = conv_flops(B, C, HW)
    entry: dict[str, Any] = {"B": B, "C": C, "HW": HW, "E": E, "modes": {}}
    for mode, per_variant in times.items():
        f = flops * (3 if mode == "forward+backward" else 1)
        rows = {v: {"median_ms": 1e3 * median(ts), "runs_ms": [1e3 * t for t in ts],
                    "gflops": f / median(ts) / 1e9} for v, ts in per_variant.items()}
        ratios = {}
        if "numba" in rows:
            t = rows["numba"]["median_ms"]
            for v in ("torch_grouped", "torch_seed", "torch_static", "numpy"):
                if v in rows:
                    ratios[f"{v}/numba"] = rows[v]["median_ms"] / t
            if "numba_static" in rows:
                ratios["numba/numba_static"] = t / rows["numba_static"]["median_ms"]
        entry["modes"][mode] = {"variants": rows, "ratios": ratios}
    if memory:
        entry["memory_forward_backward"] = memory
    return entry


def print_entry(entry: dict[str, Any]) -> None:
    print(f"\nB={entry['B']} C={entry['C']} HW={entry['HW']} E={entry['E']}")
    for mode, m in entry["modes"].items():
        cells = "  ".join(f"{v} {r['median_ms']:.2f} ms ({r['gflops']:.1f} GF/s)"
                          for v, r in m["variants"].items())
        print(f"  {mode:17s} {cells}")
        if m["ratios"]:
            print("  " + " " * 17 + "  ".join(f"{k} {r:.2f}" for k, r in m["ratios"].items()))
    for v, mem in entry.get("memory_forward_backward", {}).items():
        print(f"  peak memory fwd+bwd {v}: {mem}")


def print_table(results: list[dict[str, Any]]) -> None:
    """The markdown table that goes into docs/performance.md."""
    print("\n| B | C | HW | E | mode | numba ms | GF/s | grouped/numba | seed/numba | "
          "static/numba | numpy/numba | numba/own static | peak MiB numba / grouped |")
    print("|" + "---|" * 13)
    for e in results:
        mem = e.get("memory_forward_backward", {})
        m_n = mem.get("numba", {}).get("rss_peak_mib")
        m_g = mem.get("torch_grouped", {}).get("rss_peak_mib")
        for mode, m in e["modes"].items():
            r, t = m["ratios"], m["variants"].get("numba")
            if t is None:
                continue
            peak = (f"{m_n:.0f} / {m_g:.0f}" if mode != "forward" and m_n is not None
                    and m_g is not None else "")
            cells = " | ".join(f"{r[k]:.2f}" if k in r else "" for k in (
                "torch_grouped/numba", "torch_seed/numba", "torch_static/numba", "numpy/numba",
                "numba/numba_static"))
            print(f"| {e['B']} | {e['C']} | {e['HW']} | {e['E']} | {mode} | "
                  f"{t['median_ms']:.1f} | {t['gflops']:.1f} | {cells} | {peak} |")


def run_cpu(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import minicond

    torch.set_num_threads(args.threads)
    results = []
    for config in args.configs:
        times = time_config(config, args.variants, args.repeats)
        memory = {} if args.no_memory else {
            v: measure_memory(v, config, args.threads) for v in args.variants}
        entry = summarise(config, times, memory)
        print_entry(entry)
        results.append(entry)
    print_table(results)
    if args.json:
        meta = {"threads": args.threads, "repeats": args.repeats, "dtype": "float32",
                "python": platform.python_version(), "numpy": np.__version__,
                "torch": torch.__version__, "minicond": minicond.__version__,
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        print(f"\nwrote {args.json}")
    return 0


def run_cuda_bench(args: argparse.Namespace) -> int:
    here = Path(__file__).resolve().parent
    if not (here / "_cuda_bench.py").exists():
        print("bench_condconv: --backend cuda needs benchmarks/_cuda_bench.py, which is not "
              "in this checkout", file=sys.stderr)
        return 2
    sys.path.insert(0, str(here))
    from _cuda_bench import run_cuda

    run_cuda(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_thread_env(args.threads)
    if args.memory_probe:
        variant, *config = args.memory_probe
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(memory_probe(variant, tuple(int(v) for v in config))))
        return 0
    if args.backend == "cuda":
        return run_cuda_bench(args)
    return run_cpu(args)


if __name__ == "__main__":
    sys.exit(main())
