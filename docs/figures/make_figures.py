"""Draw the figures of minicond's docs from minicond's own computations.

    python docs/figures/make_figures.py [OUTDIR] [--json-only]

For every figure NAME this writes ``NAME.svg`` and ``NAME.json`` into OUTDIR (default: this
folder). The JSON holds the numbers the figure shows, computed here by minicond (im2col's
columns, F.pad's four modes, the input gradient rebuilt by hand and autograd's, ...), so
``tests/test_figures.py`` can recompute them and fail when a figure has gone stale against
the code. Output is byte-stable: fixed SVG hash salt, no date, text kept as text.
"""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:          # run from anywhere: use this checkout's minicond
    sys.path.insert(0, str(ROOT))

import minicond as mc  # noqa: E402
import minicond.functional as F  # noqa: E402

BACKEND = "numpy"     # the readable reference: the numbers do not depend on a compiler


def _r(a: Any) -> Any:
    """Numbers for JSON: arrays as nested lists, rounded so that the last bits of a
    different summation order do not count as a change."""
    return np.round(np.asarray(a, dtype=np.float64), 6).tolist()


def _t(a: np.ndarray, requires_grad: bool = False) -> mc.Tensor:
    return mc.tensor(a, dtype="float64", backend=BACKEND, requires_grad=requires_grad)


# --- the numbers ------------------------------------------------------------------------------

