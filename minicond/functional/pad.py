"""Spatial padding with the modes zeros, reflect, replicate and circular.

Layer (docs/architecture.md): ``functional``. Along one axis of length n, every mode maps padded
position i to a source position s(i) (or to nothing, for zeros):

    zeros      s(i) = i            for 0 <= i < n, nothing outside
    reflect    s(i) = |i|, then 2(n−1) − s for s > n−1      (edge not repeated)
    replicate  s(i) = clamp(i, 0, n−1)
    circular   s(i) = i mod n

so padding is a linear map y = P_h · x · P_wᵀ with 0/1 matrices P. Its backward is the
transpose, gx = P_hᵀ · g · P_w: each input pixel receives the sum of the gradients of every
padded pixel that copied it.
"""

from __future__ import annotations

from typing import Any

from .._validate import check_choice, check_int, check_tensor
from ..autograd import Function
from ..backends.geometry import PAD_MODES
from ..tensor import Tensor


class Pad(Function):
    """y = P_h x P_wᵀ;  ∂L/∂x = P_hᵀ g P_w  (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, pads, mode):
        ctx.pads, ctx.mode = pads, mode
        return ctx.backend.pad(x, pads, mode)

    @staticmethod
    def backward(ctx, g):
        return (ctx.backend.pad_backward(g, ctx.pads, ctx.mode),)


def check_pads(fn: str, x_shape: tuple[int, ...], pads: tuple[int, int, int, int],
               mode: str) -> None:
    """Reject pads a mode cannot make: reflect needs pad < size, circular pad <= size."""
    H, W = x_shape[-2:]
    for size, before, after, axis in ((H, pads[0], pads[1], "height"),
                                      (W, pads[2], pads[3], "width")):
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(f"{fn}: reflect padding ({before}, {after}) must be smaller than "
                             f"the input {axis} {size}")
        if mode == "circular" and max(before, after) > size:
            raise ValueError(f"{fn}: circular padding ({before}, {after}) must not exceed "
                             f"the input {axis} {size}")
        if mode in ("replicate", "reflect", "circular") and size == 0 and before + after:
            raise ValueError(f"{fn}: {mode} padding needs a non-empty input {axis}")


def pad(x: Tensor, pad: Any, mode: str = "zeros") -> Tensor:
    """Pad the last two axes of a 4-D tensor.

    ``pad`` follows ``torch.nn.functional.pad``: ``(left, right, top, bottom)``, or one int
    for all four sides. ``mode`` is zeros (``"constant"`` is accepted as its alias), reflect,
    replicate or circular.
    """
    x = check_tensor("pad", "x", x, ndim=4)
    mode = "zeros" if mode == "constant" else mode
    check_choice("pad", "mode", mode, PAD_MODES)
    if isinstance(pad, (tuple, list)):
        if len(pad) != 4:
            raise ValueError(f"pad: pad={pad!r} must be an int or (left, right, top, bottom)")
        left, right, top, bottom = (check_int("pad", "pad", p, 0) for p in pad)
    else:
        left = right = top = bottom = check_int("pad", "pad", pad, 0)
    pads = (top, bottom, left, right)
    check_pads("pad", x.shape, pads, mode)
    return Pad.apply(x, pads, mode)
