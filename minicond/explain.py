"""Step through one CondConv2d forward and backward pass, formula by formula.

Layer: beside the command line, at the top of the stack in docs/architecture.md.
:func:`explain` builds a tiny float64 ``CondConv2d`` in eval mode, then

1. recomputes its forward pass one step at a time with minicond's functional ops and the
   backend's ``im2col`` kernel (pool, routing logits, sigmoid/softmax, mixed kernel,
   convolution as im2col + GEMM, loss), checking each op's own backward (its Function,
   through autograd) against a central finite difference;
2. derives every gradient by hand with the formulas of ``docs/math/`` (∂L/∂y, the mixed
   kernel's weight gradient, each expert's gradient, the routing weights, the sigmoid or
   softmax, the router's linear layer, the pool, the input), checking each one against a
   finite difference of the loss seen from that step, everything upstream held fixed;
3. checks that the hand gradients equal those autograd gives on the module itself.

Each step is built by its own function (:data:`BUILDERS`); its formula, in plain text and
LaTeX, and the code that computes it come from one table, :data:`STEP_TABLE`, which
docs/code_tour.md reproduces (a test compares the two). Symbols follow docs/math/README.md:
Θ the experts, x̄ the pooled input, R and ρ the router's weight and bias, r the routing
weights, K_b the mixed kernel, gX = ∂L/∂X.

The loss is L = Σ gy ⊙ y for a fixed random tensor gy, so ∂L/∂y = gy (a random cotangent,
not ``y.sum()``, so that no gradient is accidentally uniform). ``python -m minicond.explain
--help`` lists the options; ``register(subparsers)`` adds the same options as an
``explain`` subcommand to another argparse program.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import functional as F
from . import viz
from ._files import write_atomic
from ._validate import check_choice, check_float, check_int
from .autograd import no_grad
from .backends import get_backend
from .backends.table import conv_output_size
from .functional.conv import conv_geometry
from .nn import CondConv2d
from .random import manual_seed
from .tensor import Tensor, tensor
from .testing import numerical_gradient

ROUTINGS = ("sigmoid", "softmax")
FD_EPS = 1e-6
# Central differences in float64 with h = 1e-6 are accurate to about 1e-9 here (the loss is
# at most quadratic in h away from the sigmoid/softmax); 1e-6 leaves a wide margin while a
# wrong formula misses by the size of the gradient itself.
FD_TOLERANCE = 1e-6
PRINT_LIMIT = 64  # arrays with more elements are summarised...
SLICE_LIMIT = 100  # ...and shown through slices of them, printed in full up to this size


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


# --- the steps: formulas and code pointers, in one table --------------------------------------

@dataclass(frozen=True)
class StepInfo:
    """What one step computes (plain text and LaTeX) and where the code is: ``code`` pairs a
    file with the functions and classes in it; ``kernels`` names backend kernels
    (``minicond/backends/table.py``). docs/code_tour.md carries this table (a test compares
    them)."""

    key: str
    phase: str
    title: str
    formula: str
    latex: str
    code: tuple[tuple[str, str], ...]
    kernels: tuple[str, ...] = ()

    def code_text(self) -> str:
        parts = [f"{path}: {names}" for path, names in self.code]
        if self.kernels:
            parts.append("kernel " + ", ".join(self.kernels))
        return "; ".join(parts)


_BASIC = "minicond/functional/basic.py"
_ROUTING = "minicond/functional/routing.py"
_CONDCONV = "minicond/functional/condconv.py"
_CONV = "minicond/functional/conv.py"

STEP_TABLE: tuple[StepInfo, ...] = (
    StepInfo("pool", "forward", "global average pool",
             "x̄_bc = (1/(H·W)) Σ_{h,w} x_bchw",
             r"\bar x_{bc} = \frac{1}{HW} \sum_{h,w} x_{bchw}",
             ((_ROUTING, "GlobalAvgPool2d, global_avg_pool2d"),)),
    StepInfo("logits", "forward", "routing logits",
             "z_b = R · x̄_b + ρ",
             r"z_b = R\, \bar x_b + \rho",
             ((_ROUTING, "Linear, linear"), ("minicond/nn/condconv.py", "Router.logits"))),
    StepInfo("route_sigmoid", "forward", "routing weights (sigmoid)",
             "r_be = σ(z_be) = 1 / (1 + exp(−z_be))",
             r"r_{be} = \sigma(z_{be}) = \frac{1}{1 + e^{-z_{be}}}",
             ((_BASIC, "Sigmoid, sigmoid"), ("minicond/nn/condconv.py", "Router")),
             ("sigmoid",)),
    StepInfo("route_softmax", "forward", "routing weights (softmax)",
             "r_be = exp(z_be/τ) / Σ_e' exp(z_be'/τ)",
             r"r_{be} = \frac{e^{z_{be}/\tau}}{\sum_{e'} e^{z_{be'}/\tau}}",
             ((_BASIC, "Mul (by 1/τ), Softmax, softmax"), ("minicond/nn/condconv.py", "Router")),
             ("softmax",)),
    StepInfo("mix", "forward", "mixed kernel, one per example",
             "K_b = Σ_e r_be · Θ_e    (a GEMM: r [B, E] · Θ [E, Cout·Cin·kh·kw])",
             r"K_b = \sum_e r_{be}\, \Theta_e",
             ((_CONDCONV, "MixExperts, mix_experts"),), ("mix_experts",)),
    StepInfo("conv", "forward", "convolution as im2col + GEMM",
             "cols_b = im2col(x̃_b)    [Cin·kh·kw, Ho·Wo]\n"
             "y_b = K_b · cols_b + bias    (K_b viewed as [Cout, Cin·kh·kw])",
             r"\mathrm{cols}_b = \operatorname{im2col}(\tilde x_b), \qquad "
             r"y_b = K_b \cdot \mathrm{cols}_b + \mathrm{bias}",
             ((_BASIC, "MatMul"), (_CONDCONV, "CondConv2d, cond_conv2d")),
             ("im2col", "conv2d_forward")),
    StepInfo("loss", "forward", "loss",
             "L = Σ_{b,o,oh,ow} gy_{b,o,oh,ow} · y_{b,o,oh,ow}    (gy: a fixed random tensor)",
             r"L = \sum_{b,o,oh,ow} gy_{b,o,oh,ow}\, y_{b,o,oh,ow}",
             ((_BASIC, "Mul, Sum"),)),
    StepInfo("gy", "backward", "∂L/∂y and the bias",
             "gy = ∂L/∂y;    gbias_o = Σ_{b,oh,ow} gy_{b,o,oh,ow}",
             r"gy = \frac{\partial L}{\partial y}, \qquad "
             r"g\mathrm{bias}_o = \sum_{b,oh,ow} gy_{b,o,oh,ow}",
             ((_CONDCONV, "CondConv2d.backward"), (_CONV, "Conv2d.backward"))),
    StepInfo("gK", "backward", "weight gradient of the mixed kernel",
             "gK_b = gy_b · cols_bᵀ    (gy_b viewed as [Cout, Ho·Wo]): a correlation of x_b "
             "with gy_b",
             r"gK_b = gy_b \cdot \mathrm{cols}_b^{\top}",
             ((_CONV, "conv_backward_weight"),), ("conv2d_backward_weight",)),
    StepInfo("gTheta", "backward", "gradient to each expert",
             "gΘ_e = Σ_b r_be · gK_b    (a GEMM: rᵀ · gK)",
             r"g\Theta_e = \sum_b r_{be}\, gK_b",
             ((_CONDCONV, "MixExperts.backward"),), ("mix_experts_backward",)),
    StepInfo("gr", "backward", "gradient to the routing weights",
             "gr_be = ⟨gK_b, Θ_e⟩    (a GEMM: gK · Θᵀ; no extra convolution)",
             r"gr_{be} = \langle gK_b,\, \Theta_e \rangle",
             ((_CONDCONV, "MixExperts.backward"),), ("mix_experts_backward",)),
    StepInfo("gz_sigmoid", "backward", "through the sigmoid",
             "gz_be = gr_be · r_be · (1 − r_be)",
             r"gz_{be} = gr_{be}\, r_{be}\,(1 - r_{be})",
             ((_BASIC, "Sigmoid.backward"),)),
    StepInfo("gz_softmax", "backward", "through the softmax",
             "gz_be = (1/τ) · r_be · (gr_be − Σ_e' gr_be' r_be')",
             r"gz_{be} = \frac{1}{\tau}\, r_{be}\Big(gr_{be} - \sum_{e'} gr_{be'}\, r_{be'}\Big)",
             ((_BASIC, "Softmax.backward, Mul.backward (1/τ)"),), ("softmax_backward",)),
    StepInfo("linear", "backward", "the router's linear layer",
             "gR = gzᵀ · x̄;    gρ = Σ_b gz_b;    gx̄ = gz · R",
             r"gR = gz^{\top} \bar x, \qquad g\rho = \sum_b gz_b, \qquad g\bar x = gz\, R",
             ((_ROUTING, "Linear.backward"),)),
    StepInfo("gpool", "backward", "through the pool (the routing path to x)",
             "gx^route_bchw = gx̄_bc / (H·W)",
             r"gx^{\mathrm{route}}_{bchw} = \frac{g\bar x_{bc}}{HW}",
             ((_ROUTING, "GlobalAvgPool2d.backward"),)),
    StepInfo("gx", "backward", "the input gradient",
             "gcols_b = K_bᵀ · gy_b;    gx^conv_b = col2im(gcols_b)  (a transposed "
             "convolution)\ngx = gx^conv + gx^route",
             r"gx^{\mathrm{conv}}_b = \operatorname{col2im}\!\big(K_b^{\top} gy_b\big), \qquad "
             r"gx = gx^{\mathrm{conv}} + gx^{\mathrm{route}}",
             ((_CONV, "conv_backward_input"), ("minicond/autograd.py", "run_backward")),
             ("col2im", "conv2d_backward_input")),
)
STEP_INFO = {info.key: info for info in STEP_TABLE}


def code_tour_rows() -> list[str]:
    """The rows of docs/code_tour.md's table of the explain steps, from :data:`STEP_TABLE`."""
    return [f"| {info.phase}: {info.title} | ${info.latex}$ | {info.code_text()} |"
            for info in STEP_TABLE]


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
    the arrays it produces or reads (name, symbolic shape, values), small slices of them
    (array name, slice label, values: printed in full beside a summarised array) and its
    checks."""

    phase: str
    title: str
    formula: str
    latex: str
    code: str
    arrays: list[tuple[str, str, np.ndarray]]
    checks: list[Check] = field(default_factory=list)
    agreements: list[Agreement] = field(default_factory=list)
    note: str = ""
    slices: list[tuple[str, str, np.ndarray]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(a.passed for a in self.agreements)


@dataclass
class Walkthrough:
    """The steps in order, the final comparison of hand gradients with autograd, and the
    module's output (its autograd graph: :meth:`graph`)."""

    config: ExplainConfig
    steps: list[Step]
    autograd: list[Agreement]
    output: Tensor | None = None
    names: list[tuple[str, Tensor]] = field(default_factory=list)

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

    def graph(self) -> str:
        """The autograd graph of the module's forward pass, after its backward, as DOT text
        (leaves named as the layer's parameters and ``x``)."""
        return viz.graph(self.output, self.names)


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