def compute_condconv_dataflow() -> dict[str, Any]:
    """One CondConv2d on two 6×6 examples: every intermediate's shape, and the routing."""
    mc.manual_seed(0)
    layer = mc.nn.CondConv2d(3, 4, 3, padding=1, num_experts=3, dtype="float64",
                             backend=BACKEND).eval()
    x = _t(np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    x_bar = F.global_avg_pool2d(x)
    z = layer.routing.logits(x)
    r = layer.routing(x)
    K = F.mix_experts(r, layer.weight)
    y = layer(x)
    y0 = F.conv2d(_t(x.numpy()[:1]), _t(K.numpy()[0]), layer.bias, padding=1)
    assert np.allclose(y.numpy()[:1], y0.numpy())      # the layer is conv with K_b
    shape = {"x": x.shape, "x_bar": x_bar.shape, "z": z.shape, "r": r.shape,
             "experts": layer.weight.shape, "K": K.shape, "y": y.shape}
    return {"shapes": {k: list(v) for k, v in shape.items()}, "r": _r(r.numpy())}


def compute_im2col() -> dict[str, Any]:
    """A 4×4 image unrolled into the 9×4 column matrix of a 3×3 kernel (stride 1)."""
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    cols = mc.get_backend("numpy").im2col(x, (3, 3), (1, 1), (0, 0), (1, 1))
    return {"x": _r(x[0, 0]), "kernel": [3, 3], "stride": [1, 1], "padding": [0, 0],
            "cols": _r(cols[0])}


def compute_input_gradient() -> dict[str, Any]:
    """gx of a stride-2 convolution, rebuilt as the zero-upsampled gy convolved with the
    flipped kernel, next to autograd's."""
    s, k, H = 2, 3, 5
    rng = np.random.default_rng(1)
    x = _t(np.zeros((1, 1, H, H)), requires_grad=True)
    K = np.round(rng.uniform(-1, 1, (1, 1, k, k)), 1)
    y = F.conv2d(x, _t(K), stride=s)
    gy = np.round(rng.uniform(-1, 1, y.shape), 1)
    (y * _t(gy)).sum().backward()
    Ho = y.shape[-1]
    gy_up = np.zeros((1, 1, (Ho - 1) * s + 1, (Ho - 1) * s + 1))
    gy_up[:, :, ::s, ::s] = gy                              # s − 1 zeros between entries
    K_flipped = K[:, :, ::-1, ::-1].copy()                  # rotated by 180°
    gx = F.conv2d(_t(gy_up), _t(K_flipped), padding=k - 1).numpy()
    assert np.allclose(gx, x.grad.numpy())
    return {"stride": s, "K": _r(K[0, 0]), "gy": _r(gy[0, 0]), "gy_upsampled": _r(gy_up[0, 0]),
            "K_flipped": _r(K_flipped[0, 0]), "gx": _r(gx[0, 0]),
            "gx_autograd": _r(x.grad.numpy()[0, 0])}


PAD_MODES = ("zeros", "reflect", "replicate", "circular")


def compute_padding_modes() -> dict[str, Any]:
    """F.pad of a 3×3 image by 2 on every side, in each mode."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    out = {"x": _r(x[0, 0]), "pad_left_right_top_bottom": [2, 2, 2, 2]}
    for mode in PAD_MODES:
        out[mode] = _r(F.pad(_t(x), (2, 2, 2, 2), mode).numpy()[0, 0])
    return out


def _cuda_tile_constants() -> dict[str, int]:
    """The GPU (not simulator) tile sizes, read from numba_cuda.py's source so the figure
    follows the code without importing CUDA."""
    source = (ROOT / "minicond" / "backends" / "numba_cuda.py").read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.If):
            continue
        for stmt in node.orelse:
            if (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Tuple)
                    and [t.id for t in stmt.targets[0].elts][:1] == ["TILE_M"]):
                names = [t.id for t in stmt.targets[0].elts]
                return dict(zip(names, ast.literal_eval(stmt.value), strict=True))
    raise RuntimeError("make_figures: TILE_M ... not found in numba_cuda.py")


def compute_cuda_gemm_tiling() -> dict[str, Any]:
    """Which outputs of a 64×64 tile each of the 16×16 threads owns: (ty + 16i, tx + 16j)."""
    c = _cuda_tile_constants()
    threads_m, threads_n = c["TILE_M"] // c["REG_M"], c["TILE_N"] // c["REG_N"]
    owner = np.zeros((c["TILE_M"], c["TILE_N"]), dtype=np.int64)
    for ty in range(threads_m):
        for tx in range(threads_n):
            for i in range(c["REG_M"]):
                for j in range(c["REG_N"]):
                    owner[ty + threads_m * i, tx + threads_n * j] = ty * threads_n + tx
    return {**c, "threads": [threads_m, threads_n],
            "thread_0_0_outputs": [[int(a), int(b)] for a, b in np.argwhere(owner == 0)],
            "owner_first_rows": owner[:2, :threads_n + 2].tolist()}


# (B, C, H·W side) of a 3×3, padding-1 convolution with C in and out channels, float32
CPU_SHAPES = [(8, 8, 16), (64, 16, 16), (32, 32, 32), (256, 128, 16)]


def compute_cpu_chunks() -> dict[str, Any]:
    """How the numba backend's conv2d_forward cuts the batch into chunks: its own
    ``_chunk_size`` with the forward's per-example cost (multiply-adds plus the im2col copy)
    and column-buffer size."""
    from minicond.backends import numba_cpu
    rows_of = []
    for B, C, side in CPU_SHAPES:
        rows, L = C * 9, side * side
        item_cost, item_bytes = (C + 1) * rows * L, rows * L * 4
        size = numba_cpu._chunk_size(B, item_cost, item_bytes)
        rows_of.append({"B": B, "C": C, "HW": side, "operations": B * item_cost,
                        "inline": B * item_cost < numba_cpu.INLINE_COST,
                        "chunks": [[s, min(B, s + size)] for s in range(0, B, size)]})
    return {"INLINE_COST": numba_cpu.INLINE_COST, "MIN_CHUNKS": numba_cpu.MIN_CHUNKS,
            "COLUMN_BUFFER_BYTES": numba_cpu.COLUMN_BUFFER_BYTES, "shapes": rows_of}


# Depthwise rows of the benchmark grid: (B, C, HW).
DEPTHWISE_SHAPES = [(16, 96, 28), (16, 144, 14), (1, 144, 28)]


def compute_cpu_depthwise() -> dict[str, Any]:
    """The numba backend's depthwise 3×3 forward: how the B·C image planes are cut into
    chunks (its own ``_chunk_size`` with the kernel's per-plane cost, kh·kw·Ho·Wo), and, on
    one 5×5 plane with padding 1, which flat offsets of the zero-bordered 7×7 copy the nine
    row walks of output row oh = 2 start from (``_window``: (oh + i)·Wp + j)."""
    from minicond.backends import numba_cpu
    planes = []
    for B, C, side in DEPTHWISE_SHAPES:
        n, item_cost = B * C, 9 * side * side
        size = numba_cpu._chunk_size(n, item_cost, 0)
        planes.append({"B": B, "C": C, "HW": side, "planes": n, "operations": n * item_cost,
                       "inline": n * item_cost < numba_cpu.INLINE_COST,
                       "chunks": [[s, min(n, s + size)] for s in range(0, n, size)]})
    H = W = 5
    Wp, oh = W + 2, 2
    starts = [[(oh + i) * Wp + j for j in range(3)] for i in range(3)]
    return {"INLINE_COST": numba_cpu.INLINE_COST, "shapes": planes,
            "plane": {"H": H, "W": W, "padding": 1, "Wp": Wp, "oh": oh,
                      "row_starts": starts}}


# The engine's layers, top to bottom; each calls only the layer below it.
LAYERS = [
    ("command line", ["cli.py", "train.py", "explain.py", "plots.py", "checkpoint.py",
                      "profile.py"]),
    ("models, data, optimizers and tools", ["models", "data.py", "preprocess.py", "optim.py",
                                            "interop.py", "serialization.py", "deploy.py",
                                            "testing", "viz.py"]),
    ("nn: modules and parameters", ["nn"]),
    ("functional: one Function per op", ["functional"]),
    ("autograd and tensors", ["autograd.py", "tensor.py"]),
    ("backends: the kernel table", ["backends/table.py"]),
    ("kernels", ["backends/numpy_ref.py", "backends/numba_cpu.py", "backends/numba_cuda.py"]),
]


def compute_layer_stack() -> dict[str, Any]:
    for _, modules in LAYERS:
        for name in modules:
            path = ROOT / "minicond" / name
            if not (path.exists() or path.with_suffix(".py").exists()):
                raise RuntimeError(f"make_figures: minicond/{name} does not exist")
    return {"layers": [{"layer": layer, "modules": modules} for layer, modules in LAYERS]}


BLOCK_STAGES = ["conv_pw", "bn1", "act", "conv_dw", "bn2", "act", "se", "conv_pwl", "bn3"]


def compute_condconv_block() -> dict[str, Any]:
    """Shapes through an inverted-residual block with expand ratio 6 and three CondConv
    layers sharing one routing r computed from the block input."""
    mc.manual_seed(0)
    B, C, H, E, mid = 2, 8, 8, 4, 48
    x = _t(np.random.default_rng(0).standard_normal((B, C, H, H)))
    router = mc.nn.Router(C, E, dtype="float64", backend=BACKEND).eval()
    r = router(x)
    conv_pw = mc.nn.CondConv2d(C, mid, 1, num_experts=E, bias=False, dtype="float64",
                               backend=BACKEND)
    conv_dw = mc.nn.CondConv2d(mid, mid, 3, padding=1, groups=mid, num_experts=E, bias=False,
                               dtype="float64", backend=BACKEND)
    conv_pwl = mc.nn.CondConv2d(mid, C, 1, num_experts=E, bias=False, dtype="float64",
                                backend=BACKEND)
    h = conv_pw(x, routing_weights=r)
    shapes = {"x": x.shape, "r": r.shape, "conv_pw": h.shape}
    h = conv_dw(h, routing_weights=r)
    shapes["conv_dw"] = h.shape
    shapes["conv_pwl"] = conv_pwl(h, routing_weights=r).shape
    experts = {n: m.weight.shape for n, m in
               (("conv_pw", conv_pw), ("conv_dw", conv_dw), ("conv_pwl", conv_pwl))}
    return {"stages": BLOCK_STAGES, "shapes": {k: list(v) for k, v in shapes.items()},
            "experts": {k: list(v) for k, v in experts.items()}}


# --- the drawings -----------------------------------------------------------------------------

def _grid(ax: Any, a: np.ndarray, title: str, cmap: str = "Blues", fmt: str = "{:g}",
          vlim: float | None = None) -> None:
    """A matrix as coloured cells with its numbers written in them."""
    a = np.asarray(a, dtype=float)
    lim = vlim if vlim is not None else max(float(np.abs(a).max()), 1e-9)
    ax.imshow(a, cmap=cmap, vmin=-lim if cmap == "RdBu" else 0, vmax=lim)
    for (row, col), v in np.ndenumerate(a):
        ax.text(col, row, fmt.format(v), ha="center", va="center", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _box(ax: Any, xy: tuple[float, float], text: str, color: str = "#dde8f5",
         w: float = 1.9, h: float = 0.7) -> None:
    from matplotlib.patches import FancyBboxPatch
    ax.add_patch(FancyBboxPatch((xy[0] - w / 2, xy[1] - h / 2), w, h,
                                boxstyle="round,pad=0.05", fc=color, ec="#445"))
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=8)


def _arrow(ax: Any, a: tuple[float, float], b: tuple[float, float], color: str = "#334",
           text: str = "") -> None:
    ax.annotate("", xy=b, xytext=a, arrowprops={"arrowstyle": "->", "color": color, "lw": 1.3})
    if text:
        ax.text((a[0] + b[0]) / 2 + 0.05, (a[1] + b[1]) / 2 + 0.12, text, fontsize=7,
                color=color)


def _canvas(plt: Any, w: float, h: float, xlim: tuple[float, float],
            ylim: tuple[float, float]) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(w, h))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return fig, ax


def draw_condconv_dataflow(plt: Any, d: dict[str, Any]) -> Any:
    s = d["shapes"]
    fig, ax = _canvas(plt, 9, 3.6, (0, 12), (0, 4.2))
    route = "#c0392b"
    _box(ax, (1, 2), f"x\n{s['x']}", "#f9e0b0")
    _box(ax, (3.2, 3.4), f"pool → x̄\n{s['x_bar']}")
    _box(ax, (5.6, 3.4), f"dropout, R·x̄ + ρ → z\n{s['z']}", w=2.4)
    _box(ax, (8.2, 3.4), f"sigmoid or softmax(z/τ)\n→ r {s['r']}", w=2.5)
    _box(ax, (8.2, 1.9), f"experts Θ\n{s['experts']}", "#e3f1df", w=2.3)
    _box(ax, (10.6, 2.6), f"K_b = Σ_e r_be Θ_e\n{s['K']}", "#e3f1df", w=2.3)
    _box(ax, (6.2, 0.6), "conv(x_b, K_b) + bias", "#f5dde8", w=2.4)
    _box(ax, (10.6, 0.6), f"y\n{s['y']}", "#f9e0b0")
    _arrow(ax, (1.6, 2.3), (2.3, 3.2), route, "routing")
    _arrow(ax, (4.2, 3.4), (4.4, 3.4))
    _arrow(ax, (6.8, 3.4), (6.95, 3.4))
    _arrow(ax, (9.45, 3.3), (10.2, 2.95))
    _arrow(ax, (9.35, 2.0), (9.6, 2.4))
    _arrow(ax, (10.2, 2.25), (7.3, 0.95))
    _arrow(ax, (1.6, 1.7), (4.95, 0.7), route, "convolution")
    _arrow(ax, (7.4, 0.6), (9.65, 0.6))
    r0 = ", ".join(f"{v:.2f}" for v in d["r"][0])
    ax.text(0.1, 0.05, f"x is used twice, by the router and by the convolution, so gx gets "
            f"both paths' gradients.   r of example 0: [{r0}]", fontsize=7.5, color=route)
    return fig


def draw_im2col(plt: Any, d: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle
    x, cols = np.array(d["x"]), np.array(d["cols"])
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(8, 3.6),
                                 gridspec_kw={"width_ratios": [1, 1.2]})
    _grid(a0, x, "x (4×4); the 3×3 windows", cmap="Greys", vlim=40)
    _grid(a1, cols, "cols: one column per window (9×4)", cmap="Greys", vlim=40)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for n, c in enumerate(colours):
        oh, ow = divmod(n, 2)
        a0.add_patch(Rectangle((ow - 0.5 + 0.04 * n, oh - 0.5 + 0.04 * n), 3, 3, fill=False,
                               ec=c, lw=2))
        a1.add_patch(Rectangle((n - 0.5, -0.5), 1, 9, fill=False, ec=c, lw=2))
    a1.set_xlabel("column (oh, ow)", fontsize=8)
    a1.set_ylabel("row (c, i, j)", fontsize=8)
    fig.suptitle("im2col: y_b = K · cols_b turns the convolution into one matrix product",
                 fontsize=9)
    return fig


def draw_input_gradient(plt: Any, d: dict[str, Any]) -> Any:
    fig, axes = plt.subplots(1, 5, figsize=(10, 2.6),
                             gridspec_kw={"width_ratios": [2, 3, 3, 3, 5]})
    _grid(axes[0], d["gy"], "gy (2×2)", "RdBu", vlim=1)
    _grid(axes[1], d["gy_upsampled"], f"zeros inserted\n(stride {d['stride']})", "RdBu", vlim=1)
    _grid(axes[2], d["K"], "K", "RdBu", vlim=1)
    _grid(axes[3], d["K_flipped"], "K rotated 180°", "RdBu", vlim=1)
    _grid(axes[4], d["gx"], "gx = conv(upsampled gy,\nflipped K, padding 2)", "RdBu",
          fmt="{:.2f}", vlim=1)
    fig.suptitle("Input gradient of a stride-2 convolution, computed by hand; "
                 "it equals autograd's x.grad", fontsize=9, y=1.12)
    return fig


def draw_padding_modes(plt: Any, d: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
    for ax, mode in zip(axes, PAD_MODES, strict=True):
        _grid(ax, d[mode], f'F.pad(x, (2, 2, 2, 2), "{mode}")', cmap="Greys", vlim=18)
        ax.add_patch(Rectangle((1.5, 1.5), 3, 3, fill=False, ec="#c0392b", lw=2))
    fig.suptitle("The four padding modes of a 3×3 image (red: the original). F.pad takes "
                 "(left, right, top, bottom); the kernels take (top, bottom, left, right)",
                 fontsize=8.5)
    return fig


def draw_cuda_gemm_tiling(plt: Any, d: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle
    tm, tn, tk = d["TILE_M"], d["TILE_N"], d["TILE_K"]
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax in (a0, a1):
        ax.set_aspect("equal")
        ax.axis("off")
    # left: C = A·B with the block's row panel of A, column panel of B and a k step
    a0.set_xlim(-4.6, 4.4)
    a0.set_ylim(-4.4, 4.6)
    a0.add_patch(Rectangle((0, -4), 4, 4, fc="#f2f2f2", ec="#555"))
    a0.add_patch(Rectangle((1, -2), 1, 1, fc="#f5b041", ec="#555"))
    a0.add_patch(Rectangle((-4, -4), 3.5, 4, fc="#f2f2f2", ec="#555"))
    a0.add_patch(Rectangle((-4, -2), 3.5, 1, fc="#d6eaf8", ec="#555"))
    a0.add_patch(Rectangle((-2.6, -2), 0.25, 1, fc="#2e86c1", ec="#555"))
    a0.add_patch(Rectangle((0, 0.5), 4, 3.5, fc="#f2f2f2", ec="#555"))
    a0.add_patch(Rectangle((1, 0.5), 1, 3.5, fc="#d5f5e3", ec="#555"))
    a0.add_patch(Rectangle((1, 2.35), 1, 0.25, fc="#28b463", ec="#555"))
    a0.text(2, -4.3, f"output: one block per {tm}×{tn} tile", ha="center", fontsize=8)
    a0.text(-2.25, -4.3, "A: the tile's rows", ha="center", fontsize=8)
    a0.text(2.2, 4.2, "B: the tile's columns", ha="center", fontsize=8)
    a0.text(-2.25, 1.6, f"k walks {tk}-deep slices\ninto shared memory As[{tk}][{tm}+1],\n"
            f"Bs[{tk}][{tn}+1]", ha="center", fontsize=8)
    # right: one tile, the outputs of thread (0, 0) and (1, 0)
    threads_m, threads_n = d["threads"]
    a1.set_xlim(-1, tn + 1)
    a1.set_ylim(tm + 1, -4)
    a1.add_patch(Rectangle((0, 0), tn, tm, fc="#fdf2e9", ec="#555"))
    for k in range(0, tm + 1, threads_m):
        a1.plot([0, tn], [k, k], color="#bbb", lw=0.6)
        a1.plot([k, k], [0, tm], color="#bbb", lw=0.6)
    for (row, col) in d["thread_0_0_outputs"]:
        a1.add_patch(Rectangle((col, row), 1, 1, fc="#c0392b"))
        a1.add_patch(Rectangle((col + 1, row), 1, 1, fc="#2471a3"))
    a1.set_title(f"one {tm}×{tn} tile: {threads_m}×{threads_n} threads, each owns "
                 f"{d['REG_M']}×{d['REG_N']} outputs\n(ty + {threads_m}i, tx + {threads_n}j):"
                 " thread (0, 0) red, thread (0, 1) blue", fontsize=8)
    fig.suptitle("CUDA GEMM tiling (minicond/backends/numba_cuda.py)", fontsize=9, y=1.04)
    return fig


def draw_cpu_chunks(plt: Any, d: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle
    shapes = d["shapes"]
    fig, ax = _canvas(plt, 9, 0.75 * len(shapes) + 0.9, (-3.9, 10.3), (-0.6, len(shapes)))
    colours = ["#aed6f1", "#5dade2"]
    for n, item in enumerate(shapes):
        y, B = len(shapes) - 1 - n, item["B"]
        for k, (s, e) in enumerate(item["chunks"]):
            ax.add_patch(Rectangle((10 * s / B, y), 10 * (e - s) / B, 0.6,
                                   fc="#f5cba7" if item["inline"] else colours[k % 2], ec="#444"))
            if not item["inline"] and len(item["chunks"]) <= 16:
                ax.text(10 * (s + e) / (2 * B), y + 0.3, f"{s}–{e - 1}", ha="center",
                        va="center", fontsize=6)
        per = item["chunks"][0][1] - item["chunks"][0][0]
        how = ("inline, on the calling thread" if item["inline"] else
               f"{len(item['chunks'])} chunks of {per} on the thread pool")
        ax.text(-3.8, y + 0.3, f"B={B}, C={item['C']}, {item['HW']}×{item['HW']}\n{how}",
                va="center", fontsize=7)
    ax.set_title("numba backend, conv2d_forward (3×3, float32): the batch cut into chunks of "
                 "examples; each chunk is im2col into a\nreused buffer, then one matmul. "
                 "Chunks depend on the shapes only, never on the thread count.", fontsize=8)
    return fig


def draw_cpu_depthwise(plt: Any, d: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle
    shapes, pl = d["shapes"], d["plane"]
    fig, ax = _canvas(plt, 9, 4.6, (-3.9, 10.3), (-5.2, len(shapes) + 0.2))
    colours = ["#aed6f1", "#5dade2"]
    for n, item in enumerate(shapes):
        y, N = len(shapes) - 1 - n, item["planes"]
        for k, (s, e) in enumerate(item["chunks"]):
            ax.add_patch(Rectangle((10 * s / N, y), 10 * (e - s) / N, 0.6,
                                   fc="#f5cba7" if item["inline"] else colours[k % 2], ec="#444"))
        per = item["chunks"][0][1] - item["chunks"][0][0]
        how = ("inline, on the calling thread" if item["inline"] else
               f"{len(item['chunks'])} chunks of {per} planes on the pool")
        ax.text(-3.8, y + 0.3, f"B={item['B']}, C={item['C']}, {item['HW']}×{item['HW']}: "
                f"{N} planes\n{how}", va="center", fontsize=7)
    # one zero-bordered plane, flat, one cell per value; the nine row walks of output row oh
    Wp, Hp = pl["Wp"], pl["H"] + 2 * pl["padding"]
    cell, x0, y0 = 0.32, -3.6, -1.2
    tap_colours = ["#e74c3c", "#27ae60", "#8e44ad"]
    for r in range(Hp):
        for c in range(Wp):
            border = r in (0, Hp - 1) or c in (0, Wp - 1)
            ax.add_patch(Rectangle((x0 + c * cell, y0 - r * cell), cell, cell,
                                   fc="#eeeeee" if border else "#d6eaf8", ec="#999", lw=0.5))
    for i, row in enumerate(pl["row_starts"]):
        for j, start in enumerate(row):
            r, c = divmod(start, Wp)
            ax.add_patch(Rectangle((x0 + c * cell + 0.02 * j, y0 - r * cell + 0.02 * j),
                                   pl["W"] * cell, cell, fill=False, ec=tap_colours[i],
                                   lw=1.2))
    ax.text(x0 + Wp * cell + 0.4, y0 - 1.2,
            f"one plane, zero-bordered ({Hp}×{Wp}, grey the zeros), read in place:\n"
            f"output row oh = {pl['oh']} is the sum over the taps (i, j) of w[i, j] times the "
            f"row\nstarting at (oh + i)·Wp + j (boxes, one colour per i), {pl['W']} contiguous "
            "values:\na vectorised multiply-add per tap, no bounds tests. The weight "
            "gradient walks the\nsame rows: per tap, a row of per-column sums over oh, "
            "then their sum.", va="center", fontsize=7)
    ax.set_title("numba backend, depthwise conv2d (3×3): the B·C planes (each with its own "
                 "kernel) cut into chunks, so one\nexample fills every thread; chunks "
                 "depend on the shapes only, never on the thread count.", fontsize=8)
    return fig


def draw_layer_stack(plt: Any, d: dict[str, Any]) -> Any:
    layers = d["layers"]
    fig, ax = _canvas(plt, 8, 5.6, (0, 10), (0, len(layers) * 1.0 + 0.3))
    for n, item in enumerate(layers):
        y = len(layers) - n - 0.3
        names = textwrap.fill(", ".join(item["modules"]), 80)
        _box(ax, (5, y), f"{item['layer']}\n{names}",
             ["#fdebd0", "#fcf3cf", "#e8f8f5", "#d6eaf8", "#ebdef0", "#f2f3f4", "#e5e8e8"][n],
             w=9.2, h=0.72)
        if n:
            _arrow(ax, (9.75, y + 0.95), (9.75, y + 0.38))
    ax.set_title("minicond's layers: each calls only the one below", fontsize=9)
    return fig


def draw_condconv_block(plt: Any, d: dict[str, Any]) -> Any:
    s, e = d["shapes"], d["experts"]
    fig, ax = _canvas(plt, 11, 4.2, (0, 16), (0, 4.4))
    route = "#c0392b"
    _box(ax, (0.9, 2), f"x\n{s['x']}", "#f9e0b0", w=1.6)
    _box(ax, (3.3, 3.4), f"routing_fn: pool, linear, sigmoid\n→ r {s['r']}", "#fadbd8", w=4.2)
    row = [("conv_pw\nCondConv 1×1", 3.0), ("bn1, SiLU", 5.0), ("conv_dw\nCondConv 3×3", 7.0),
           ("bn2, SiLU", 9.0), ("SE", 10.8), ("conv_pwl\nCondConv 1×1", 12.6), ("bn3", 14.6)]
    for text, xpos in row:
        cond = "CondConv" in text
        _box(ax, (xpos, 1.5), text, "#e3f1df" if cond else "#dde8f5", w=1.6 if cond else 1.2)
        if cond:
            _arrow(ax, (5.4, 3.2), (xpos, 1.9), route)
    for (_, a), (_, b) in zip(row, row[1:], strict=False):
        _arrow(ax, (a + 0.8, 1.5), (b - 0.8, 1.5))
    _arrow(ax, (1.7, 2.0), (2.2, 1.6))
    _arrow(ax, (1.4, 2.4), (1.9, 3.2), route)
    ax.plot([0.9, 0.9, 14.6, 14.6], [1.6, 0.3, 0.3, 1.1], color="#777", lw=1, ls="--")
    ax.text(8, 0.4, "+ x (when stride 1 and Cin = Cout)", ha="center", fontsize=7.5)
    ax.text(6.0, 3.6, "One router per block, from the block input;\nits r is shared by the "
            "three CondConv layers.\nexperts Θ: " + ", ".join(f"{k} {v}" for k, v in e.items()),
            fontsize=7.5, color=route, va="center")
    return fig


FIGURES: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[Any, dict[str, Any]], Any]]] = {
    "condconv_dataflow": (compute_condconv_dataflow, draw_condconv_dataflow),
    "im2col": (compute_im2col, draw_im2col),
    "input_gradient": (compute_input_gradient, draw_input_gradient),
    "padding_modes": (compute_padding_modes, draw_padding_modes),
    "cuda_gemm_tiling": (compute_cuda_gemm_tiling, draw_cuda_gemm_tiling),
    "cpu_chunks": (compute_cpu_chunks, draw_cpu_chunks),
    "cpu_depthwise": (compute_cpu_depthwise, draw_cpu_depthwise),
    "layer_stack": (compute_layer_stack, draw_layer_stack),
    "condconv_block": (compute_condconv_block, draw_condconv_block),
}


def json_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    json_only = "--json-only" in args
    rest = [a for a in args if a != "--json-only"]
    outdir = Path(rest[0]) if rest else HERE
    outdir.mkdir(parents=True, exist_ok=True)
    plt = None
    if not json_only:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.rcParams.update({"svg.hashsalt": "minicond", "svg.fonttype": "none",
                             "font.family": "DejaVu Sans"})
    for name, (compute, draw) in FIGURES.items():
        data = compute()
        (outdir / f"{name}.json").write_text(json_text(data), encoding="utf-8")
        if plt is not None:
            fig = draw(plt, data)
            fig.savefig(outdir / f"{name}.svg", metadata={"Date": None}, bbox_inches="tight")
            plt.close(fig)
        print(f"{name}: {outdir / name}.{'json' if json_only else 'svg/json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
