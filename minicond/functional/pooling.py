"""Pooling: max, average and global (adaptive to 1×1) average pooling over NCHW inputs.

Layer (docs/architecture.md): ``functional``. Both windowed poolings reuse the convolution's
``im2col``/``col2im`` kernels instead of kernels of their own. With K = kh·kw window offsets and L =
Ho·Wo windows,

    cols = im2col(x) viewed as [B, C, K, L]:  cols[b, c, k, l] is the k-th element of window l

so a pooling is a reduction over the K axis, and its gradient is ``col2im`` (the transpose of
``im2col``, which adds each column entry back where it was read from) of a [B, C, K, L] array
that says how much each window element receives. See ``docs/math/training_ops.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_int, check_pair, check_tensor
from ..autograd import Function
from ..backends.table import conv_output_size
from ..tensor import Tensor
from .basic import mean


def _window_cols(be, x, kernel, stride, padding, dilation):
    """im2col of x as [B, C, K, L] (the window axis K separate from the channels)."""
    B, C = x.shape[:2]
    cols = be.im2col(x, kernel, stride, padding, dilation)
    return be.reshape(cols, (B, C, kernel[0] * kernel[1], cols.shape[2]))


def _valid_mask(be, x_shape, dtype, kernel, stride, padding, dilation):
    """[1, 1, K, L]: 1 where a window element lies inside the input, 0 where it is padding."""
    ones = be.full((1, 1) + tuple(x_shape[2:]), 1.0, dtype)
    return _window_cols(be, ones, kernel, stride, padding, dilation)


class MaxPool2d(Function):
    """y[b, c, l] = max_k cols[b, c, k, l]  (padding never wins: it counts as −∞).

    The max is piecewise the identity on one element: with k* the first index of the
    maximum in window l (row-major over the window, as PyTorch picks on ties),

        ∂L/∂cols[b, c, k, l] = g[b, c, l] · [k = k*(b, c, l)]
        ∂L/∂x = col2im(∂L/∂cols)      (overlapping windows add their shares)

    im2col pads with zeros, so where the window overlaps the padding the forward adds
    (valid − 1)·F_max (F_max the dtype's largest finite value): valid elements are unchanged
    (+0) and padded ones become −F_max, which no finite input can lose to. (Only a dilated
    window can lie wholly in the padding; it then yields −F_max where PyTorch yields −∞.)
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation):
        be = ctx.backend
        B, C = x.shape[:2]
        Ho = conv_output_size(x.shape[2], kernel[0], stride[0], padding[0], dilation[0])
        Wo = conv_output_size(x.shape[3], kernel[1], stride[1], padding[1], dilation[1])
        cols = _window_cols(be, x, kernel, stride, padding, dilation)
        if padding != (0, 0):
            valid = _valid_mask(be, x.shape, x.dtype, kernel, stride, padding, dilation)
            one = be.full((), 1.0, x.dtype)
            lowest = be.full((), np.finfo(x.dtype).max, x.dtype)
            cols = be.add(cols, be.mul(be.sub(valid, one), lowest))
        y = be.max(cols, (2,), False)
        ctx.argmax = be.argmax(cols, 2)
        ctx.geometry = (x.shape, kernel, stride, padding, dilation)
        ctx.dtype = x.dtype
        return be.reshape(y, (B, C, Ho, Wo))

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        x_shape, kernel, stride, padding, dilation = ctx.geometry
        B, C = x_shape[:2]
        K = kernel[0] * kernel[1]
        L = g.shape[2] * g.shape[3]
        winner = be.reshape(be.astype(ctx.argmax, ctx.dtype), (B, C, 1, L))
        offsets = be.from_numpy(np.arange(K).reshape(1, 1, K, 1), ctx.dtype)
        onehot = be.eq(winner, offsets)                                   # [B, C, K, L]
        gcols = be.mul(onehot, be.reshape(g, (B, C, 1, L)))
        gcols = be.reshape(gcols, (B, C * K, L))
        return (be.col2im(gcols, x_shape, kernel, stride, padding, dilation),)


