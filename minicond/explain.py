"""Step through one CondConv2d forward and backward pass, formula by formula.

Layer: beside the command line, at the top of DESIGN.md's stack. :func:`explain` builds a
tiny float64 ``CondConv2d`` in eval mode, then

1. recomputes its forward pass one step at a time with minicond's functional ops and the
   backend's ``im2col`` kernel (pool, routing logits, sigmoid/softmax, mixed kernel,
   convolution as im2col + GEMM, loss), checking each op's own backward (its Function,
   through autograd) against a central finite difference;
2. derives every gradient by hand with the formulas of ``docs/math/`` (∂L/∂y, the mixed
   kernel's weight gradient, each expert's gradient, the routing weights, the sigmoid or
   softmax, the router's linear layer, the pool, the input), checking each one against a
   finite difference of the loss seen from that step, everything upstream held fixed;
3. checks that the hand gradients equal those autograd gives on the module itself.

The loss is L = Σ g ⊙ y for a fixed random tensor g, so ∂L/∂y = g (a random cotangent, not
``y.sum()``, so that no gradient is accidentally uniform). ``python -m minicond.explain
--help`` lists the options; ``register(subparsers)`` adds the same options as an
``explain`` subcommand to another argparse program.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from . import functional as F
from ._validate import check_choice, check_float, check_int
from .autograd import no_grad
from .backends import get_backend
from .backends.table import conv_output_size
from .functional.conv import conv_geometry
from .nn import CondConv2d
from .random import manual_seed
from .tensor import Tensor, tensor

ROUTINGS = ("sigmoid", "softmax")
FD_EPS = 1e-6
# Central differences in float64 with h = 1e-6 are accurate to about 1e-9 here (the loss is
# at most quadratic in h away from the sigmoid/softmax); 1e-6 leaves a wide margin while a
# wrong formula misses by the size of the gradient itself.
FD_TOLERANCE = 1e-6
PRINT_LIMIT = 64  # arrays with more elements are summarised


# --- configuration -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExplainConfig:
    """The layer and input that :func:`explain` walks through (groups = 1, float64)."""

    batch: int = 2
    in_channels: int = 2
    out_channels: int = 2
    size: tuple[int, int] = (4, 4)
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    num_experts: int = 3
    routing: str = "sigmoid"
    temperature: float = 1.0
    seed: int = 0
    backend: str = "numpy"
    fd_elements: int = 200

    def validate(self) -> ExplainConfig:
        fn = "explain"
        for name in ("batch", "in_channels", "out_channels", "kernel_size", "stride",
                     "dilation", "num_experts", "fd_elements"):
            check_int(fn, name, getattr(self, name), 1)
        check_int(fn, "padding", self.padding, 0)
        check_int(fn, "seed", self.seed, 0)
        if not isinstance(self.size, (tuple, list)) or len(self.size) != 2:
            raise ValueError(f"{fn}: size={self.size!r} must be a pair (H, W)")
        for s in self.size:
            check_int(fn, "size", s, 1)
        check_choice(fn, "routing", self.routing, ROUTINGS)
        check_float(fn, "temperature", self.temperature, 0.0, float("inf"), low_open=True,
                    high_open=True)
        k = self.kernel_size
        conv_geometry(fn, (self.batch, self.in_channels, *self.size),
                      (self.out_channels, self.in_channels, k, k), self.stride, self.padding,
                      self.dilation, 1)
        get_backend(self.backend)
        return self

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(conv_output_size(n, self.kernel_size, self.stride, self.padding,
                                      self.dilation) for n in self.size)


# --- results -------------------------------------------------------------------------------------

@dataclass
class Check:
    """A gradient compared with central finite differences on ``checked`` of ``total``
    elements: passed when max |analytic − numeric| <= FD_TOLERANCE · max(1, max |numeric|)."""

    label: str
    max_abs_error: float
    scale: float
    checked: int
    total: int

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_error <= FD_TOLERANCE * max(1.0, self.scale))

    def describe(self) -> str:
        which = "all" if self.checked == self.total else f"{self.checked} random"
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.label}: finite difference on {which} of {self.total} elements, "
                f"max |error| {self.max_abs_error:.1e}  {verdict}")


@dataclass
class Agreement:
    """Two computations of the same array (e.g. the hand GEMM and the backend's kernel)."""

    label: str
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= 1e-10)

    def describe(self) -> str:
        verdict = "ok" if self.passed else "DIFFERS"
        return f"{self.label}: max |difference| {self.max_abs_diff:.1e}  {verdict}"


