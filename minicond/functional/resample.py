"""Resizing feature maps: ``interpolate`` (modes "nearest" and "bilinear"), PyTorch's rules.

Layer (docs/architecture.md): ``functional``. Derivation in the ``Interpolate`` docstring and in
``docs/math/resampling.md``.

Both modes are separable: every output row oh reads input rows through one row of a matrix
A_h [Ho, H], every output column ow through one row of A_w [Wo, W], so for each (b, c)

    y = A_h · x · A_wᵀ

"nearest" puts a single 1 in each row of A (at the source index); "bilinear" puts the two
linear weights 1 − λ and λ there. The matrices depend only on the sizes and options, are built
here in NumPy, and the resize runs as two ``matmul`` kernels on any backend.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._validate import check_choice, check_tensor
from ..autograd import Function
from ..tensor import Tensor

INTERPOLATE_MODES = ("nearest", "bilinear")


def nearest_source(n_in: int, n_out: int, scale_factor: float | None) -> np.ndarray:
    """PyTorch's "nearest" source index of each output index: floor(o · s) clipped to n_in − 1,
    with s = 1/scale_factor when a scale factor is used, else n_in/n_out, computed in float32
    as PyTorch does. Equal sizes copy; an output of exactly twice the input takes o // 2."""
    o = np.arange(n_out)
    if n_out == n_in:
        return o
    if n_out == 2 * n_in:
        return o // 2
    s = np.float32(1.0 / scale_factor) if scale_factor else np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(o.astype(np.float32) * s).astype(np.int64), n_in - 1)


def linear_weights(n_in: int, n_out: int, scale_factor: float | None, align_corners: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, λ) per output index for "bilinear" along one axis, as PyTorch: with
    align_corners the source is o·(n_in − 1)/(n_out − 1); without, (o + ½)·s − ½ clamped at 0,
    s = 1/scale_factor or n_in/n_out. i0 = ⌊src⌋, i1 = min(i0 + 1, n_in − 1), λ = src − i0."""
    o = np.arange(n_out, dtype=np.float64)
    if align_corners:
        s = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = o * s
    else:
        s = 1.0 / scale_factor if scale_factor else n_in / n_out
        src = np.maximum((o + 0.5) * s - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, src - i0


def resize_matrix(n_in: int, n_out: int, mode: str, scale_factor: float | None,
                  align_corners: bool) -> np.ndarray:
    """A [n_out, n_in] (float64): row o holds the weights output index o gives each input."""
    a = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":
        a[rows, nearest_source(n_in, n_out, scale_factor)] = 1.0
    else:
        i0, i1, lam = linear_weights(n_in, n_out, scale_factor, align_corners)
        np.add.at(a, (rows, i0), 1.0 - lam)
        np.add.at(a, (rows, i1), lam)
    return a


class Interpolate(Function):
    """y = A_h · x · A_wᵀ per (b, c), with constant resize matrices A_h [Ho, H], A_w [Wo, W].

    y is linear in x: y[oh, ow] = Σ_{h, w} A_h[oh, h] · x[h, w] · A_w[ow, w], so

        ∂L/∂x[h, w] = Σ_{oh, ow} A_h[oh, h] · gy[oh, ow] · A_w[ow, w],  i.e.  gx = A_hᵀ · gy · A_w

    For "nearest" each gy[oh, ow] is added to the one input pixel it was copied from (a
    scatter-add); for "bilinear" it is shared out with the same weights (1 − λ, λ) per axis.
    """

    @staticmethod
    def forward(ctx, x, a_h, a_w):
        be = ctx.backend
        ctx.save_for_backward(a_h, a_w)
        a_w_t = be.permute(a_w, (1, 0))
        return be.matmul(a_h, be.matmul(x, a_w_t))

    @staticmethod
    def backward(ctx, g):
        a_h, a_w = ctx.saved
        be = ctx.backend
        return be.matmul(be.permute(a_h, (1, 0)), be.matmul(g, a_w)), None, None


def _pair_of(fn: str, name: str, value: Any, kind: type, positive: bool = True) -> tuple:
    """An int/float or a pair of them, each positive, as a pair."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{fn}: {name}={value!r} must be a number or a pair of numbers "
                         "(height, width)")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise TypeError(f"{fn}: {name}={value!r} must hold "
                            f"{'ints' if kind is numbers.Integral else 'real numbers'}")
        if positive and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{fn}: {name}={value!r} must be positive and finite")
        out.append(int(v) if kind is numbers.Integral else float(v))
    return tuple(out)


def interpolate(x: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None) -> Tensor:
    """``torch.nn.functional.interpolate`` for x [B, C, H, W], modes "nearest" and "bilinear".

    Give ``size`` (Ho, Wo) or ``scale_factor``, not both. With a scale factor the output is
    ⌊H·scale⌋ × ⌊W·scale⌋ and, as in PyTorch, source positions use 1/scale_factor unless
    ``recompute_scale_factor=True`` (then they use H/Ho, as with ``size``). "nearest" takes
    the source ⌊oh·s⌋ (PyTorch's "nearest", not "nearest-exact"); ``align_corners`` (default
    False) applies to "bilinear" only.
    """
    fn = "interpolate"
    x = check_tensor(fn, "x", x, ndim=4)
    mode = check_choice(fn, "mode", mode, INTERPOLATE_MODES)
    if mode == "nearest" and align_corners is not None:
        raise ValueError(f"{fn}: align_corners={align_corners!r} can only be set with mode "
                         "'bilinear'")
    align = bool(align_corners) if align_corners is not None else False
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{fn}: give exactly one of size and scale_factor, got size={size!r} "
                         f"and scale_factor={scale_factor!r}")
    H, W = x.shape[2:]
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(f"{fn}: recompute_scale_factor=True needs scale_factor, not size")
        out_size = _pair_of(fn, "size", size, numbers.Integral)
        scales: tuple[float | None, float | None] = (None, None)
    else:
        scales = _pair_of(fn, "scale_factor", scale_factor, numbers.Real)
        out_size = tuple(int(math.floor(float(n) * s)) for n, s in zip((H, W), scales,
                                                                          strict=True))
        if min(out_size) < 1:
            raise ValueError(f"{fn}: scale_factor={scale_factor!r} makes the output "
                             f"{out_size[0]}x{out_size[1]} from {H}x{W}; expected at least "
                             "1x1")
        if recompute_scale_factor:
            scales = (None, None)
    if min(H, W) < 1:
        raise ValueError(f"{fn}: x has shape {x.shape}; expected H and W of at least 1")
    mats = [Tensor(x.backend.from_numpy(resize_matrix(n, m, mode, s, align), x.dtype),
                   x.backend)
            for n, m, s in zip((H, W), out_size, scales, strict=True)]
    return Interpolate.apply(x, *mats)
