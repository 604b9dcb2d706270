"""Normalisation: batch norm over the channel axis (axis 1) of [B, C, ...] inputs, layer norm
over the trailing axes, group norm over groups of channels of each example.

Layer (docs/architecture.md): ``functional``. All three standardise x over some set of N values,
x̂ = (x − μ)/√(σ² + ε), and share one gradient of that step (``standardize_backward``). The
derivations are in the Functions' docstrings, in ``docs/math/training_ops.md`` (batch norm)
and ``docs/math/normalization.md`` (layer and group norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import check_float, check_int, check_tensor
from ..autograd import Function
from ..tensor import Tensor


def moments(be, x, axes, n: int):
    """(μ, σ²) of x over ``axes`` (kept as size-1 axes), σ² biased: Σ (x − μ)²/N."""
    count = be.full((), n, x.dtype)
    mu = be.div(be.sum(x, axes, True), count)
    centred = be.sub(x, mu)
    return mu, be.div(be.sum(be.mul(centred, centred), axes, True), count)


def standardize_backward(be, g_hat, x_hat, inv_std, axes, n: int):
    """∂L/∂x of x̂ = (x − μ)·s, s = 1/√(σ² + ε), with μ and σ² taken over ``axes`` (N values)
    and ĝ = ∂L/∂x̂:  ∂L/∂x = (s/N)·(N·ĝ − Σ ĝ − x̂·Σ ĝ·x̂)."""
    count = be.full((), n, g_hat.dtype)
    sum_g = be.sum(g_hat, axes, True)
    sum_gx = be.sum(be.mul(g_hat, x_hat), axes, True)
    inner = be.sub(be.sub(be.mul(count, g_hat), sum_g), be.mul(x_hat, sum_gx))
    return be.mul(be.div(inv_std, count), inner)


@dataclass
class RunningStats:
    """The buffers a training-mode batch norm updates in place, as PyTorch does:
    ``mean ← (1 − m)·mean + m·μ`` and ``var ← (1 − m)·var + m·σ²·N/(N − 1)``."""

    mean: Tensor
    var: Tensor
    momentum: float


class BatchNorm(Function):
    """y = γ·x̂ + β with x̂ = (x − μ)/√(σ² + ε), per channel c, over N = B·H·W values.

    Training (batch statistics): μ = (1/N) Σ x,  σ² = (1/N) Σ (x − μ)² (biased),
    s = 1/√(σ² + ε). μ and σ² depend on x, so with ĝ = g·γ (the gradient reaching x̂)

        ∂L/∂σ² = −½ s³ Σ ĝ·(x − μ),      ∂L/∂μ = −s Σ ĝ  (the σ² term's Σ(x − μ) is 0)
        ∂L/∂x  = ĝ·s + ∂L/∂σ² · 2(x − μ)/N + ∂L/∂μ / N
               = (s/N) · (N·ĝ − Σ ĝ − x̂ · Σ ĝ·x̂)

    Evaluation (running statistics, constants): x̂ = (x − μ_run)·s_run, ∂L/∂x = ĝ·s_run.
    In both modes  ∂L/∂γ = Σ g·x̂  and  ∂L/∂β = Σ g  (sums over every axis but the channel).

    Two fused kernels of the backend compute it: ``batch_norm_forward`` gives y and the
    per-channel μ, σ² and s; only x, μ and s are kept, and ``batch_norm_backward``
    recomputes x̂ from them while it forms Σ g and Σ g·x̂, then ∂L/∂x
    (= γs·(g − (Σ g + x̂·Σ g·x̂)/N) in training, since Σ ĝ = γ Σ g and Σ ĝ·x̂ = γ Σ g·x̂).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, use_batch_stats, eps, running_mean, running_var,
                running=None):
        be = ctx.backend
        y, mu, var, inv_std = be.batch_norm_forward(x, weight, bias, running_mean,
                                                    running_var, eps)
        if use_batch_stats and running is not None:
            _update_running(be, running, mu, var, int(np.prod(x.shape)) // x.shape[1])
        ctx.save_for_backward(x, weight, mu, inv_std)
        ctx.batch = use_batch_stats
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mu, inv_std = ctx.saved
        gx, gw, gb = ctx.backend.batch_norm_backward(g, x, weight, mu, inv_std, ctx.batch)
        return (gx if ctx.needs_input_grad[0] else None,
                gw if ctx.needs_input_grad[1] else None,
                gb if ctx.needs_input_grad[2] else None)


def _update_running(be, running: RunningStats, mu, var, n: int) -> None:
    """Blend the batch statistics into the running buffers (σ² unbiased, as PyTorch)."""
    C = running.mean.shape[0]
    m = be.full((), running.momentum, mu.dtype)
    keep = be.full((), 1.0 - running.momentum, mu.dtype)
    unbiased = be.mul(be.reshape(var, (C,)), be.full((), n / (n - 1), var.dtype))
    running.mean.data = be.add(be.mul(m, be.reshape(mu, (C,))), be.mul(keep, running.mean.data))
    running.var.data = be.add(be.mul(m, unbiased), be.mul(keep, running.var.data))


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.batch_norm``: x [B, C, ...] normalised per channel.

    Batch statistics are used when ``training`` or when there are no running statistics;
    in training, given running statistics are updated in place (never differentiated).
    """
    fn = "batch_norm"
    x = check_tensor(fn, "x", x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must be at least 2-D [B, C, ...], got shape {x.shape}")
    C = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(fn, name, t, ndim=1)
            if t.shape[0] != C:
                raise ValueError(f"{fn}: {name} has shape {t.shape}; expected ({C},) for "
                                 f"x with {C} channels")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must be given together")
    eps = check_float(fn, "eps", eps, 0.0, float("inf"), low_open=True, high_open=True)
    momentum = check_float(fn, "momentum", momentum, 0.0, 1.0)
    use_batch_stats = bool(training) or running_mean is None
    if use_batch_stats and x.numel() // max(C, 1) <= 1:
        raise ValueError(f"{fn}: training needs more than one value per channel; x has shape "
                         f"{x.shape}")
    running = None
    if bool(training) and running_mean is not None:
        for name, t in (("running_mean", running_mean), ("running_var", running_var)):
            if t.backend is not x.backend or t.dtype != x.dtype:
                raise ValueError(f"{fn}: {name} is {t.dtype} on {t.backend.name!r}; x is "
                                 f"{x.dtype} on {x.backend.name!r}")
        running = RunningStats(running_mean, running_var, momentum)
    stats = (None, None) if use_batch_stats else (running_mean, running_var)
    return BatchNorm.apply(x, weight, bias, use_batch_stats, eps, *stats, running=running)


class Normalize(Function):
    """y = γ ⊙ x̂ + β, with x standardised over the last axis of its view ``stat_shape``
    [M, N] (layer norm: M leading positions × N trailing values; group norm: [B, G, N] with
    N = C/G·H·W), and γ, β broadcast through ``affine_shape``:

        x̂ = (x − μ)·s,  μ = (1/N) Σ x,  σ² = (1/N) Σ (x − μ)²,  s = 1/√(σ² + ε)

    With ĝ = g ⊙ γ, the same derivation as batch norm's (the statistics are now per row of
    the view instead of per channel) gives

        ∂L/∂x = (s/N)·(N·ĝ − Σ ĝ − x̂·Σ ĝ·x̂)      (sums over the N values of each row)
        ∂L/∂γ = Σ g ⊙ x̂,   ∂L/∂β = Σ g          (sums over the axes γ is broadcast along)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stat_shape, affine_shape, eps):
        be = ctx.backend
        xr = be.reshape(x, stat_shape)
        axes = (len(stat_shape) - 1,)
        mu, var = moments(be, xr, axes, stat_shape[-1])
        inv_std = be.div(be.full((), 1.0, x.dtype),
                         be.sqrt(be.add(var, be.full((), eps, x.dtype))))
        x_hat = be.reshape(be.mul(be.sub(xr, mu), inv_std), x.shape)
        y = x_hat
        if weight is not None:
            y = be.mul(y, be.reshape(weight, affine_shape))
        if bias is not None:
            y = be.add(y, be.reshape(bias, affine_shape))
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.stat_shape, ctx.affine_shape = stat_shape, affine_shape
        ctx.param_shape = next((p.shape for p in (weight, bias) if p is not None), None)
        return y

    @staticmethod
    def backward(ctx, g):
        x_hat, inv_std, weight = ctx.saved
        be, stat_shape = ctx.backend, ctx.stat_shape
        affine_axes = tuple(i for i, n in enumerate(ctx.affine_shape) if n == 1)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            g_hat = g if weight is None else be.mul(g, be.reshape(weight, ctx.affine_shape))
            gx = standardize_backward(be, be.reshape(g_hat, stat_shape),
                                      be.reshape(x_hat, stat_shape), inv_std,
                                      (len(stat_shape) - 1,), stat_shape[-1])
            gx = be.reshape(gx, g.shape)
        if ctx.needs_input_grad[1]:
            gw = be.reshape(be.sum(be.mul(g, x_hat), affine_axes, True), ctx.param_shape)
        if ctx.needs_input_grad[2]:
            gb = be.reshape(be.sum(g, affine_axes, True), ctx.param_shape)
        return gx, gw, gb, None, None, None