@dataclass
class Step:
    """One step of the walkthrough: its formula (plain text and LaTeX), where the code is,
    the arrays it produces or reads (name, symbolic shape, values) and its checks."""

    phase: str
    title: str
    formula: str
    latex: str
    code: str
    arrays: list[tuple[str, str, np.ndarray]]
    checks: list[Check] = field(default_factory=list)
    agreements: list[Agreement] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(a.passed for a in self.agreements)


@dataclass
class Walkthrough:
    """The steps in order, and the final comparison of hand gradients with autograd."""

    config: ExplainConfig
    steps: list[Step]
    autograd: list[Agreement]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps) and all(a.passed for a in self.autograd)

    def header(self) -> str:
        c = self.config
        routing = (f"softmax with temperature τ = {c.temperature:g}" if c.routing == "softmax"
                   else "sigmoid")
        return (f"CondConv2d({c.in_channels}, {c.out_channels}, kernel_size={c.kernel_size}, "
                f"stride={c.stride}, padding={c.padding}, dilation={c.dilation}, "
                f"num_experts={c.num_experts}), routing {routing}, eval mode, float64, "
                f"backend {c.backend!r}, seed {c.seed}; input x of shape "
                f"[B, Cin, H, W] = [{c.batch}, {c.in_channels}, {c.size[0]}, {c.size[1]}]")

    def render_step(self, i: int) -> str:
        return _step_text(i + 1, len(self.steps), self.steps[i])

    def render_summary(self) -> str:
        lines = ["", "Hand-derived results against autograd on the CondConv2d module:"]
        lines += [f"  {a.describe()}" for a in self.autograd]
        verdict = ("every step's gradient matches its finite difference and every hand "
                   "gradient matches autograd" if self.passed else "SOME CHECKS FAILED")
        lines += ["", f"verdict: {verdict}"]
        return "\n".join(lines)

    def to_text(self) -> str:
        parts = [self.header(), ""]
        parts += [self.render_step(i) for i in range(len(self.steps))]
        parts.append(self.render_summary())
        return "\n".join(parts) + "\n"

    def to_markdown(self) -> str:
        return _markdown(self)


# --- formatting ------------------------------------------------------------------------------

def format_values(a: np.ndarray, limit: int = PRINT_LIMIT) -> str:
    """The array itself when it has at most ``limit`` elements, else a one-line summary."""
    a = np.asarray(a, dtype=np.float64)
    if a.size <= limit:
        return np.array2string(a, precision=4, suppress_small=True, max_line_width=92,
                               floatmode="fixed")
    head = ", ".join(f"{v:.4f}" for v in a.reshape(-1)[:6])
    return (f"{a.size} values: min {a.min():.4f}, mean {a.mean():.4f}, max {a.max():.4f}, "
            f"‖·‖ {np.linalg.norm(a):.4f}; first [{head}, …]")


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line.strip() else "" for line in text.splitlines())


def _step_text(number: int, total: int, step: Step) -> str:
    title = f"── {step.phase} {number}/{total}: {step.title} "
    lines = [title + "─" * max(0, 78 - len(title)),
             f"formula  {step.formula.replace(chr(10), chr(10) + ' ' * 9)}",
             f"code     {step.code}"]
    if step.note:
        lines.append(f"note     {step.note}")
    for name, shape, values in step.arrays:
        lines.append(f"{name} {shape} = {tuple(values.shape)}:")
        lines.append(_indent(format_values(values), "    "))
    for agreement in step.agreements:
        lines.append(f"same as  {agreement.describe()}")
    for check in step.checks:
        lines.append(f"check    {check.describe()}")
    return "\n".join(lines) + "\n"


def _markdown(w: Walkthrough) -> str:
    out = ["# A CondConv2d forward and backward pass, step by step", "",
           "Generated by `python -m minicond.explain`. " + w.header() + ".", "",
           "The loss is $L = \\sum g \\odot y$ for a fixed random tensor $g$, so "
           "$\\partial L/\\partial y = g$; $gX$ denotes $\\partial L/\\partial X$. The "
           "derivations are in minicond's `docs/math/`.", ""]
    for i, step in enumerate(w.steps):
        out += [f"## {i + 1}. {step.phase}: {step.title}", "", "$$", step.latex, "$$", "",
                f"Code: {step.code}.", ""]
        if step.note:
            out += [step.note, ""]
        for name, shape, values in step.arrays:
            out += [f"`{name}` {shape} = {tuple(values.shape)}:", "", "```text",
                    format_values(values), "```", ""]
        out += [f"- {a.describe()}" for a in step.agreements]
        out += [f"- {c.describe()}" for c in step.checks]
        out.append("")
    out += ["## Hand-derived results against autograd", ""]
    out += [f"- {a.describe()}" for a in w.autograd]
    out += ["", f"**Verdict:** {'all checks passed' if w.passed else 'some checks FAILED'}.",
            ""]
    return "\n".join(out)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so a reader
    never sees a half-written page."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".explain-", suffix=".md", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# --- finite differences --------------------------------------------------------------------------