def _shown(step: Step) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(name, shape text, values text, [(slice label, values text)]) per array: the slices
    of an array appear only when the array itself is summarised."""
    out = []
    for name, shape, values in step.arrays:
        summarised = np.asarray(values).size > PRINT_LIMIT
        slices = [(label, format_values(v, SLICE_LIMIT)) for of, label, v in step.slices
                  if of == name and summarised]
        out.append((name, f"{shape} = {tuple(values.shape)}", format_values(values), slices))
    return out


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line.strip() else "" for line in text.splitlines())


def _step_text(number: int, total: int, step: Step) -> str:
    title = f"── {step.phase} {number}/{total}: {step.title} "
    lines = [title + "─" * max(0, 78 - len(title)),
             f"formula  {step.formula.replace(chr(10), chr(10) + ' ' * 9)}",
             f"code     {step.code}"]
    if step.note:
        lines.append(f"note     {step.note}")
    for name, shape, values, slices in _shown(step):
        lines.append(f"{name} {shape}:")
        lines.append(_indent(values, "    "))
        for label, text in slices:
            lines.append(f"  {label} =")
            lines.append(_indent(text, "    "))
    for agreement in step.agreements:
        lines.append(f"same as  {agreement.describe()}")
    for check in step.checks:
        lines.append(f"check    {check.describe()}")
    return "\n".join(lines) + "\n"


def _markdown(w: Walkthrough) -> str:
    out = ["# A CondConv2d forward and backward pass, step by step", "",
           "Generated by `python -m minicond.explain`. " + w.header() + ".", "",
           "The loss is $L = \\sum gy \\odot y$ for a fixed random tensor $gy$, so "
           "$\\partial L/\\partial y = gy$; $gX$ denotes $\\partial L/\\partial X$. The "
           "derivations are in minicond's `docs/math/`.", ""]
    for i, step in enumerate(w.steps):
        out += [f"## {i + 1}. {step.phase}: {step.title}", "", "$$", step.latex, "$$", "",
                f"Code: {step.code}.", ""]
        if step.note:
            out += [step.note, ""]
        for name, shape, values, slices in _shown(step):
            out += [f"`{name}` {shape}:", "", "```text", values, "```", ""]
            for label, text in slices:
                out += [f"`{label}`:", "", "```text", text, "```", ""]
        out += [f"- {a.describe()}" for a in step.agreements]
        out += [f"- {c.describe()}" for c in step.checks]
        out.append("")
    out += ["## Hand-derived results against autograd", ""]
    out += [f"- {a.describe()}" for a in w.autograd]
    out += ["", f"**Verdict:** {'all checks passed' if w.passed else 'some checks FAILED'}.",
            ""]
    return "\n".join(out)


# --- finite differences --------------------------------------------------------------------------

def finite_difference_check(label: str, loss: Callable[[np.ndarray], float], point: np.ndarray,
                            analytic: np.ndarray, max_elements: int,
                            rng: np.random.Generator) -> Check:
    """Compare ``analytic`` = ∂loss/∂point with central differences
    (``minicond.testing.numerical_gradient``) on every element, or on ``max_elements``
    random ones when there are more."""
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
    numeric = numerical_gradient(loss, point, FD_EPS, indices)
    error = float(np.max(np.abs(analytic.reshape(-1)[indices] - numeric), initial=0.0))
    return Check(label, error, float(np.max(np.abs(numeric), initial=0.0)), int(indices.size),
                 int(total))


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
        self.gy = rng.standard_normal((cfg.batch, cfg.out_channels, *cfg.out_size))
        self.W = self.layer.weight.numpy()            # the experts Θ
        self.bias = self.layer.bias.numpy()
        self.R = self.layer.routing.fc.weight.numpy()
        self.rho = self.layer.routing.fc.bias.numpy()
        self.rng = np.random.default_rng(cfg.seed + 1)   # cotangents, sampled FD elements

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

    def logits_of(self, xbar: np.ndarray, R: np.ndarray, rho: np.ndarray) -> np.ndarray:
        with no_grad():
            return F.linear(self.t(xbar), self.t(R), self.t(rho)).numpy()

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
        return float(np.sum(self.gy * y))

    # the loss seen from each step, everything upstream held fixed
    def loss_of_K(self, K: np.ndarray) -> float:
        return self.loss_of_y(self.conv_of(self.x, K, self.bias))

    def loss_of_r(self, r: np.ndarray) -> float:
        return self.loss_of_K(self.mix_of(r, self.W))

    def loss_of_z(self, z: np.ndarray) -> float:
        return self.loss_of_r(self.route_of(z))

    def loss_of_xbar(self, xbar: np.ndarray) -> float:
        return self.loss_of_z(self.logits_of(xbar, self.R, self.rho))

    def loss_of_x(self, x: np.ndarray) -> float:
        K = self.mix_of(self.route_of(self.logits_of(self.pool_of(x), self.R, self.rho)),
                        self.W)
        return self.loss_of_y(self.conv_of(x, K, self.bias))


def _local_check(label: str, fn: Callable[..., Tensor], inputs: Sequence[np.ndarray],
                 names: Sequence[str], p: _Pass) -> list[Check]:
    """Check the op's own backward: autograd's gradient of ⟨u, fn(inputs)⟩ for a random u,
    against finite differences, for every input."""
    tensors = [tensor(a, dtype="float64", requires_grad=True, backend=p.be) for a in inputs]
    out = fn(*tensors)
    u = p.rng.standard_normal(out.shape)
    (out * u).sum().backward()
    checks = []
    for k, (a, name) in enumerate(zip(inputs, names, strict=True)):
        def loss(v: np.ndarray, k: int = k) -> float:
            args = [tensor(b, dtype="float64", backend=p.be) for b in inputs]
            args[k] = tensor(v, dtype="float64", backend=p.be)
            with no_grad():
                return float(np.sum(fn(*args).numpy() * u))
        checks.append(finite_difference_check(f"{label} ∂/∂{name}", loss, a,
                                              tensors[k].grad.numpy(), p.cfg.fd_elements, p.rng))
    return checks


def _fd(p: _Pass, label: str, loss: Callable[[np.ndarray], float], point: np.ndarray,
        analytic: np.ndarray) -> Check:
    return finite_difference_check(label, loss, point, analytic, p.cfg.fd_elements, p.rng)


def _step(key: str, arrays: list[tuple[str, str, np.ndarray]], *, title: str | None = None,
          checks: Sequence[Check] = (), agreements: Sequence[Agreement] = (),
          slices: Sequence[tuple[str, str, np.ndarray]] = (), note: str = "") -> Step:
    """A Step whose formula and code pointers come from :data:`STEP_TABLE`."""
    info = STEP_INFO[key]
    return Step(info.phase, title or info.title, info.formula, info.latex, info.code_text(),
                arrays, list(checks), list(agreements), note, list(slices))


class _Values:
    """What the steps computed so far (each builder reads its inputs here and adds its
    results): x̄, z, r, K, cols, y, gK, gr, gz, gx̄, gx^route, and the hand gradients."""

    xbar: np.ndarray
    z: np.ndarray
    r: np.ndarray
    K: np.ndarray
    cols: np.ndarray
    y: np.ndarray
    gbias: np.ndarray
    gK: np.ndarray
    gW: np.ndarray
    gr: np.ndarray
    gz: np.ndarray
    gR: np.ndarray
    grho: np.ndarray
    gxbar: np.ndarray
    gx_route: np.ndarray
    gx: np.ndarray


# --- one builder per step: forward ---------------------------------------------------------------

def _build_pool(p: _Pass, v: _Values) -> Step:
    v.xbar = p.pool_of(p.x)
    return _step("pool", [("x", "[B, Cin, H, W]", p.x), ("x̄", "[B, Cin]", v.xbar)],
                 checks=_local_check("pool", F.global_avg_pool2d, [p.x], ["x"], p),
                 slices=[("x", "x[0, 0]", p.x[0, 0])])


def _build_logits(p: _Pass, v: _Values) -> Step:
    v.z = p.logits_of(v.xbar, p.R, p.rho)
    return _step("logits", [("R", "[E, Cin]", p.R), ("ρ", "[E]", p.rho), ("z", "[B, E]", v.z)],
                 checks=_local_check("linear", F.linear, [v.xbar, p.R, p.rho],
                                     ["x̄", "R", "ρ"], p),
                 slices=[("R", "R[:, 0]", p.R[:, 0])],
                 note="eval mode: routing dropout is the identity")


def _build_route(p: _Pass, v: _Values) -> Step:
    v.r = p.route_of(v.z)
    cfg = p.cfg
    title = (None if cfg.routing == "sigmoid"
             else f"routing weights (softmax, τ = {cfg.temperature:g})")
    return _step(f"route_{cfg.routing}", [("r", "[B, E]", v.r)], title=title,
                 checks=_local_check("routing", p.route, [v.z], ["z"], p),
                 slices=[("r", "r[0]", v.r[0])])


def _build_mix(p: _Pass, v: _Values) -> Step:
    v.K = p.mix_of(v.r, p.W)
    return _step("mix", [("Θ", "[E, Cout, Cin, kh, kw]", p.W),
                         ("K", "[B, Cout, Cin, kh, kw]", v.K)],
                 agreements=[Agreement(f"{p.be.name}.mix_experts", _diff(v.K, p.be.to_numpy(
                     p.be.mix_experts(p.raw(v.r), p.raw(p.W)))))],
                 checks=_local_check("mix", F.mix_experts, [v.r, p.W], ["r", "Θ"], p),
                 slices=[("Θ", "Θ[:, 0, 0]: output channel 0, input channel 0, every expert e",
                          p.W[:, 0, 0]),
                         ("K", "K[0, 0, 0] = Σ_e r_0e · Θ[e, 0, 0]", v.K[0, 0, 0])])


def _build_conv(p: _Pass, v: _Values) -> Step:
    cfg, be = p.cfg, p.be
    x, K = p.x, v.K
    B, Cin, Cout, k = cfg.batch, cfg.in_channels, cfg.out_channels, cfg.kernel_size
    (H, W_), (Ho, Wo) = cfg.size, cfg.out_size
    _, stride, padding, dilation = p.geometry
    v.cols = p.cols_of(x)
    v.y = p.conv_of(x, K, p.bias)
    kernel_y = be.to_numpy(be.conv2d_forward(p.raw(x), p.raw(K), stride, padding, dilation, 1))
    with no_grad():
        fused = F.cond_conv2d(p.t(x), p.t(v.r), p.t(p.W), p.t(p.bias), cfg.stride, cfg.padding,
                              cfg.dilation).numpy()

    def per_example_conv(xt: Tensor, Kt: Tensor, bt: Tensor) -> Tensor:
        # One kernel per example is a grouped conv2d over the batch folded into channels:
        # x as [1, B·Cin, H, W], K as [B·Cout, Cin, kh, kw], G = B.
        yt = F.conv2d(F.reshape(xt, 1, B * Cin, H, W_), F.reshape(Kt, B * Cout, Cin, k, k),
                      None, cfg.stride, cfg.padding, cfg.dilation, groups=B)
        return F.reshape(yt, B, Cout, Ho, Wo) + F.reshape(bt, 1, Cout, 1, 1)

    return _step(
        "conv", [("cols", "[B, Cin·kh·kw, Ho·Wo]", v.cols), ("bias", "[Cout]", p.bias),
                 ("y", "[B, Cout, Ho, Wo]", v.y)],
        agreements=[Agreement(f"{be.name}.conv2d_forward + bias",
                              _diff(v.y, kernel_y + p.bias[:, None, None])),
                    Agreement("functional.cond_conv2d", _diff(v.y, fused))],
        checks=_local_check("conv2d", per_example_conv, [x, K, p.bias], ["x", "K", "bias"], p),
        slices=[("cols", "cols[0][:, 0] as [Cin, kh, kw]: the window of x̃_0 that output "
                 "pixel (0, 0) sees", v.cols[0][:, 0].reshape(Cin, k, k)),
                ("y", "y[0, 0]", v.y[0, 0])])


def _build_loss(p: _Pass, v: _Values) -> Step:
    L = p.loss_of_y(v.y)
    return _step("loss", [("gy", "[B, Cout, Ho, Wo]", p.gy), ("L", "[]", np.array(L))],
                 checks=_local_check("loss", lambda yt: (yt * p.gy).sum(), [v.y], ["y"], p),
                 slices=[("gy", "gy[0, 0]", p.gy[0, 0])])


# --- backward, by hand ---------------------------------------------------------------------------

def _build_gy(p: _Pass, v: _Values) -> Step:
    v.gbias = p.gy.sum(axis=(0, 2, 3))
    return _step("gy", [("gy", "[B, Cout, Ho, Wo]", p.gy), ("gbias", "[Cout]", v.gbias)],
                 checks=[_fd(p, "∂L/∂y", p.loss_of_y, v.y, p.gy),
                         _fd(p, "∂L/∂bias", lambda b: p.loss_of_y(p.conv_of(p.x, v.K, b)),
                             p.bias, v.gbias)],
                 slices=[("gy", "gy[0, 0]", p.gy[0, 0])])


def _gy_rows(p: _Pass) -> Tensor:
    """gy_b viewed as [Cout, Ho·Wo], for every b: [B, Cout, Ho·Wo]."""
    cfg = p.cfg
    return F.reshape(p.t(p.gy), cfg.batch, cfg.out_channels, -1)


def _build_gK(p: _Pass, v: _Values) -> Step:
    be = p.be
    _, stride, padding, dilation = p.geometry
    with no_grad():
        v.gK = F.reshape(F.matmul(_gy_rows(p), F.transpose(p.t(v.cols), 1, 2)),
                         *v.K.shape).numpy()
    kernel_gK = be.to_numpy(be.conv2d_backward_weight(p.raw(p.x), p.raw(p.gy), v.K.shape,
                                                      stride, padding, dilation, 1))
    return _step("gK", [("gK", "[B, Cout, Cin, kh, kw]", v.gK)],
                 agreements=[Agreement(f"{be.name}.conv2d_backward_weight (per example)",
                                       _diff(v.gK, kernel_gK))],
                 checks=[_fd(p, "∂L/∂K", p.loss_of_K, v.K, v.gK)],
                 slices=[("gK", "gK[0, 0]", v.gK[0, 0])])


def _build_gTheta(p: _Pass, v: _Values) -> Step:
    B = p.cfg.batch
    with no_grad():
        v.gW = F.reshape(F.matmul(F.transpose(p.t(v.r), 0, 1), F.reshape(p.t(v.gK), B, -1)),
                         *p.W.shape).numpy()
    _, kernel_gW = p.be.mix_experts_backward(p.raw(v.r), p.raw(p.W), p.raw(v.gK))
    return _step("gTheta", [("gΘ", "[E, Cout, Cin, kh, kw]", v.gW)],
                 agreements=[Agreement(f"{p.be.name}.mix_experts_backward",
                                       _diff(v.gW, p.be.to_numpy(kernel_gW)))],
                 checks=[_fd(p, "∂L/∂Θ", lambda w: p.loss_of_K(p.mix_of(v.r, w)), p.W, v.gW)],
                 slices=[("gΘ", "gΘ[:, 0, 0]", v.gW[:, 0, 0])])


def _build_gr(p: _Pass, v: _Values) -> Step:
    B, E = p.cfg.batch, p.cfg.num_experts
    with no_grad():
        v.gr = F.matmul(F.reshape(p.t(v.gK), B, -1),
                        F.transpose(F.reshape(p.t(p.W), E, -1), 0, 1)).numpy()
    kernel_gr, _ = p.be.mix_experts_backward(p.raw(v.r), p.raw(p.W), p.raw(v.gK))
    return _step("gr", [("gr", "[B, E]", v.gr)],
                 agreements=[Agreement(f"{p.be.name}.mix_experts_backward",
                                       _diff(v.gr, p.be.to_numpy(kernel_gr)))],
                 checks=[_fd(p, "∂L/∂r", p.loss_of_r, v.r, v.gr)])


def _build_gz(p: _Pass, v: _Values) -> Step:
    cfg, r, gr = p.cfg, v.r, v.gr
    agreements = []
    if cfg.routing == "sigmoid":
        v.gz = gr * r * (1.0 - r)
    else:
        tau = cfg.temperature
        v.gz = r * (gr - np.sum(gr * r, axis=1, keepdims=True)) / tau
        kernel_gz = p.be.to_numpy(p.be.softmax_backward(p.raw(r), p.raw(gr), 1)) / tau
        agreements.append(Agreement(f"{p.be.name}.softmax_backward / τ", _diff(v.gz, kernel_gz)))
    return _step(f"gz_{cfg.routing}", [("gz", "[B, E]", v.gz)], agreements=agreements,
                 checks=[_fd(p, "∂L/∂z", p.loss_of_z, v.z, v.gz)])


def _build_linear(p: _Pass, v: _Values) -> Step:
    v.gR = v.gz.T @ v.xbar
    v.grho = v.gz.sum(axis=0)
    v.gxbar = v.gz @ p.R
    return _step("linear", [("gR", "[E, Cin]", v.gR), ("gρ", "[E]", v.grho),
                            ("gx̄", "[B, Cin]", v.gxbar)],
                 checks=[_fd(p, "∂L/∂R", lambda m: p.loss_of_z(p.logits_of(v.xbar, m, p.rho)),
                             p.R, v.gR),
                         _fd(p, "∂L/∂ρ", lambda b: p.loss_of_z(p.logits_of(v.xbar, p.R, b)),
                             p.rho, v.grho),
                         _fd(p, "∂L/∂x̄", p.loss_of_xbar, v.xbar, v.gxbar)])


def _build_gpool(p: _Pass, v: _Values) -> Step:
    H, W_ = p.cfg.size
    v.gx_route = np.broadcast_to(v.gxbar[:, :, None, None] / (H * W_), p.x.shape).copy()
    return _step("gpool", [("gx_route", "[B, Cin, H, W]", v.gx_route)],
                 checks=[_fd(p, "∂L/∂x through the pool",
                             lambda x: p.loss_of_xbar(p.pool_of(x)), p.x, v.gx_route)],
                 slices=[("gx_route", "gx_route[0, 0]", v.gx_route[0, 0])])


def _build_gx(p: _Pass, v: _Values) -> Step:
    be = p.be
    kernel, stride, padding, dilation = p.geometry
    with no_grad():
        gcols = F.matmul(F.transpose(F.reshape(p.t(v.K), p.cfg.batch, p.cfg.out_channels, -1),
                                     1, 2), _gy_rows(p))
    gx_conv = be.to_numpy(be.col2im(gcols.data, p.x.shape, kernel, stride, padding, dilation))
    kernel_gx = be.to_numpy(be.conv2d_backward_input(p.raw(p.gy), p.raw(v.K), p.x.shape,
                                                     stride, padding, dilation, 1))
    v.gx = gx_conv + v.gx_route
    return _step("gx", [("gx_conv", "[B, Cin, H, W]", gx_conv), ("gx", "[B, Cin, H, W]", v.gx)],
                 agreements=[Agreement(f"{be.name}.conv2d_backward_input",
                                       _diff(gx_conv, kernel_gx))],
                 checks=[_fd(p, "∂L/∂x through the conv",
                             lambda x: p.loss_of_y(p.conv_of(x, v.K, p.bias)), p.x, gx_conv),
                         _fd(p, "∂L/∂x (both paths)", p.loss_of_x, p.x, v.gx)],
                 slices=[("gx_conv", "gx_conv[0, 0]", gx_conv[0, 0]),
                         ("gx", "gx[0, 0]", v.gx[0, 0])])


# The steps in the order they run; each reads what the ones before it computed.
BUILDERS: tuple[Callable[[_Pass, _Values], Step], ...] = (
    _build_pool, _build_logits, _build_route, _build_mix, _build_conv, _build_loss, _build_gy,
    _build_gK, _build_gTheta, _build_gr, _build_gz, _build_linear, _build_gpool, _build_gx)


def _autograd_on_module(p: _Pass, v: _Values) -> tuple[list[Agreement], Tensor, list]:
    """The module's own forward and backward, compared with the hand results."""
    layer = p.layer
    xt = tensor(p.x, dtype="float64", requires_grad=True, backend=p.be)
    y_module = layer(xt)
    (y_module * p.gy).sum().backward()
    agreements = [
        Agreement("y vs CondConv2d(x)", _diff(v.y, y_module.numpy())),
        Agreement("gx vs x.grad", _diff(v.gx, xt.grad.numpy())),
        Agreement("gΘ vs weight.grad", _diff(v.gW, layer.weight.grad.numpy())),
        Agreement("gbias vs bias.grad", _diff(v.gbias, layer.bias.grad.numpy())),
        Agreement("gR vs routing.fc.weight.grad",
                  _diff(v.gR, layer.routing.fc.weight.grad.numpy())),
        Agreement("gρ vs routing.fc.bias.grad",
                  _diff(v.grho, layer.routing.fc.bias.grad.numpy())),
    ]
    return agreements, y_module, [("x", xt), *layer.named_parameters()]


