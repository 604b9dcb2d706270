"""Time a whole CondConv-EfficientNet in minicond against timm on PyTorch, in one process.

Inference (eval mode, no gradient), float32, at the model's input size (224×224 for B0) and
batch sizes 1 and 8, the same thread count for everyone (``--threads``, default 2). Variants:

    minicond         minicond's model on the Numba CPU backend, as built
    minicond_folded  the same after ``minicond.deploy.fold_batchnorm`` (batch norms folded
                     into the convolutions)
    torch            timm's model on PyTorch, ``torch.inference_mode()``

All three hold the same weights: timm's randomly initialised model (batch-norm statistics
drawn away from their defaults) is loaded into minicond, and the logits of every variant are
compared with timm's before timing. Every repeat runs each variant in turn, one untimed
settling step (the previous variant's thread pools stop spinning) and then one timed pass, so
load from other processes hits all of them alike; the reported time is the median over
repeats, and the ratio t_torch / t_variant is above 1 where minicond is faster.

    python benchmarks/bench_models.py                       # B0, 4 experts, 224 px, B = 1, 8
    python benchmarks/bench_models.py --quick               # 64 px, B = 1, 2, 2 repeats
    python benchmarks/bench_models.py --model efficientnet_cc_b0_8e --json b0_8e.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("minicond", "minicond_folded", "torch")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_cc_b0_4e",
                   help="a model name both minicond.models and timm know "
                   "(default tf_efficientnet_cc_b0_4e)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="(default 1 8, or 1 2 with --quick)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input side in pixels (default: the model's, or 64 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per variant and batch size (default 7, or 2 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="threads for every library")
    p.add_argument("--json", type=Path, default=Path("bench_models.json"), metavar="PATH",
                   help="where to write the results (default bench_models.json)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run that checks the benchmark works: 64 px, B = 1, 2")
    args = p.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 2] if args.quick else [1, 8]
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.image_size is None and args.quick:
        args.image_size = 64
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.threads < 1 or (
            args.image_size is not None and args.image_size < 8):
        p.error("--batch-sizes, --repeats and --threads must be >= 1, --image-size >= 8")
    return args


def set_thread_env(threads: int) -> None:
    """Thread counts must be in the environment before NumPy, Numba or PyTorch load."""
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def build_models(name: str, size: int | None) -> tuple[Any, Any, Any, int]:
    """timm's model and minicond's (unfolded, folded) with the same weights, in eval mode,
    and the input side (``size``, or the model's own)."""
    import numpy as np
    import timm
    import torch

    import minicond as mc
    from minicond.deploy import fold_batchnorm
    from minicond.models import create_model

    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                C = m.num_features
                m.running_mean.copy_(torch.from_numpy(rng.normal(0.0, 0.1, C)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, C)))
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, C)))
                m.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.1, C)))
    model = create_model(name, backend="numba")
    mc.interop.load_torch_state_dict(
        model, {k: v.detach().numpy() for k, v in reference.state_dict().items()})
    model.eval()
    size = size or int(model.pretrained_cfg["input_size"][-1])
    folded = fold_batchnorm(model, example_input=(1, 3, size, size))
    return reference, model, folded, size


def make_steps(reference: Any, model: Any, folded: Any, x_np: Any) -> dict[str, Any]:
    """One closure per variant, each returning the logits as a NumPy array."""
    import torch

    import minicond as mc

    x_torch = torch.from_numpy(x_np)
    x_mc = mc.tensor(x_np, backend="numba")

    def run_minicond(m: Any) -> Any:
        def step() -> Any:
            with mc.no_grad():
                return m(x_mc).numpy()
        return step

    def run_torch() -> Any:
        with torch.inference_mode():
            return reference(x_torch).numpy()

    return {"minicond": run_minicond(model), "minicond_folded": run_minicond(folded),
            "torch": run_torch}


def time_batch(steps: dict[str, Any], repeats: int) -> tuple[dict[str, list[float]],
                                                            dict[str, float]]:
    """Seconds per forward pass, variants interleaved within each repeat; and each minicond
    variant's max |logits − timm's| relative to max |timm's logits| (from the warm-up)."""
    outputs = {v: step() for v, step in steps.items()}   # warm-up: JIT, caches, allocator
    scale = float(abs(outputs["torch"]).max())
    errors = {v: float(abs(outputs[v] - outputs["torch"]).max()) / scale
              for v in steps if v != "torch"}
    times: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(repeats):
        for v, step in steps.items():
            step()      # untimed: lets the other library's spinning threads settle
            t0 = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
    return times, errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_thread_env(args.threads)
    import numpy as np
    import torch

    import minicond

    torch.set_num_threads(args.threads)
    reference, model, folded, size = build_models(args.model, args.image_size)
    results = []
    print(f"{args.model}, {size}×{size}, float32, {args.threads} threads, median of "
          f"{args.repeats} repeats")
    print(f"{'batch':>5}  {'variant':<16}{'median ms':>10}  {'t_torch/t':>9}  "
          f"{'max|Δ|/max|y|':>13}")
    for B in args.batch_sizes:
        x = np.random.default_rng(B).standard_normal((B, 3, size, size)).astype(np.float32)
        times, errors = time_batch(make_steps(reference, model, folded, x), args.repeats)
        medians = {v: statistics.median(t) for v, t in times.items()}
        entry = {"batch": B, "median_seconds": medians, "seconds": times,
                 "ratio_torch_over": {v: medians["torch"] / medians[v] for v in medians},
                 "relative_error_vs_torch": errors}
        results.append(entry)
        for v in VARIANTS:
            err = f"{errors[v]:13.1e}" if v in errors else f"{'':>13}"
            print(f"{B:>5}  {v:<16}{medians[v] * 1e3:10.1f}  "
                  f"{entry['ratio_torch_over'][v]:9.2f}  {err}")
    meta = {"model": args.model, "image_size": size, "threads": args.threads,
            "repeats": args.repeats, "dtype": "float32", "quick": args.quick,
            "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "minicond": minicond.__version__,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
