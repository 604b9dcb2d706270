"""Activations beyond ``basic.py``'s ReLU and sigmoid: SiLU (swish), tanh, GELU (exact and
tanh-approximated), leaky ReLU, softplus and hard swish.

Layer (docs/architecture.md): ``functional``. Notation: ``g`` is ∂L/∂y. Each Function's docstring
holds its derivation; ``docs/math/activations.md`` collects them. The selections ("x if x > 0 else
…") are written as products with 0/1 masks from the ``gt`` kernel, so no backend needs a
``where`` kernel; where a masked-out branch could be infinite, its argument is clipped first
so that no 0·∞ = NaN appears.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .._validate import check_choice, check_tensor
from ..autograd import Function
from ..tensor import Tensor


class SiLU(Function):
    """y = a·σ(a)  (swish, the EfficientNet activation).

    With s = σ(a) and σ' = s(1 − s), the product rule gives

        ∂y/∂a = s + a·s(1 − s) = s·(1 + a·(1 − s)),   so   ∂L/∂a = g·s·(1 + a(1 − s)).

    Forward keeps s (the ``silu`` kernel returns it beside y, computed as the stable sigmoid
    kernel does) so backward needs no exp.
    """

    @staticmethod
    def forward(ctx, a):
        y, s = ctx.backend.silu(a)
        ctx.save_for_backward(a, s)
        return y

    @staticmethod
    def backward(ctx, g):
        a, s = ctx.saved
        be = ctx.backend
        one = be.full((), 1.0, a.dtype)
        slope = be.mul(s, be.add(one, be.mul(a, be.sub(one, s))))
        return (be.mul(g, slope),)


class Tanh(Function):
    """y = tanh a;  since tanh' = 1 − tanh², ∂L/∂a = g·(1 − y²) (from the saved output)."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.backend.tanh(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        be = ctx.backend
        return (be.mul(g, be.sub(be.full((), 1.0, y.dtype), be.mul(y, y))),)


GELU_TANH_COEFF = 0.044715  # the cubic coefficient of the tanh approximation (Hendrycks & Gimpel)


class GELU(Function):
    """y = a·Φ(a), Φ the standard normal CDF; ``approximate="tanh"`` replaces Φ.

    Exact (``"none"``): Φ(a) = ½(1 + erf(a/√2)) and Φ' = φ, φ(a) = e^{−a²/2}/√(2π), so

        ∂y/∂a = Φ(a) + a·φ(a).

    Tanh form: with k = √(2/π), u = k(a + c·a³), c = 0.044715 and t = tanh u,

        y = ½a(1 + t),   ∂y/∂a = ½(1 + t) + ½a·(1 − t²)·k(1 + 3c·a²).

    Forward keeps a and Φ(a) (or t), so backward recomputes only the cheap factors.
    """

    @staticmethod
    def forward(ctx, a, approximate):
        be = ctx.backend
        half = be.full((), 0.5, a.dtype)
        if approximate == "none":
            cdf = be.mul(half, be.add(be.full((), 1.0, a.dtype),
                                      be.erf(be.mul(a, be.full((), math.sqrt(0.5), a.dtype)))))
            ctx.save_for_backward(a, cdf)
            ctx.approximate = approximate
            return be.mul(a, cdf)
        cube = be.mul(be.full((), GELU_TANH_COEFF, a.dtype), be.mul(a, be.mul(a, a)))
        t = be.tanh(be.mul(be.full((), math.sqrt(2.0 / math.pi), a.dtype), be.add(a, cube)))
        ctx.save_for_backward(a, t)
        ctx.approximate = approximate
        return be.mul(be.mul(half, a), be.add(be.full((), 1.0, a.dtype), t))

    @staticmethod
    def backward(ctx, g):
        a, saved = ctx.saved
        be = ctx.backend
        one = be.full((), 1.0, a.dtype)
        if ctx.approximate == "none":
            cdf = saved
            pdf = be.mul(be.full((), 1.0 / math.sqrt(2.0 * math.pi), a.dtype),
                         be.exp(be.mul(be.full((), -0.5, a.dtype), be.mul(a, a))))
            return (be.mul(g, be.add(cdf, be.mul(a, pdf))),)
        t = saved
        half = be.full((), 0.5, a.dtype)
        du = be.mul(be.full((), math.sqrt(2.0 / math.pi), a.dtype),
                    be.add(one, be.mul(be.full((), 3.0 * GELU_TANH_COEFF, a.dtype),
                                       be.mul(a, a))))
        slope = be.add(be.mul(half, be.add(one, t)),
                       be.mul(be.mul(half, a), be.mul(be.sub(one, be.mul(t, t)), du)))
        return (be.mul(g, slope),)


class LeakyReLU(Function):
    """y = a if a > 0 else α·a.  With the slope m = [a > 0] + α·[a ≤ 0], y = m·a and
    ∂L/∂a = g·m; at a = 0 the slope α is taken, as PyTorch does."""

    @staticmethod
    def forward(ctx, a, negative_slope):
        be = ctx.backend
        positive = be.gt(a, be.full((), 0.0, a.dtype))
        slope = be.add(be.mul(positive, be.full((), 1.0 - negative_slope, a.dtype)),
                       be.full((), negative_slope, a.dtype))
        ctx.save_for_backward(slope)
        return be.mul(a, slope)

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.mul(g, ctx.saved[0]),)


