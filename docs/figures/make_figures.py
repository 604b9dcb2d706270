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


# (B, C, H·W side) of a 3×3, padding-1 convolution with C in and out channels, float32; the
# batch-1 rows are the benchmark grid's batch-1 inference shapes
CPU_SHAPES = [(8, 8, 16), (64, 16, 16), (32, 32, 32), (256, 128, 16), (1, 64, 56), (1, 128, 28)]


def compute_cpu_chunks() -> dict[str, Any]:
    """How the numba backend's conv2d_forward splits its work: chunks of examples from its own
    ``_chunk_size`` with the forward's per-example cost (multiply-adds plus the im2col copy)
    and column-buffer size, or, for fewer than MIN_CHUNKS examples above INLINE_COST, bands
    of output rows from its own ``_bands``, the (example, band) items chunked as
    ``_banded_forward`` chunks them."""
    from minicond.backends import numba_cpu
    rows_of = []
    for B, C, side in CPU_SHAPES:
        rows, L = C * 9, side * side
        item_cost, item_bytes = (C + 1) * rows * L, rows * L * 4
        item = {"B": B, "C": C, "HW": side, "operations": B * item_cost,
                "inline": B * item_cost < numba_cpu.INLINE_COST}
        if B < numba_cpu.MIN_CHUNKS and not item["inline"]:        # _banded_forward
            per_band, bands = numba_cpu._bands(B, side)
            n = B * bands
            size = numba_cpu._chunk_size(n, (C + 1) * rows * per_band * side, 0)
            item["bands"] = [[k * per_band, min(side, (k + 1) * per_band)]
                             for k in range(bands)]
        else:
            n = B
            size = numba_cpu._chunk_size(B, item_cost, item_bytes)
        item["chunks"] = [[s, min(n, s + size)] for s in range(0, n, size)]
        rows_of.append(item)
    return {"INLINE_COST": numba_cpu.INLINE_COST, "MIN_CHUNKS": numba_cpu.MIN_CHUNKS,
            "COLUMN_BUFFER_BYTES": numba_cpu.COLUMN_BUFFER_BYTES, "shapes": rows_of}


def _flat_rows(side: int, stride: int) -> bool:
    """Whether the numba backend's depthwise kernels take flat rows for a 3×3, padding-1
    convolution of side×side planes (``_depthwise``: unit stride, Wo > FLAT_MIN_WIDTH)."""
    from minicond.backends import numba_cpu
    Wo = (side + 2 - 3) // stride + 1
    return stride == 1 and Wo > numba_cpu.FLAT_MIN_WIDTH


# the flat-row plane drawn: H×W with padding 1 and a 3×3 kernel, and the output pixel whose
# taps are shown; W is the smallest width that takes flat rows (Wo > FLAT_MIN_WIDTH)
FLAT_PLANE = {"H": 3, "padding": 1, "pixel": [1, 4]}


def compute_cpu_depthwise_flat() -> dict[str, Any]:
    """The flat-row depthwise forward on one small plane: the flat output positions
    k = oh·Wp + ow for k < (Ho − 1)·Wp + Wo, which are kept (ow < Wo) and which dropped, and
    the positions k + i·Wp + j of the bordered plane that one output pixel's nine taps read.
    The flat sums are checked against minicond's depthwise convolution on the same plane."""
    from minicond.backends import numba_cpu
    H, p = FLAT_PLANE["H"], FLAT_PLANE["padding"]
    W = numba_cpu.FLAT_MIN_WIDTH + 1
    assert _flat_rows(W, 1)
    Hp, Wp = H + 2 * p, W + 2 * p
    Ho, Wo = Hp - 2, Wp - 2
    n = (Ho - 1) * Wp + Wo
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(1, 1, H, W)).astype(np.float64)
    w = rng.integers(-2, 3, size=(1, 1, 3, 3)).astype(np.float64)
    padded = np.pad(x[0, 0], p).reshape(-1)
    padded = np.concatenate([padded, np.zeros(2)])          # the slack after the plane
    flat = [float(sum(w[0, 0, i, j] * padded[k + i * Wp + j] for i in range(3)
                      for j in range(3))) for k in range(n)]
    y = F.conv2d(_t(x), _t(w), padding=p, groups=1).numpy()[0, 0]
    kept = [k for k in range(n) if k % Wp < Wo]
    assert np.array_equal(np.array([flat[k] for k in kept]), y.reshape(-1)), \
        "the flat-row sums no longer match conv2d"
    oh, ow = FLAT_PLANE["pixel"]
    k0 = oh * Wp + ow
    return {"FLAT_MIN_WIDTH": numba_cpu.FLAT_MIN_WIDTH, "H": H, "W": W, "padding": p,
            "Hp": Hp, "Wp": Wp, "Ho": Ho, "Wo": Wo, "n": n,
            "kept": [k % Wp < Wo for k in range(n)], "flat_output": _r(flat),
            "x": _r(x[0, 0]), "w": _r(w[0, 0]), "pixel": [oh, ow], "k": k0,
            "taps": [[k0 + i * Wp + j for j in range(3)] for i in range(3)]}