def finite_difference_check(label: str, loss: Callable[[np.ndarray], float], point: np.ndarray,
                            analytic: np.ndarray, max_elements: int,
                            rng: np.random.Generator) -> Check:
    """Compare ``analytic`` = ∂loss/∂point with (loss(point + h·eᵢ) − loss(point − h·eᵢ))/2h
    on every element, or on ``max_elements`` random ones when there are more."""
    point = np.asarray(point, dtype=np.float64)
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != point.shape:
        raise ValueError(f"finite_difference_check: {label}: gradient shape {analytic.shape} "
                         f"differs from the point's shape {point.shape}")
    total = point.size
    if total <= max_elements:
        indices = np.arange(total)
    else:
        indices = np.sort(rng.choice(total, size=max_elements, replace=False))
    numeric = np.empty(indices.size)
    flat = point.reshape(-1)
    for n, i in enumerate(indices):
        plus, minus = flat.copy(), flat.copy()
        plus[i] += FD_EPS
        minus[i] -= FD_EPS
        numeric[n] = (loss(plus.reshape(point.shape)) - loss(minus.reshape(point.shape))) \
            / (2 * FD_EPS)
    error = float(np.max(np.abs(analytic.reshape(-1)[indices] - numeric)))
    return Check(label, error, float(np.max(np.abs(numeric))), int(indices.size), int(total))


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# --- the walkthrough -----------------------------------------------------------------------------