class AvgPool2d(Function):
    """y[b, c, l] = (1/n_l) Σ_k cols[b, c, k, l], the padding counting as zeros.

    n_l is K with ``count_include_pad``, the number of window elements inside the input
    without it, or a fixed ``divisor_override``. The map is linear with coefficient 1/n_l on
    every element of window l, so

        ∂L/∂cols[b, c, k, l] = g[b, c, l] / n_l,    ∂L/∂x = col2im(∂L/∂cols).
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, count_include_pad, divisor_override):
        be = ctx.backend
        B, C = x.shape[:2]
        dilation = (1, 1)
        Ho = conv_output_size(x.shape[2], kernel[0], stride[0], padding[0], 1)
        Wo = conv_output_size(x.shape[3], kernel[1], stride[1], padding[1], 1)
        cols = _window_cols(be, x, kernel, stride, padding, dilation)
        if divisor_override is not None:
            divisor = be.full((), divisor_override, x.dtype)
        elif count_include_pad or padding == (0, 0):
            divisor = be.full((), kernel[0] * kernel[1], x.dtype)
        else:
            valid = _valid_mask(be, x.shape, x.dtype, kernel, stride, padding, dilation)
            divisor = be.sum(valid, (2,), False)                          # [1, 1, L]
        ctx.divisor = divisor
        ctx.geometry = (x.shape, kernel, stride, padding, dilation)
        y = be.div(be.sum(cols, (2,), False), divisor)
        return be.reshape(y, (B, C, Ho, Wo))

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        x_shape, kernel, stride, padding, dilation = ctx.geometry
        B, C = x_shape[:2]
        K = kernel[0] * kernel[1]
        L = g.shape[2] * g.shape[3]
        share = be.div(be.reshape(g, (B, C, L)), ctx.divisor)
        gcols = be.broadcast_to(be.reshape(share, (B, C, 1, L)), (B, C, K, L))
        gcols = be.reshape(gcols, (B, C * K, L))
        return (be.col2im(gcols, x_shape, kernel, stride, padding, dilation),)


def _pool_geometry(fn: str, x: Tensor, kernel_size: Any, stride: Any, padding: Any,
                   dilation: Any) -> tuple[tuple[int, int], ...]:
    """Validated (kernel, stride, padding, dilation) pairs; PyTorch's rules: stride defaults
    to the kernel size and padding is at most half the kernel size."""
    kernel = check_pair(fn, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else check_pair(fn, "stride", stride, 1)
    pads = check_pair(fn, "padding", padding, 0)
    dil = check_pair(fn, "dilation", dilation, 1)
    for p, k in zip(pads, kernel, strict=True):
        if p > k // 2:
            raise ValueError(f"{fn}: padding={padding!r} must be at most half the kernel size "
                             f"{kernel}")
    for axis, size, k, s, p, d in (("height", x.shape[2], kernel[0], stride[0], pads[0], dil[0]),
                                   ("width", x.shape[3], kernel[1], stride[1], pads[1], dil[1])):
        if conv_output_size(size, k, s, p, d) < 1:
            raise ValueError(f"{fn}: input {axis} {size} with padding {p} is smaller than the "
                             f"dilated kernel {d * (k - 1) + 1}")
    return kernel, stride, pads, dil


def max_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> Tensor:
    """``torch.nn.functional.max_pool2d`` (``ceil_mode=False``): x [B, C, H, W]."""
    x = check_tensor("max_pool2d", "x", x, ndim=4)
    geometry = _pool_geometry("max_pool2d", x, kernel_size, stride, padding, dilation)
    return MaxPool2d.apply(x, *geometry)


def avg_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """``torch.nn.functional.avg_pool2d`` (``ceil_mode=False``): x [B, C, H, W]."""
    x = check_tensor("avg_pool2d", "x", x, ndim=4)
    kernel, stride, pads, _ = _pool_geometry("avg_pool2d", x, kernel_size, stride, padding, 1)
    if divisor_override is not None:
        divisor_override = check_int("avg_pool2d", "divisor_override", divisor_override, 1)
    return AvgPool2d.apply(x, kernel, stride, pads, bool(count_include_pad), divisor_override)


def adaptive_avg_pool2d(x: Tensor, output_size: Any = 1) -> Tensor:
    """``torch.nn.functional.adaptive_avg_pool2d`` for ``output_size=1``: the mean over the
    spatial axes, [B, C, H, W] -> [B, C, 1, 1] (its gradient is ``Mean``'s: g/(H·W) on every
    position)."""
    x = check_tensor("adaptive_avg_pool2d", "x", x, ndim=4)
    if check_pair("adaptive_avg_pool2d", "output_size", output_size, 1) != (1, 1):
        raise ValueError(f"adaptive_avg_pool2d: output_size={output_size!r} is not supported; "
                         "only 1 (global average pooling) is")
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"adaptive_avg_pool2d: x has an empty spatial size {x.shape}")
    return mean(x, (2, 3), keepdim=True)