class Softplus(Function):
    """y = (1/β)·log(1 + e^{βa}), and y = a where βa > threshold (PyTorch's linear regime).

    With z = βa, log(1 + eᶻ) = max(z, 0) + log1p(e^{−|z|}): the exp never overflows and
    log1p keeps the tiny tail of very negative z. Past the threshold the log1p term is below
    e^{−threshold} and is dropped, so y = max(z, 0)/β there (written this way, not as a
    selection of a, so a = ±∞ gives ±∞·[…] without 0·∞).

        ∂y/∂a = e^{z}/(1 + e^{z}) = σ(z) for z ≤ threshold, and 1 above it.
    """

    @staticmethod
    def forward(ctx, a, beta, threshold):
        be = ctx.backend
        z = be.mul(a, be.full((), beta, a.dtype))
        linear = be.gt(z, be.full((), threshold, a.dtype))             # 1 past the threshold
        one = be.full((), 1.0, a.dtype)
        tail = be.log1p(be.exp(be.neg(be.maximum(z, be.neg(z)))))      # log1p(e^{−|z|})
        y = be.add(be.relu(z), be.mul(be.sub(one, linear), tail))
        ctx.save_for_backward(z, linear)
        return be.div(y, be.full((), beta, a.dtype))

    @staticmethod
    def backward(ctx, g):
        z, linear = ctx.saved
        be = ctx.backend
        one = be.full((), 1.0, z.dtype)
        slope = be.add(linear, be.mul(be.sub(one, linear), be.sigmoid(z)))
        return (be.mul(g, slope),)


class Hardswish(Function):
    """y = a·min(max(a + 3, 0), 6)/6  (MobileNetV3's hard swish).

    Piecewise: 0 for a ≤ −3, a(a + 3)/6 between, a from 3 on, so

        ∂y/∂a = 0 (a ≤ −3),  a/3 + ½ (−3 < a < 3),  1 (a ≥ 3),

    with PyTorch's choice at the kinks (the outer pieces' slopes 0 and 1). The middle piece
    is evaluated at a clipped to [−3, 3] so that its mask's zeros never meet an infinite a.
    """

    @staticmethod
    def forward(ctx, a):
        be = ctx.backend
        three, six = be.full((), 3.0, a.dtype), be.full((), 6.0, a.dtype)
        ctx.save_for_backward(a)
        gate = be.minimum(be.relu(be.add(a, three)), six)
        return be.div(be.mul(a, gate), six)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        be = ctx.backend
        three = be.full((), 3.0, a.dtype)
        one = be.full((), 1.0, a.dtype)
        above = be.sub(one, be.gt(three, a))                           # a ≥ 3
        inside = be.mul(be.gt(a, be.neg(three)), be.gt(three, a))      # −3 < a < 3
        clipped = be.minimum(be.maximum(a, be.neg(three)), three)
        middle = be.add(be.div(clipped, three), be.full((), 0.5, a.dtype))
        return (be.mul(g, be.add(above, be.mul(inside, middle))),)


def _real(fn: str, name: str, value: Any) -> float:
    """A finite real number (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name}={value!r} must be a real number")
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name}={value!r} must be finite")
    return float(value)


def silu(x: Tensor) -> Tensor:
    """``torch.nn.functional.silu``: x·σ(x), elementwise."""
    return SiLU.apply(check_tensor("silu", "x", x))


def tanh(x: Tensor) -> Tensor:
    """``torch.tanh``, elementwise."""
    return Tanh.apply(check_tensor("tanh", "x", x))


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """``torch.nn.functional.gelu``: x·Φ(x) with the exact normal CDF (``"none"``, the
    default) or its tanh approximation (``"tanh"``)."""
    x = check_tensor("gelu", "x", x)
    return GELU.apply(x, check_choice("gelu", "approximate", approximate, ("none", "tanh")))


def leaky_relu(x: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``torch.nn.functional.leaky_relu``: x where x > 0, else ``negative_slope``·x.
    ``inplace=True`` is refused: minicond tensors are never modified in place."""
    x = check_tensor("leaky_relu", "x", x)
    slope = _real("leaky_relu", "negative_slope", negative_slope)
    if inplace:
        raise ValueError("leaky_relu: inplace=True is not supported (autograd keeps the input "
                         "for backward); use the returned tensor")
    return LeakyReLU.apply(x, slope)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``torch.nn.functional.softplus``: log(1 + e^{βx})/β, and x where βx > threshold."""
    x = check_tensor("softplus", "x", x)
    b = _real("softplus", "beta", beta)
    if b == 0.0:
        raise ValueError("softplus: beta=0 divides by zero; expected a nonzero real number")
    return Softplus.apply(x, b, _real("softplus", "threshold", threshold))


def hardswish(x: Tensor, inplace: bool = False) -> Tensor:
    """``torch.nn.functional.hardswish``: x·min(max(x + 3, 0), 6)/6."""
    x = check_tensor("hardswish", "x", x)
    if inplace:
        raise ValueError("hardswish: inplace=True is not supported (autograd keeps the input "
                         "for backward); use the returned tensor")
    return Hardswish.apply(x)