def build(cfg: ExplainConfig) -> Walkthrough:
    """Run the walkthrough and return its steps (printing nothing): the :data:`BUILDERS` in
    order, then autograd on the module."""
    cfg.validate()
    p = _Pass(cfg)
    values = _Values()
    steps = [builder(p, values) for builder in BUILDERS]
    agreements, output, names = _autograd_on_module(p, values)
    return Walkthrough(cfg, steps, agreements, output, names)


# --- the public entry points ---------------------------------------------------------------

def explain(batch: int = 2, in_channels: int = 2, out_channels: int = 2,
            size: int | tuple[int, int] = 4, kernel_size: int = 3, stride: int = 1,
            padding: int = 1, dilation: int = 1, num_experts: int = 3,
            routing: str = "sigmoid", temperature: float = 1.0, seed: int = 0,
            backend: str = "numpy", fd_elements: int = 200, step: bool = False,
            markdown: str | None = None, file: TextIO | None = None,
            quiet: bool = False, only: int | None = None,
            graph: str | None = None) -> Walkthrough:
    """Walk through one CondConv2d forward and backward pass and print every step.

    ``size`` is the input's H = W, or a pair (H, W). ``fd_elements`` caps the elements each
    finite-difference check perturbs (random ones beyond that). ``step`` pauses for Enter
    between steps; ``only`` (1 to the number of steps) prints the header and that one step;
    ``markdown`` also writes the walkthrough as a Markdown page to that path; ``graph`` draws
    the autograd graph of the layer's forward pass, after its backward, with
    :func:`minicond.viz.render` (``.svg``/``.png``/``.pdf`` when Graphviz is installed, else
    the ``.dot`` file); ``quiet`` prints nothing. Every step is computed and checked in any
    case. Returns the :class:`Walkthrough`, whose ``passed`` says whether every check held.
    """
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if isinstance(hw, list):
        hw = tuple(hw)
    cfg = ExplainConfig(batch, in_channels, out_channels, hw, kernel_size, stride, padding,
                        dilation, num_experts, routing, temperature, seed, backend,
                        fd_elements)
    if only is not None:
        if isinstance(only, bool) or not isinstance(only, int):
            raise TypeError(f"explain: only={only!r} must be an int")
        if not 1 <= only <= len(BUILDERS):
            raise ValueError(f"explain: only={only} must be a step number from 1 to "
                             f"{len(BUILDERS)}")
    if graph is not None and Path(graph).suffix.lstrip(".").lower() not in viz.FORMATS:
        raise ValueError(f"explain: graph={graph!r} must end in one of "
                         f"{', '.join('.' + f for f in viz.FORMATS)}")
    walk = build(cfg)
    out = sys.stdout if file is None else file
    if not quiet:
        print(walk.header(), file=out)
        print(file=out)
        shown = range(len(walk.steps)) if only is None else [only - 1]
        for i in shown:
            print(walk.render_step(i), file=out)
            if step and only is None and i + 1 < len(walk.steps):
                out.flush()
                try:
                    input("press Enter for the next step ")
                except EOFError:
                    step = False  # no one at the keyboard: print the rest at once
        if only is None:
            print(walk.render_summary(), file=out)
    if markdown is not None:
        write_atomic(markdown, walk.to_markdown())
        if not quiet:
            print(f"wrote {markdown}", file=out)
    if graph is not None:
        written = viz.render(walk.output, graph, walk.names,
                             file=io.StringIO() if quiet else out)
        if not quiet:
            print(f"wrote the autograd graph of CondConv2d(x) to {written}", file=out)
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
    parser.add_argument("--only", type=int, metavar="N",
                        help=f"print only step N (1 to {len(BUILDERS)}); all are still checked")
    parser.add_argument("--graph", metavar="FILE",
                        help="draw the layer's autograd graph: FILE.svg/.png/.pdf through "
                             "Graphviz when installed, else FILE.dot")
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
                       args.markdown, only=args.only, graph=args.graph)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
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