def _check_affine(fn: str, name: str, t: Tensor | None, shape: tuple[int, ...]) -> None:
    if t is not None:
        check_tensor(fn, name, t)
        if t.shape != shape:
            raise ValueError(f"{fn}: {name} has shape {t.shape}; expected {shape}")


def layer_norm(x: Tensor, normalized_shape: int | tuple[int, ...] | list[int],
               weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.layer_norm``: x standardised over its trailing axes, which must
    equal ``normalized_shape``; ``weight``/``bias`` of that shape scale and shift."""
    fn = "layer_norm"
    x = check_tensor(fn, "x", x)
    dims = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    if not isinstance(dims, (tuple, list)) or not dims or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise ValueError(f"{fn}: normalized_shape={normalized_shape!r} must be a positive int "
                         "or a non-empty sequence of positive ints")
    dims = tuple(dims)
    k = len(dims)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != dims:
        raise ValueError(f"{fn}: x has shape {x.shape}, whose trailing axes must be "
                         f"normalized_shape={dims}")
    _check_affine(fn, "weight", weight, dims)
    _check_affine(fn, "bias", bias, dims)
    eps = check_float(fn, "eps", eps, 0.0, float("inf"), low_open=True, high_open=True)
    lead = x.shape[:x.ndim - k]
    stat_shape = (int(np.prod(lead, dtype=np.int64)), int(np.prod(dims)))
    return Normalize.apply(x, weight, bias, stat_shape, (1,) * len(lead) + dims, eps)


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.group_norm``: x [B, C, ...] with its C channels cut into
    ``num_groups`` groups G, each example's group standardised over its C/G channels and every
    position; ``weight``/``bias`` [C] scale and shift per channel."""
    fn = "group_norm"
    x = check_tensor(fn, "x", x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must be at least 2-D [B, C, ...], got shape {x.shape}")
    G = check_int(fn, "num_groups", num_groups, 1)
    B, C = x.shape[:2]
    if C % G:
        raise ValueError(f"{fn}: num_groups={G} must divide the channels C={C} of x "
                         f"(shape {x.shape})")
    _check_affine(fn, "weight", weight, (C,))
    _check_affine(fn, "bias", bias, (C,))
    eps = check_float(fn, "eps", eps, 0.0, float("inf"), low_open=True, high_open=True)
    n = C // G * int(np.prod(x.shape[2:], dtype=np.int64))
    return Normalize.apply(x, weight, bias, (B, G, n), (1, C) + (1,) * (x.ndim - 2), eps)
