"""Time CondConv2d in minicond against PyTorch, side by side, in one process.

CPU (the default): float32, padding k//2, routing with a sigmoid in eval mode, the same thread
count for everyone (``--threads``, default 2). A configuration is a row of the grid

    B, Cin[:Cout], HW, E, stride, groups, kernel, mode

(``Cout`` defaults to ``Cin``; ``mode`` is ``train`` — forward and backward with gradient
recording — or ``inference`` — eval mode, no gradient recording, forward only); the short
form ``B,C,HW,E`` means a 3×3 kernel, stride 1, one group, timed in both modes. Variants:

    numpy          minicond, NumPy reference backend
    numba          minicond, Numba CPU backend
    numba_static   minicond's own static Conv2d of the same shape (no routing, no mixing)
    torch_seed     PyTorch, the per-example Python loop of the original CondConv2D
    torch_grouped  PyTorch, kernels mixed per example and the batch run as one grouped conv2d
    torch_static   PyTorch, a static nn.Conv2d of the same shape

Every repeat runs each variant in turn, one untimed settling step and then one timed step, so
load from other processes hits all of them alike while no variant pays for the threads the
previous one left spinning; the reported time is the median over repeats. GFLOP/s counts the
convolution only, 2·B·Cout·(Cin/G)·k²·Ho·Wo for the forward pass and three times that for
forward+backward.
``t_torch_best / t_numba`` compares with the faster of PyTorch's two CondConv formulations
(the seed's per-example loop and the grouped-convolution trick): above 1, minicond is faster.

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
    python benchmarks/bench_condconv.py --configs 16,96,28,4,1,96,3,train 1,64,56,4,1,1,3,inference
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODES = ("inference", "train")
VARIANTS = ("numpy", "numba", "numba_static", "torch_seed", "torch_grouped", "torch_static")
TORCH_VARIANTS = ("torch_seed", "torch_grouped", "torch_static")
# untimed steps at the start of each variant's turn (see time_config)
SETTLE_STEPS = 1


@dataclass(frozen=True)
class Config:
    """One row of the grid: B images of Cin channels and HW×HW pixels into Cout channels, E
    experts, a k×k kernel with padding k//2, ``stride``, ``groups``; timed in ``mode``."""

    B: int
    Cin: int
    Cout: int
    HW: int
    E: int
    stride: int = 1
    groups: int = 1
    kernel: int = 3
    mode: str = "train"

    @property
    def out_hw(self) -> int:
        return (self.HW + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1

    @property
    def flops(self) -> float:
        """Forward convolution FLOPs, 2·B·Cout·(Cin/G)·k²·Ho·Wo."""
        return (2.0 * self.B * self.Cout * (self.Cin // self.groups) * self.kernel ** 2
                * self.out_hw ** 2)

    def label(self) -> str:
        chans = f"{self.Cin}" if self.Cin == self.Cout else f"{self.Cin}:{self.Cout}"
        return (f"{self.B},{chans},{self.HW},{self.E},{self.stride},{self.groups},"
                f"{self.kernel},{self.mode}")


def _grid() -> list[Config]:
    rows: list[Config] = []
    for B, C, HW, E in ((8, 16, 16, 4), (32, 32, 32, 8), (32, 64, 32, 8), (64, 64, 16, 8)):
        rows += [Config(B, C, C, HW, E, mode="train"), Config(B, C, C, HW, E, mode="inference")]
    rows += [
        Config(16, 128, 128, 8, 8),
        Config(32, 48, 48, 32, 4, stride=2),
        Config(16, 96, 96, 28, 4, groups=96),                      # depthwise
        Config(16, 144, 144, 14, 8, groups=144),
        Config(1, 144, 144, 28, 8, groups=144, mode="inference"),
        Config(32, 96, 96, 28, 4, kernel=1),                       # 1×1
        Config(32, 24, 144, 28, 4, kernel=1),                      # 1×1 expand
        Config(1, 64, 64, 56, 4, mode="inference"),                # batch 1
        Config(1, 128, 128, 28, 8, mode="inference"),
    ]
    rows += [Config(32, 32, 32, 32, E) for E in (1, 2, 4, 8, 16)
             if Config(32, 32, 32, 32, E) not in rows]
    return rows


GRID = _grid()
QUICK_CONFIGS = [Config(8, 16, 16, 16, 4), Config(4, 16, 16, 16, 4, groups=16),
                 Config(1, 16, 16, 16, 4, mode="inference")]


def parse_config(text: str) -> list[Config]:
    """``B,Cin[:Cout],HW,E[,stride,groups,kernel,mode]``; the short form gives both modes."""
    parts = text.split(",")
    try:
        if len(parts) not in (4, 8):
            raise ValueError
        B, chans, HW, E = parts[:4]
        Cin, _, Cout = chans.partition(":")
        ints = [int(B), int(Cin), int(Cout or Cin), int(HW), int(E)]
        extra = [int(v) for v in parts[4:7]] if len(parts) == 8 else [1, 1, 3]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"config {text!r} must be B,C,HW,E or B,Cin[:Cout],HW,E,stride,groups,kernel,mode"
        ) from None
    if min(ints + extra) < 1:
        raise argparse.ArgumentTypeError(f"config {text!r}: every number must be >= 1")
    B, Cin, Cout, HW, E = ints
    stride, groups, kernel = extra
    if Cin % groups or Cout % groups:
        raise argparse.ArgumentTypeError(f"config {text!r}: groups={groups} must divide "
                                         f"Cin={Cin} and Cout={Cout}")
    modes = [parts[7]] if len(parts) == 8 else list(MODES)
    for mode in modes:
        if mode not in MODES:
            raise argparse.ArgumentTypeError(f"config {text!r}: mode {mode!r} must be one "
                                             f"of {', '.join(MODES)}")
    return [Config(B, Cin, Cout, HW, E, stride, groups, kernel, m) for m in modes]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per variant (default 7, or 3 with --quick)")
    p.add_argument("--configs", nargs="+", metavar="CONFIG",
                   help="B,C,HW,E or B,Cin[:Cout],HW,E,stride,groups,kernel,mode "
                        "(default: the whole grid)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    p.add_argument("--quick", action="store_true", help="two configs, 3 repeats")
    p.add_argument("--threads", type=int, default=2, help="threads for every library")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--sgemm-peak", action="store_true",
                   help="also measure NumPy's (OpenBLAS) float32 matrix product on 1 and "
                        "--threads threads, the reference for the GF/s column")
    p.add_argument("--memory-probe", nargs=2, metavar=("VARIANT", "CONFIG"),
                   help=argparse.SUPPRESS)     # internal: one memory measurement, as JSON
    args = p.parse_args(argv)
    if (args.repeats is not None and args.repeats < 1) or args.threads < 1:
        p.error("--repeats and --threads must be >= 1")
    if args.backend == "cuda":      # the CUDA benchmark has its own configs and defaults
        return args
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.configs is None:
        args.configs = QUICK_CONFIGS if args.quick else GRID
    else:
        try:
            args.configs = [c for text in args.configs for c in parse_config(text)]
        except argparse.ArgumentTypeError as err:
            p.error(str(err))
    return args


def set_thread_env(threads: int) -> None:
    """Thread counts must be in the environment before NumPy, Numba or PyTorch load."""
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


# --- the variants ----------------------------------------------------------------------------

def build(variant: str, cfg: Config, seed: int = 0):
    """A ``step()`` closure for one variant; the same data everywhere."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k, G = cfg.kernel, cfg.groups
    x_np = rng.standard_normal((cfg.B, cfg.Cin, cfg.HW, cfg.HW)).astype(np.float32)
    gy_np = rng.standard_normal((cfg.B, cfg.Cout, cfg.out_hw, cfg.out_hw)).astype(np.float32)
    bound = 1 / np.sqrt(cfg.Cin // G * k * k)
    W_np = rng.uniform(-bound, bound, (cfg.E, cfg.Cout, cfg.Cin // G, k, k)).astype(np.float32)
    b_np = rng.uniform(-bound, bound, cfg.Cout).astype(np.float32)
    R_np = rng.uniform(-1 / np.sqrt(cfg.Cin), 1 / np.sqrt(cfg.Cin),
                       (cfg.E, cfg.Cin)).astype(np.float32)
    c_np = np.zeros(cfg.E, dtype=np.float32)
    arrays = (x_np, gy_np, W_np, b_np, R_np, c_np)
    if variant in TORCH_VARIANTS:
        return _build_torch(variant, cfg, *arrays)
    return _build_minicond(variant, cfg, *arrays)


def _build_minicond(variant, cfg, x_np, gy_np, W_np, b_np, R_np, c_np):
    # the input wrapped without a copy each step, as the PyTorch variants' torch.from_numpy
    import minicond as mc

    backend = "numba" if variant.startswith("numba") else "numpy"
    conv = {"stride": cfg.stride, "padding": cfg.kernel // 2, "groups": cfg.groups,
            "backend": backend}
    if variant == "numba_static":
        layer = mc.nn.Conv2d(cfg.Cin, cfg.Cout, cfg.kernel, **conv)
        layer.weight.data = mc.tensor(W_np[0], backend=backend).data
    else:
        layer = mc.nn.CondConv2d(cfg.Cin, cfg.Cout, cfg.kernel, num_experts=cfg.E, **conv)
        layer.weight.data = mc.tensor(W_np, backend=backend).data
        layer.routing.fc.weight.data = mc.tensor(R_np, backend=backend).data
        layer.routing.fc.bias.data = mc.tensor(c_np, backend=backend).data
    layer.bias.data = mc.tensor(b_np, backend=backend).data
    layer.eval()
    params = list(layer.parameters())
    gy = mc.tensor(gy_np, backend=backend)

    def step():
        if cfg.mode == "inference":
            with mc.no_grad():
                return layer(mc.from_numpy(x_np, backend=backend))
        for p in params:
            p.grad = None
        x = mc.from_numpy(x_np, requires_grad=True, backend=backend)
        y = layer(x)
        y.backward(gy)
        return y
    return step


def _build_torch(variant, cfg, x_np, gy_np, W_np, b_np, R_np, c_np):
    import torch
    import torch.nn.functional as F

    B, E, G = cfg.B, cfg.E, cfg.groups
    H = W = cfg.HW
    s, pad = cfg.stride, cfg.kernel // 2
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
            res.append(F.conv2d(xb, kernel, bias, s, pad, 1, G))
        return torch.cat(res, dim=0)

    def grouped(x):
        # mix per example, then the batch as B·G groups of one conv2d
        r = torch.sigmoid(F.linear(x.mean(dim=(2, 3)), R, c))                     # [B, E]
        kernels = (r @ weight.reshape(E, -1)).reshape(B * cfg.Cout, *weight.shape[2:])
        y = F.conv2d(x.reshape(1, B * cfg.Cin, H, W), kernels, None, s, pad, 1, B * G)
        return y.reshape(B, cfg.Cout, *y.shape[2:]) + bias[:, None, None]

    def static(x):
        return F.conv2d(x, static_w, bias, s, pad, 1, G)

    fn = {"torch_seed": seed_loop, "torch_grouped": grouped, "torch_static": static}[variant]

    def step():
        if cfg.mode == "inference":
            with torch.no_grad():
                return fn(torch.from_numpy(x_np))
        for p in params:
            p.grad = None
        x = torch.from_numpy(x_np).requires_grad_(True)
        y = fn(x)
        y.backward(gy)
        return y
    return step


# --- timing ----------------------------------------------------------------------------------

def time_config(cfg: Config, variants, repeats: int) -> dict[str, list[float]]:
    """Seconds per run, {variant: [t, ...]}, variants interleaved within each repeat.

    Each turn of a variant starts with one untimed step (``SETTLE_STEPS``): the thread pools
    of the variant that ran before (OpenBLAS's, PyTorch's OpenMP team) keep spinning for a
    while after their last task, and a step timed right after the switch pays for that
    spinning, not for its own work. On the 2-core machine of docs/performance.md, timing the
    first step after each switch made PyTorch's (8,16,16,4) training step 4.9 ms instead of
    its 1.0 ms when run alone, and minicond's 2.9 ms instead of 1.2 ms; one settling step
    brings both back to their solo times."""
    steps = {v: build(v, cfg) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for step in steps.values():
        step()                               # warm-up: JIT, caches, allocator
    for _ in range(repeats):
        for v, step in steps.items():
            for _ in range(SETTLE_STEPS):
                step()
            t0 = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
    return times


def memory_probe(variant: str, cfg: Config) -> dict[str, Any]:
    """Peak memory of one step, above what was resident before it."""
    import gc
    import tracemalloc

    step = build(variant, cfg)
    step()
    step()
    gc.collect()
    out: dict[str, Any] = {}
    clear_refs = Path("/proc/self/clear_refs")
    try:
        clear_refs.write_text("5")           # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        step()
        out["rss_peak_mib"] = (_status_kib("VmHWM") - before) / 1024
    except OSError:
        out["rss_peak_mib"] = None
    if not variant.startswith("torch"):
        gc.collect()
        tracemalloc.start()
        step()
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def measure_memory(variant: str, cfg: Config, threads: int) -> dict[str, Any]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--threads", str(threads), "--memory-probe", variant,
           cfg.label()]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def summarise(cfg: Config, times, memory) -> dict[str, Any]:
    f = cfg.flops * (3 if cfg.mode == "train" else 1)
    rows = {v: {"median_ms": 1e3 * median(ts), "runs_ms": [1e3 * t for t in ts],
                "gflops": f / median(ts) / 1e9} for v, ts in times.items()}
    ratios: dict[str, float] = {}
    if "numba" in rows:
        t = rows["numba"]["median_ms"]
        for v in ("torch_grouped", "torch_seed", "torch_static", "numpy"):
            if v in rows:
                ratios[f"{v}/numba"] = rows[v]["median_ms"] / t
        torch_cond = [rows[v]["median_ms"] for v in ("torch_grouped", "torch_seed") if v in rows]
        if torch_cond:
            ratios["torch_best/numba"] = min(torch_cond) / t
        if "numba_static" in rows:
            ratios["numba/numba_static"] = t / rows["numba_static"]["median_ms"]
    entry: dict[str, Any] = {"config": asdict(cfg), "label": cfg.label(), "variants": rows,
                             "ratios": ratios}
    if memory:
        entry["memory"] = memory
    return entry


def print_entry(entry: dict[str, Any]) -> None:
    print(f"\n{entry['label']}")
    cells = "  ".join(f"{v} {r['median_ms']:.2f} ms ({r['gflops']:.1f} GF/s)"
                      for v, r in entry["variants"].items())
    print(f"  {cells}")
    if entry["ratios"]:
        print("  " + "  ".join(f"{k} {r:.2f}" for k, r in entry["ratios"].items()))
    for v, mem in entry.get("memory", {}).items():
        print(f"  peak memory {v}: {mem}")


RATIO_COLUMNS = ("torch_best/numba", "torch_grouped/numba", "torch_seed/numba",
                 "torch_static/numba", "numpy/numba", "numba/numba_static")


def print_table(results: list[dict[str, Any]]) -> None:
    """The markdown table that goes into docs/performance.md."""
    print("\n| B | Cin→Cout | HW | E | s | G | k | mode | numba ms | GF/s | best torch/numba | "
          "grouped/numba | seed/numba | static/numba | numpy/numba | numba/own static | "
          "peak MiB numba / grouped |")
    print("|" + "---|" * 17)
    for e in results:
        c, r, t = e["config"], e["ratios"], e["variants"].get("numba")
        if t is None:
            continue
        mem = e.get("memory", {})
        m_n = mem.get("numba", {}).get("rss_peak_mib")
        m_g = mem.get("torch_grouped", {}).get("rss_peak_mib")
        peak = f"{m_n:.0f} / {m_g:.0f}" if m_n is not None and m_g is not None else ""
        chans = f"{c['Cin']}" if c["Cin"] == c["Cout"] else f"{c['Cin']}→{c['Cout']}"
        cells = " | ".join(f"{r[k]:.2f}" if k in r else "" for k in RATIO_COLUMNS)
        print(f"| {c['B']} | {chans} | {c['HW']} | {c['E']} | {c['stride']} | {c['groups']} | "
              f"{c['kernel']} | {c['mode']} | {t['median_ms']:.2f} | {t['gflops']:.1f} | "
              f"{cells} | {peak} |")


def sgemm_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of NumPy's float32 n×n×n product (OpenBLAS) on 1 and on ``threads`` threads,
    the best of ``repeats``: the ceiling for the im2col + GEMM convolutions."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    out = {}
    for t in sorted({1, threads}):
        with threadpool_limits(limits=t, user_api="blas"):
            a @ a
            best = min(_timed(lambda: a @ a) for _ in range(repeats))
        out[f"{t}_thread"] = 2.0 * n ** 3 / best / 1e9
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_cpu(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import minicond

    torch.set_num_threads(args.threads)
    peak = sgemm_peak(args.threads) if args.sgemm_peak else None
    if peak:
        print("OpenBLAS float32 GEMM peak (2048³): " + ", ".join(
            f"{k.split('_')[0]} thread(s) {v:.0f} GF/s" for k, v in peak.items()))
    results = []
    for cfg in args.configs:
        times = time_config(cfg, args.variants, args.repeats)
        memory = {} if args.no_memory else {
            v: measure_memory(v, cfg, args.threads) for v in args.variants}
        entry = summarise(cfg, times, memory)
        print_entry(entry)
        results.append(entry)
    print_table(results)
    if args.json:
        meta = {"threads": args.threads, "repeats": args.repeats, "dtype": "float32",
                "python": platform.python_version(), "numpy": np.__version__,
                "torch": torch.__version__, "minicond": minicond.__version__,
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "sgemm_peak_gflops": peak}
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
        variant, text = args.memory_probe
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(memory_probe(variant, parse_config(text)[0])))
        return 0
    if args.backend == "cuda":
        return run_cuda_bench(args)
    return run_cpu(args)


if __name__ == "__main__":
    sys.exit(main())