# Depthwise rows of the benchmark grid: (B, C, HW, stride); the stride-2 rows (an
# EfficientNet downsampling block's shapes) show the plane-block chunking
DEPTHWISE_SHAPES = [(16, 96, 28, 1), (16, 144, 14, 1), (1, 144, 28, 1), (16, 96, 28, 2),
                    (1, 144, 28, 2)]
# the plane block drawn: planes of this side (padding 1, 3×3, stride 2), the output pixel
# whose taps are shown, and how many of the block's lanes hold planes
BLOCK_PLANE = {"side": 4, "stride": 2, "pixel": [1, 1], "planes": 12}


def compute_cpu_depthwise_blocks() -> dict[str, Any]:
    """The plane-block depthwise kernels: which pixel row of a [Hp·Wp, PLANE_BLOCK] block each
    of one output pixel's nine taps reads (a PLANE_BLOCK-lane vector, one lane per plane), and
    how the numba backend cuts the B·C planes of the benchmark's depthwise shapes into chunks
    (its own ``_parallel_chunk`` with the per-plane cost kh·kw·Ho·Wo, whole blocks for the
    plane-block shapes): functions of the shapes alone."""
    from minicond.backends import numba_cpu
    planes = []
    for B, C, side, stride in DEPTHWISE_SHAPES:
        Ho = (side + 2 - 3) // stride + 1
        flat = _flat_rows(side, stride)
        n = B * C
        per = numba_cpu._parallel_chunk(n, 9 * Ho * Ho, 1 if flat else numba_cpu.PLANE_BLOCK)
        planes.append({"B": B, "C": C, "HW": side, "stride": stride, "planes": n,
                       "structure": "flat rows" if flat else "plane blocks",
                       "operations": 9 * Ho * Ho * n,
                       "inline": per >= n,
                       "chunks": [[s, min(n, s + per)] for s in range(0, n, per)]})
    side, s = BLOCK_PLANE["side"], BLOCK_PLANE["stride"]
    assert not _flat_rows(side, s)
    Wp = side + 2
    Ho = (side + 2 - 3) // s + 1
    oh, ow = BLOCK_PLANE["pixel"]
    a = oh * s * Wp + ow * s
    return {"PLANE_BLOCK": numba_cpu.PLANE_BLOCK, "PARALLEL_COST": numba_cpu.PARALLEL_COST,
            "MIN_CHUNKS": numba_cpu.MIN_CHUNKS, "shapes": planes,
            "block": {"side": side, "padding": 1, "stride": s, "Wp": Wp, "Ho": Ho,
                      "pixel": [oh, ow], "planes": BLOCK_PLANE["planes"],
                      "taps": [[a + i * Wp + j for j in range(3)] for i in range(3)]}}


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
    fig, ax = _canvas(plt, 9, 0.75 * len(shapes) + 1.1, (-3.9, 10.3), (-0.6, len(shapes)))
    colours = ["#aed6f1", "#5dade2"]
    band_colours = ["#abebc6", "#58d68d"]
    for n, item in enumerate(shapes):
        y, B = len(shapes) - 1 - n, item["B"]
        chunks = item["chunks"]
        if "bands" in item:
            Ho = item["HW"]
            for k, (s, e) in enumerate(item["bands"]):
                ax.add_patch(Rectangle((10 * s / Ho, y), 10 * (e - s) / Ho, 0.6,
                                       fc=band_colours[k % 2], ec="#444"))
                ax.text(10 * (s + e) / (2 * Ho), y + 0.3, f"rows {s}–{e - 1}", ha="center",
                        va="center", fontsize=6)
            per = item["bands"][0][1] - item["bands"][0][0]
            how = (f"{len(item['bands'])} bands of {per} output rows,\n"
                   f"{len(chunks)} chunks on the thread pool")
        else:
            for k, (s, e) in enumerate(chunks):
                ax.add_patch(Rectangle((10 * s / B, y), 10 * (e - s) / B, 0.6,
                                       fc="#f5cba7" if item["inline"] else colours[k % 2],
                                       ec="#444"))
                if not item["inline"] and len(chunks) <= 16:
                    ax.text(10 * (s + e) / (2 * B), y + 0.3, f"{s}–{e - 1}", ha="center",
                            va="center", fontsize=6)
            per = chunks[0][1] - chunks[0][0]
            how = ("inline, on the calling thread" if item["inline"] else
                   f"{len(chunks)} chunks of {per} on the thread pool")
        ax.text(-3.8, y + 0.3, f"B={B}, C={item['C']}, {item['HW']}×{item['HW']}\n{how}",
                va="center", fontsize=7)
    ax.set_title("numba backend, conv2d_forward (3×3, float32). Blue: the batch cut into "
                 "chunks of examples, each im2col into a reused\nbuffer, then one matmul. "
                 f"Green: fewer than MIN_CHUNKS = {d['MIN_CHUNKS']} examples, each example's "
                 "output rows cut into bands, each band\nunfolded and multiplied into its "
                 "rows of y. Chunks and bands depend on the shapes only, never on the "
                 "thread count.", fontsize=8)
    return fig