class _Pass:
    """One CondConv2d pass recomputed with functional ops; every ``*_of`` method is a pure
    function of NumPy arrays (for finite differences) built from the same ops."""

    def __init__(self, cfg: ExplainConfig) -> None:
        self.cfg = cfg
        self.be = get_backend(cfg.backend)
        manual_seed(cfg.seed)
        self.layer = CondConv2d(cfg.in_channels, cfg.out_channels, cfg.kernel_size,
                                stride=cfg.stride, padding=cfg.padding,
                                dilation=cfg.dilation, num_experts=cfg.num_experts,
                                routing=cfg.routing, temperature=cfg.temperature,
                                dtype="float64", backend=cfg.backend).eval()
        rng = np.random.default_rng(cfg.seed)
        self.x = rng.standard_normal((cfg.batch, cfg.in_channels, *cfg.size))
        self.g = rng.standard_normal((cfg.batch, cfg.out_channels, *cfg.out_size))
        self.W = self.layer.weight.numpy()
        self.bias = self.layer.bias.numpy()
        self.R = self.layer.routing.fc.weight.numpy()
        self.c = self.layer.routing.fc.bias.numpy()

    # conversions
    def t(self, a: np.ndarray) -> Tensor:
        return tensor(a, dtype="float64", backend=self.be)

    def raw(self, a: np.ndarray) -> Any:
        return self.be.from_numpy(np.asarray(a, dtype=np.float64), np.float64)

    @property
    def geometry(self) -> tuple[tuple[int, int], ...]:
        c = self.cfg
        k, s, p, d = c.kernel_size, c.stride, c.padding, c.dilation
        return (k, k), (s, s), (p, p), (d, d)

    # forward pieces, as functions of NumPy arrays
    def pool_of(self, x: np.ndarray) -> np.ndarray:
        with no_grad():
            return F.global_avg_pool2d(self.t(x)).numpy()

    def logits_of(self, p: np.ndarray, R: np.ndarray, c: np.ndarray) -> np.ndarray:
        with no_grad():
            return F.linear(self.t(p), self.t(R), self.t(c)).numpy()

    def route(self, z: Tensor) -> Tensor:
        if self.cfg.routing == "sigmoid":
            return F.sigmoid(z)
        return F.softmax(z * (1.0 / self.cfg.temperature), dim=1)

    def route_of(self, z: np.ndarray) -> np.ndarray:
        with no_grad():
            return self.route(self.t(z)).numpy()

    def mix_of(self, r: np.ndarray, W: np.ndarray) -> np.ndarray:
        with no_grad():
            return F.mix_experts(self.t(r), self.t(W)).numpy()

    def cols_of(self, x: np.ndarray) -> np.ndarray:
        """im2col with the backend's own kernel: [B, Cin·kh·kw, Ho·Wo]."""
        return self.be.to_numpy(self.be.im2col(self.raw(x), *self.geometry))

    def conv_of(self, x: np.ndarray, K: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """y_b = K_b · cols_b + bias, the GEMM form of the convolution."""
        B, Cout = x.shape[0], K.shape[1]
        Ho, Wo = self.cfg.out_size
        with no_grad():
            cols = self.t(self.cols_of(x))
            y = F.matmul(F.reshape(self.t(K), B, Cout, -1), cols)
            return (F.reshape(y, B, Cout, Ho, Wo) + F.reshape(self.t(bias), 1, Cout, 1, 1)
                    ).numpy()

    def loss_of_y(self, y: np.ndarray) -> float:
        return float(np.sum(self.g * y))

    # the loss seen from each step, everything upstream held fixed
    def loss_of_K(self, K: np.ndarray) -> float:
        return self.loss_of_y(self.conv_of(self.x, K, self.bias))

    def loss_of_r(self, r: np.ndarray) -> float:
        return self.loss_of_K(self.mix_of(r, self.W))

    def loss_of_z(self, z: np.ndarray) -> float:
        return self.loss_of_r(self.route_of(z))

    def loss_of_p(self, p: np.ndarray) -> float:
        return self.loss_of_z(self.logits_of(p, self.R, self.c))

    def loss_of_x(self, x: np.ndarray) -> float:
        K = self.mix_of(self.route_of(self.logits_of(self.pool_of(x), self.R, self.c)), self.W)
        return self.loss_of_y(self.conv_of(x, K, self.bias))


def _local_check(label: str, fn: Callable[..., Tensor], inputs: Sequence[np.ndarray],
                 names: Sequence[str], p: _Pass, rng: np.random.Generator) -> list[Check]:
    """Check the op's own backward: autograd's gradient of ⟨u, fn(inputs)⟩ for a random u,
    against finite differences, for every input."""
    tensors = [tensor(a, dtype="float64", requires_grad=True, backend=p.be) for a in inputs]
    out = fn(*tensors)
    u = rng.standard_normal(out.shape)
    (out * u).sum().backward()
    checks = []
    for k, (a, name) in enumerate(zip(inputs, names, strict=True)):
        def loss(v: np.ndarray, k: int = k) -> float:
            args = [tensor(b, dtype="float64", backend=p.be) for b in inputs]
            args[k] = tensor(v, dtype="float64", backend=p.be)
            with no_grad():
                return float(np.sum(fn(*args).numpy() * u))
        checks.append(finite_difference_check(f"{label} ∂/∂{name}", loss, a,
                                              tensors[k].grad.numpy(), p.cfg.fd_elements, rng))
    return checks


def _routing_formulas(cfg: ExplainConfig) -> dict[str, str]:
    if cfg.routing == "sigmoid":
        return dict(
            title="routing weights (sigmoid)",
            formula="r_be = σ(z_be) = 1 / (1 + exp(−z_be))",
            latex=r"r_{be} = \sigma(z_{be}) = \frac{1}{1 + e^{-z_{be}}}",
            code="minicond/functional/basic.py: Sigmoid (sigmoid); nn/condconv.py: Router",
            back_title="through the sigmoid",
            back_formula="gz_be = gr_be · r_be · (1 − r_be)",
            back_latex=r"gz_{be} = gr_{be}\, r_{be}\,(1 - r_{be})",
            back_code="minicond/functional/basic.py: Sigmoid.backward")
    return dict(
        title=f"routing weights (softmax, τ = {cfg.temperature:g})",
        formula="r_be = exp(z_be/τ) / Σ_e' exp(z_be'/τ)",
        latex=r"r_{be} = \frac{e^{z_{be}/\tau}}{\sum_{e'} e^{z_{be'}/\tau}}",
        code="minicond/functional/basic.py: Softmax (softmax) after Mul by 1/τ; "
             "nn/condconv.py: Router",
        back_title="through the softmax",
        back_formula="gz_be = (1/τ) · r_be · (gr_be − Σ_e' gr_be' r_be')",
        back_latex=r"gz_{be} = \frac{1}{\tau}\, r_{be}\Big(gr_{be} - \sum_{e'} gr_{be'}\,"
                   r"r_{be'}\Big)",
        back_code="minicond/functional/basic.py: Softmax.backward (kernel softmax_backward), "
                  "Mul.backward for 1/τ")


def build(cfg: ExplainConfig) -> Walkthrough:
    """Run the walkthrough and return its steps (printing nothing)."""
    cfg.validate()
    p = _Pass(cfg)
    be, rng = p.be, np.random.default_rng(cfg.seed + 1)
    B, Cin, Cout, E = cfg.batch, cfg.in_channels, cfg.out_channels, cfg.num_experts
    H, W_ = cfg.size
    Ho, Wo = cfg.out_size
    kernel, stride, padding, dilation = p.geometry
    fd = cfg.fd_elements
    rf = _routing_formulas(cfg)
    steps: list[Step] = []

    # ---- forward ----------------------------------------------------------------------------
    x = p.x
    pool = p.pool_of(x)
    steps.append(Step(
        "forward", "global average pool",
        "p_bc = (1/(H·W)) Σ_{h,w} x_bchw",
        r"p_{bc} = \frac{1}{HW} \sum_{h,w} x_{bchw}",
        "minicond/functional/routing.py: GlobalAvgPool2d (global_avg_pool2d)",
        [("x", "[B, Cin, H, W]", x), ("p", "[B, Cin]", pool)],
        checks=_local_check("pool", F.global_avg_pool2d, [x], ["x"], p, rng)))

    z = p.logits_of(pool, p.R, p.c)
    steps.append(Step(
        "forward", "routing logits",
        "z_b = R · p_b + c",
        r"z_b = R\, p_b + c",
        "minicond/functional/routing.py: Linear (linear); nn/condconv.py: Router.logits",
        [("R", "[E, Cin]", p.R), ("c", "[E]", p.c), ("z", "[B, E]", z)],
        checks=_local_check("linear", F.linear, [pool, p.R, p.c], ["p", "R", "c"], p, rng),
        note="eval mode: routing dropout is the identity"))

    r = p.route_of(z)
    steps.append(Step(
        "forward", rf["title"], rf["formula"], rf["latex"], rf["code"],
        [("r", "[B, E]", r)],
        checks=_local_check("routing", p.route, [z], ["z"], p, rng)))

    K = p.mix_of(r, p.W)
    steps.append(Step(
        "forward", "mixed kernel, one per example",
        "K_b = Σ_e r_be · W_e    (a GEMM: r [B, E] · W [E, Cout·Cin·kh·kw])",
        r"K_b = \sum_e r_{be}\, W_e",
        f"minicond/functional/condconv.py: MixExperts (mix_experts); kernel "
        f"{be.name}.mix_experts",
        [("W", "[E, Cout, Cin, kh, kw]", p.W), ("K", "[B, Cout, Cin, kh, kw]", K)],
        checks=_local_check("mix", F.mix_experts, [r, p.W], ["r", "W"], p, rng)))

    cols = p.cols_of(x)
    y = p.conv_of(x, K, p.bias)
    kernel_y = be.to_numpy(be.conv2d_forward(p.raw(x), p.raw(K), stride, padding, dilation, 1))
    with no_grad():
        fused = F.cond_conv2d(p.t(x), p.t(r), p.t(p.W), p.t(p.bias), cfg.stride, cfg.padding,
                              cfg.dilation).numpy()

    def per_example_conv(xt: Tensor, Kt: Tensor, bt: Tensor) -> Tensor:
        # One kernel per example is a grouped conv2d over the batch folded into channels:
        # x as [1, B·Cin, H, W], K as [B·Cout, Cin, kh, kw], groups = B.
        k = cfg.kernel_size
        yt = F.conv2d(F.reshape(xt, 1, B * Cin, H, W_), F.reshape(Kt, B * Cout, Cin, k, k),
                      None, cfg.stride, cfg.padding, cfg.dilation, groups=B)
        return F.reshape(yt, B, Cout, Ho, Wo) + F.reshape(bt, 1, Cout, 1, 1)

    steps.append(Step(
        "forward", "convolution as im2col + GEMM",
        "cols_b = im2col(x_b)    [Cin·kh·kw, Ho·Wo]\n"
        "y_b = K_b · cols_b + bias    (K_b viewed as [Cout, Cin·kh·kw])",
        r"\mathrm{cols}_b = \operatorname{im2col}(x_b), \qquad "
        r"y_b = K_b \cdot \mathrm{cols}_b + \mathrm{bias}",
        f"kernel {be.name}.im2col, then minicond/functional/basic.py: MatMul; fused in "
        f"minicond/functional/condconv.py: CondConv2d (kernel {be.name}.conv2d_forward)",
        [("cols", "[B, Cin·kh·kw, Ho·Wo]", cols), ("bias", "[Cout]", p.bias),
         ("y", "[B, Cout, Ho, Wo]", y)],
        agreements=[Agreement(f"{be.name}.conv2d_forward + bias", _diff(y, kernel_y +
                                                                        p.bias[:, None, None])),
                    Agreement("functional.cond_conv2d", _diff(y, fused))],
        checks=_local_check("conv2d", per_example_conv, [x, K, p.bias], ["x", "K", "bias"],
                            p, rng)))

    L = p.loss_of_y(y)
    steps.append(Step(
        "forward", "loss",
        "L = Σ_{b,o,i,j} g_boij · y_boij    (g: a fixed random tensor)",
        r"L = \sum_{b,o,i,j} g_{boij}\, y_{boij}",
        "minicond/functional/basic.py: Mul, Sum",
        [("g", "[B, Cout, Ho, Wo]", p.g), ("L", "[]", np.array(L))],
        checks=_local_check("loss", lambda yt: (yt * p.g).sum(), [y], ["y"], p, rng)))

    # ---- backward, by hand --------------------------------------------------------------------
    gy = p.g
    gbias = gy.sum(axis=(0, 2, 3))
    steps.append(Step(
        "backward", "∂L/∂y and the bias",
        "gy = ∂L/∂y = g;    gbias_o = Σ_{b,i,j} g_boij",
        r"gy = \frac{\partial L}{\partial y} = g, \qquad "
        r"g\mathrm{bias}_o = \sum_{b,i,j} g_{boij}",
        "minicond/functional/condconv.py: CondConv2d.backward (bias); "
        "functional/conv.py: Conv2d.backward",
        [("gy", "[B, Cout, Ho, Wo]", gy), ("gbias", "[Cout]", gbias)],
        checks=[finite_difference_check("∂L/∂y", p.loss_of_y, y, gy, fd, rng),
                finite_difference_check(
                    "∂L/∂bias", lambda v: p.loss_of_y(p.conv_of(x, K, v)), p.bias, gbias,
                    fd, rng)]))

    with no_grad():
        gy_t = F.reshape(p.t(gy), B, Cout, Ho * Wo)
        gK = F.reshape(F.matmul(gy_t, F.transpose(p.t(cols), 1, 2)), *K.shape).numpy()
    kernel_gK = be.to_numpy(be.conv2d_backward_weight(p.raw(x), p.raw(gy), K.shape, stride,
                                                      padding, dilation, 1))
    steps.append(Step(
        "backward", "weight gradient of the mixed kernel",
        "gK_b = g_b · cols_bᵀ    (g_b viewed as [Cout, Ho·Wo]): a correlation of x_b with g_b",
        r"gK_b = g_b \cdot \mathrm{cols}_b^{\top}",
        f"minicond/functional/conv.py: conv_backward_weight (kernel "
        f"{be.name}.conv2d_backward_weight, kept per example)",
        [("gK", "[B, Cout, Cin, kh, kw]", gK)],
        agreements=[Agreement(f"{be.name}.conv2d_backward_weight", _diff(gK, kernel_gK))],
        checks=[finite_difference_check("∂L/∂K", p.loss_of_K, K, gK, fd, rng)]))

    with no_grad():
        gW = F.reshape(F.matmul(F.transpose(p.t(r), 0, 1), F.reshape(p.t(gK), B, -1)),
                       *p.W.shape).numpy()
        gr = F.matmul(F.reshape(p.t(gK), B, -1),
                      F.transpose(F.reshape(p.t(p.W), E, -1), 0, 1)).numpy()
    kernel_gr, kernel_gW = (be.to_numpy(a) for a in
                            be.mix_experts_backward(p.raw(r), p.raw(p.W), p.raw(gK)))
    steps.append(Step(
        "backward", "gradient to each expert",
        "gW_e = Σ_b r_be · gK_b    (a GEMM: rᵀ · gK)",
        r"gW_e = \sum_b r_{be}\, gK_b",
        f"minicond/functional/condconv.py: MixExperts.backward (kernel "
        f"{be.name}.mix_experts_backward)",
        [("gW", "[E, Cout, Cin, kh, kw]", gW)],
        agreements=[Agreement(f"{be.name}.mix_experts_backward", _diff(gW, kernel_gW))],
        checks=[finite_difference_check(
            "∂L/∂W", lambda v: p.loss_of_K(p.mix_of(r, v)), p.W, gW, fd, rng)]))

    steps.append(Step(
        "backward", "gradient to the routing weights",
        "gr_be = ⟨gK_b, W_e⟩    (a GEMM: gK · Wᵀ; no extra convolution)",
        r"gr_{be} = \langle gK_b,\, W_e \rangle",
        f"minicond/functional/condconv.py: MixExperts.backward (kernel "
        f"{be.name}.mix_experts_backward)",
        [("gr", "[B, E]", gr)],
        agreements=[Agreement(f"{be.name}.mix_experts_backward", _diff(gr, kernel_gr))],
        checks=[finite_difference_check("∂L/∂r", p.loss_of_r, r, gr, fd, rng)]))

    if cfg.routing == "sigmoid":
        gz = gr * r * (1.0 - r)
        kernel_gz = gz
    else:
        tau = cfg.temperature
        gz = r * (gr - np.sum(gr * r, axis=1, keepdims=True)) / tau
        kernel_gz = be.to_numpy(be.softmax_backward(p.raw(r), p.raw(gr), 1)) / tau
    steps.append(Step(
        "backward", rf["back_title"], rf["back_formula"], rf["back_latex"], rf["back_code"],
        [("gz", "[B, E]", gz)],
        agreements=([Agreement(f"{be.name}.softmax_backward / τ", _diff(gz, kernel_gz))]
                    if cfg.routing == "softmax" else []),
        checks=[finite_difference_check("∂L/∂z", p.loss_of_z, z, gz, fd, rng)]))

    gR = gz.T @ pool
    gc = gz.sum(axis=0)
    gp = gz @ p.R
    steps.append(Step(
        "backward", "the router's linear layer",
        "gR = gzᵀ · p;    gc = Σ_b gz_b;    gp = gz · R",
        r"gR = gz^{\top} p, \qquad gc = \sum_b gz_b, \qquad gp = gz\, R",
        "minicond/functional/routing.py: Linear.backward",
        [("gR", "[E, Cin]", gR), ("gc", "[E]", gc), ("gp", "[B, Cin]", gp)],
        checks=[finite_difference_check(
                    "∂L/∂R", lambda v: p.loss_of_z(p.logits_of(pool, v, p.c)), p.R, gR, fd, rng),
                finite_difference_check(
                    "∂L/∂c", lambda v: p.loss_of_z(p.logits_of(pool, p.R, v)), p.c, gc, fd, rng),
                finite_difference_check("∂L/∂p", p.loss_of_p, pool, gp, fd, rng)]))

    gx_route = np.broadcast_to(gp[:, :, None, None] / (H * W_), x.shape).copy()
    steps.append(Step(
        "backward", "through the pool (the routing path to x)",
        "gx^route_bchw = gp_bc / (H·W)",
        r"gx^{\mathrm{route}}_{bchw} = \frac{gp_{bc}}{HW}",
        "minicond/functional/routing.py: GlobalAvgPool2d.backward",
        [("gx_route", "[B, Cin, H, W]", gx_route)],
        checks=[finite_difference_check(
            "∂L/∂x through the pool", lambda v: p.loss_of_p(p.pool_of(v)), x, gx_route, fd,
            rng)]))

    with no_grad():
        gcols = F.matmul(F.transpose(F.reshape(p.t(K), B, Cout, -1), 1, 2), gy_t)
    gx_conv = be.to_numpy(be.col2im(gcols.data, x.shape, kernel, stride, padding, dilation))
    kernel_gx = be.to_numpy(be.conv2d_backward_input(p.raw(gy), p.raw(K), x.shape, stride,
                                                     padding, dilation, 1))
    gx = gx_conv + gx_route
    steps.append(Step(
        "backward", "the input gradient",
        "gcols_b = K_bᵀ · g_b;    gx^conv_b = col2im(gcols_b)  (a transposed convolution)\n"
        "gx = gx^conv + gx^route",
        r"gx^{\mathrm{conv}}_b = \operatorname{col2im}\!\big(K_b^{\top} g_b\big), \qquad "
        r"gx = gx^{\mathrm{conv}} + gx^{\mathrm{route}}",
        f"minicond/functional/conv.py: conv_backward_input (kernel {be.name}.col2im / "
        f"{be.name}.conv2d_backward_input); autograd.py adds the two paths",
        [("gx_conv", "[B, Cin, H, W]", gx_conv), ("gx", "[B, Cin, H, W]", gx)],
        agreements=[Agreement(f"{be.name}.conv2d_backward_input", _diff(gx_conv, kernel_gx))],
        checks=[finite_difference_check(
                    "∂L/∂x through the conv", lambda v: p.loss_of_y(p.conv_of(v, K, p.bias)), x,
                    gx_conv, fd, rng),
                finite_difference_check("∂L/∂x (both paths)", p.loss_of_x, x, gx, fd, rng)]))

    # ---- autograd on the module ---------------------------------------------------------------
    layer = p.layer
    xt = tensor(x, dtype="float64", requires_grad=True, backend=be)
    y_module = layer(xt)
    (y_module * gy).sum().backward()
    autograd = [
        Agreement("y vs CondConv2d(x)", _diff(y, y_module.numpy())),
        Agreement("gx vs x.grad", _diff(gx, xt.grad.numpy())),
        Agreement("gW vs weight.grad", _diff(gW, layer.weight.grad.numpy())),
        Agreement("gbias vs bias.grad", _diff(gbias, layer.bias.grad.numpy())),
        Agreement("gR vs routing.fc.weight.grad", _diff(gR, layer.routing.fc.weight.grad.numpy())),
        Agreement("gc vs routing.fc.bias.grad", _diff(gc, layer.routing.fc.bias.grad.numpy())),
    ]
    return Walkthrough(cfg, steps, autograd)


# --- the public entry points ---------------------------------------------------------------

def explain(batch: int = 2, in_channels: int = 2, out_channels: int = 2,
            size: int | tuple[int, int] = 4, kernel_size: int = 3, stride: int = 1,
            padding: int = 1, dilation: int = 1, num_experts: int = 3,
            routing: str = "sigmoid", temperature: float = 1.0, seed: int = 0,
            backend: str = "numpy", fd_elements: int = 200, step: bool = False,
            markdown: str | None = None, file: TextIO | None = None,
            quiet: bool = False) -> Walkthrough:
    """Walk through one CondConv2d forward and backward pass and print every step.

    ``size`` is the input's H = W, or a pair (H, W). ``fd_elements`` caps the elements each
    finite-difference check perturbs (random ones beyond that). ``step`` pauses for Enter
    between steps; ``markdown`` also writes the walkthrough as a Markdown page to that path;
    ``quiet`` prints nothing. Returns the :class:`Walkthrough`, whose ``passed`` says whether
    every check held.
    """
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if isinstance(hw, list):
        hw = tuple(hw)
    cfg = ExplainConfig(batch, in_channels, out_channels, hw, kernel_size, stride, padding,
                        dilation, num_experts, routing, temperature, seed, backend,
                        fd_elements)
    walk = build(cfg)
    out = sys.stdout if file is None else file
    if not quiet:
        print(walk.header(), file=out)
        print(file=out)
        for i in range(len(walk.steps)):
            print(walk.render_step(i), file=out)
            if step and i + 1 < len(walk.steps):
                out.flush()
                try:
                    input("press Enter for the next step ")
                except EOFError:
                    step = False  # no one at the keyboard: print the rest at once
        print(walk.render_summary(), file=out)
    if markdown is not None:
        write_atomic(markdown, walk.to_markdown())
        if not quiet:
            print(f"wrote {markdown}", file=out)
    return walk


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``explain``, shared by ``python -m minicond.explain`` and the
    ``minicond explain`` subcommand."""
    d = ExplainConfig()
    parser.add_argument("--batch", type=int, default=d.batch, help="B (default %(default)s)")
    parser.add_argument("--in-channels", type=int, default=d.in_channels,
                        help="Cin (default %(default)s)")
    parser.add_argument("--out-channels", type=int, default=d.out_channels,
                        help="Cout (default %(default)s)")
    parser.add_argument("--size", type=int, nargs="+", default=list(d.size), metavar="N",
                        help="input H and W, or one number for both (default 4)")
    parser.add_argument("--kernel-size", type=int, default=d.kernel_size,
                        help="kh = kw (default %(default)s)")
    parser.add_argument("--stride", type=int, default=d.stride)
    parser.add_argument("--padding", type=int, default=d.padding)
    parser.add_argument("--dilation", type=int, default=d.dilation)
    parser.add_argument("--experts", type=int, default=d.num_experts,
                        help="E, the number of experts (default %(default)s)")
    parser.add_argument("--routing", choices=ROUTINGS, default=d.routing)
    parser.add_argument("--temperature", type=float, default=d.temperature,
                        help="τ of softmax routing (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--backend", choices=("numpy", "numba", "cuda"), default=d.backend)
    parser.add_argument("--fd-elements", type=int, default=d.fd_elements,
                        help="most elements each finite-difference check perturbs "
                             "(default %(default)s)")
    parser.add_argument("--step", action="store_true", help="pause for Enter between steps")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the walkthrough as a Markdown page")


def run(args: argparse.Namespace) -> int:
    """Run ``explain`` from parsed options; the exit status is 0 when every check held."""
    if len(args.size) not in (1, 2):
        print(f"explain: --size takes one or two numbers, got {args.size}", file=sys.stderr)
        return 2
    size = (args.size[0], args.size[-1])
    try:
        walk = explain(args.batch, args.in_channels, args.out_channels, size, args.kernel_size,
                       args.stride, args.padding, args.dilation, args.experts, args.routing,
                       args.temperature, args.seed, args.backend, args.fd_elements, args.step,
                       args.markdown)
    except (ValueError, TypeError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if walk.passed else 1


DESCRIPTION = ("Run one CondConv2d forward and backward pass on a tiny input and print each "
               "step: its formula, shapes, values and a finite-difference check of its "
               "gradient; then compare the hand-derived gradients with autograd.")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``explain`` subcommand to an argparse ``subparsers`` object; the parsed
    namespace's ``func`` runs it and returns the exit status."""
    parser = subparsers.add_parser("explain", help="step through CondConv's forward and "
                                   "backward pass", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minicond.explain", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