def draw_cpu_depthwise_flat(plt: Any, d: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle
    Hp, Wp, Wo, n = d["Hp"], d["Wp"], d["Wo"], d["n"]
    taps = {k for row in d["taps"] for k in row}
    fig, ax = _canvas(plt, 9, 5.0, (-0.2, 10.4), (-0.9, 5.6))
    # the bordered plane, one cell per value, numbered by its flat index r·Wp + c
    cell, x0, y0 = 0.5, 0.0, 4.4
    for r in range(Hp):
        for c in range(Wp):
            k = r * Wp + c
            border = r in (0, Hp - 1) or c < d["padding"] or c >= Wp - d["padding"]
            ax.add_patch(Rectangle((x0 + c * cell, y0 - r * cell), cell, cell,
                                   fc="#eeeeee" if border else "#d6eaf8",
                                   ec="#c0392b" if k in taps else "#999",
                                   lw=1.8 if k in taps else 0.5, zorder=3 if k in taps else 1))
            ax.text(x0 + (c + 0.5) * cell, y0 - (r - 0.5) * cell, str(k), ha="center",
                    va="center", fontsize=6, color="#c0392b" if k in taps else "#333",
                    zorder=4)
    oh, ow = d["pixel"]
    ax.text(x0 + Wp * cell + 0.3, y0 - 0.8,
            f"the zero-bordered plane P of a {d['H']}×{d['W']} plane, padding {d['padding']}"
            f" (grey: zeros),\nstored flat, row length Wp = {Wp}; each cell shows its flat "
            "index.\n"
            f"Output pixel (oh, ow) = ({oh}, {ow}) is flat position k = oh·Wp + ow = "
            f"{d['k']};\nits nine taps read P[k + i·Wp + j] (red): "
            + ", ".join(str(v) for row in d["taps"] for v in row) + ".\n"
            f"({d['W']} = FLAT_MIN_WIDTH + 1: the narrowest plane that takes flat rows.)",
            va="center", fontsize=7)
    # the flat output positions
    fc, fy = 0.32, 0.9
    for k in range(n):
        kept = d["kept"][k]
        ax.add_patch(Rectangle((k * fc, fy), fc, 0.42, fc="#aed6f1" if kept else "#f5b7b1",
                               ec="#c0392b" if k == d["k"] else "#777",
                               lw=1.8 if k == d["k"] else 0.5, zorder=3 if k == d["k"] else 1))
        ax.text((k + 0.5) * fc, fy + 0.21, str(k), ha="center", va="center", fontsize=6,
                zorder=4)
    for row in range(d["Ho"]):
        s = row * Wp
        ax.plot([s * fc, (s + Wo) * fc], [fy + 0.55, fy + 0.55], color="#1f618d", lw=1)
        ax.text((s + Wo / 2) * fc, fy + 0.72, f"row oh = {row}: kept", ha="center",
                fontsize=6.5, color="#1f618d")
    ax.text(0, fy - 0.35,
            f"one loop over the flat positions k < (Ho − 1)·Wp + Wo = {n}: out[k] = "
            "Σ_ij w[i, j]·P[k + i·Wp + j], one long vectorised pass.\n"
            f"Red: ow = k − oh·Wp ≥ Wo = {Wo}, between two rows: computed from real "
            "neighbours, then dropped when y[oh, :] = out[oh·Wp : oh·Wp + Wo] is copied "
            "out.",
            va="top", fontsize=7)
    ax.set_title("numba backend, depthwise convolution at unit stride: flat rows (3×3, "
                 "padding 1)", fontsize=8.5)
    return fig


def draw_cpu_depthwise_blocks(plt: Any, d: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle
    bl, shapes, lanes = d["block"], d["shapes"], d["PLANE_BLOCK"]
    Wp = bl["Wp"]
    pixels = Wp * Wp
    taps = {k for row in bl["taps"] for k in row}
    top = len(shapes) * 0.95 + 0.9
    fig, ax = _canvas(plt, 9, 7.6, (-3.9, 10.3), (-0.6, top + lanes * 0.25 + 0.9))
    # the block: pixel rows along x, lanes (planes) along y
    cw, ch, x0 = 10.0 / pixels, 0.25, 0.0
    for k in range(pixels):
        r, c = divmod(k, Wp)
        border = r in (0, Wp - 1) or c in (0, Wp - 1)
        for p in range(lanes):
            used = p < bl["planes"]
            ax.add_patch(Rectangle((x0 + k * cw, top + (lanes - 1 - p) * ch), cw, ch,
                                   fc=("#eeeeee" if border else "#d6eaf8") if used else "#fbfcfc",
                                   ec="#aaa", lw=0.3))
        if k in taps:
            ax.add_patch(Rectangle((x0 + k * cw, top), cw, lanes * ch, fill=False,
                                   ec="#c0392b", lw=1.6, zorder=3))
            ax.text(x0 + (k + 0.5) * cw, top - 0.15, str(k), ha="center", va="top",
                    fontsize=6, color="#c0392b")
    for r in range(Wp):
        ax.plot([x0 + r * Wp * cw] * 2, [top, top + lanes * ch + 0.15], color="#555", lw=0.8)
        ax.text(x0 + (r + 0.5) * Wp * cw, top + lanes * ch + 0.12, f"bordered row {r}",
                ha="center", va="bottom", fontsize=6)
    for p in (0, bl["planes"] - 1, lanes - 1):
        ax.text(x0 - 0.1, top + (lanes - 0.5 - p) * ch, f"lane {p}", ha="right",
                va="center", fontsize=6)
    oh, ow = bl["pixel"]
    ax.text(-3.8, top + lanes * ch - 0.2,
            f"one block [Hp·Wp, {lanes}]:\n{lanes} planes of {bl['side']}×{bl['side']}, "
            f"padding {bl['padding']},\ninterleaved pixel by pixel\n(lane p: plane first + p;"
            f"\nhere {bl['planes']} planes, the taps\nof the other lanes zero).\n"
            f"Output pixel (oh, ow) = ({oh}, {ow})\nat stride {bl['stride']} reads nine "
            f"rows\n(red), each a {lanes}-lane vector.", va="top", fontsize=7)
    ax.text(5.0, top + lanes * ch + 0.55,
            f"out[oh·Wo + ow, :] = Σ_ij wt[(i, j), :] · block[oh·s·Wp + ow·s + i·Wp + j, :]"
            f"   (Wp = {Wp}, s = {bl['stride']}; the innermost loop over the {lanes} lanes)",
            ha="center", fontsize=7)
    # the chunks of planes
    colours = ["#aed6f1", "#5dade2"]
    for n, item in enumerate(shapes):
        y, N = (len(shapes) - 1 - n) * 0.95, item["planes"]
        for k, (s, e) in enumerate(item["chunks"]):
            ax.add_patch(Rectangle((10 * s / N, y), 10 * (e - s) / N, 0.55,
                                   fc="#f5cba7" if item["inline"] else colours[k % 2],
                                   ec="#444"))
            if len(item["chunks"]) <= 16:
                ax.text(10 * (s + e) / (2 * N), y + 0.275, f"{s}–{e - 1}", ha="center",
                        va="center", fontsize=6)
        if item["structure"] == "plane blocks":
            for s in range(lanes, N, lanes):
                ax.plot([10 * s / N] * 2, [y, y + 0.12], color="#222", lw=0.6)
        per = item["chunks"][0][1] - item["chunks"][0][0]
        how = ("one chunk, on the calling thread" if item["inline"] else
               f"{len(item['chunks'])} chunks of {per} planes")
        ax.text(-3.8, y + 0.275, f"B={item['B']}, C={item['C']}, {item['HW']}×{item['HW']}, "
                f"s={item['stride']}: {item['structure']},\n{N} planes; {how}",
                va="center", fontsize=6.5)
    ax.text(5.0, len(shapes) * 0.95 - 0.05,
            f"the B·C planes cut into chunks for Numba's threads (_parallel_chunk: about "
            f"B·C/{d['MIN_CHUNKS']} planes, whole blocks of {lanes}\nfor plane blocks, "
            "ticks at block edges): functions of the shapes alone, never of the thread count",
            ha="center", va="bottom", fontsize=7)
    ax.set_title("numba backend, depthwise convolution: plane blocks (strided and small "
                 "planes), and the chunks of planes", fontsize=8.5)
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
    "cpu_depthwise_flat": (compute_cpu_depthwise_flat, draw_cpu_depthwise_flat),
    "cpu_depthwise_blocks": (compute_cpu_depthwise_blocks, draw_cpu_depthwise_blocks),
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
