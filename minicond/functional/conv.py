"""2-D convolution (cross-correlation, as in PyTorch), NCHW, with stride, padding, dilation
and groups.

Layer: ``functional``. With x̃ the zero-padded input and g groups,

    y[b, o, i, j] = bias[o]
                    + Σ_{c ∈ group(o)} Σ_{u, v} K[o, c, u, v] · x̃[b, c, i·sh + u·dh, j·sw + v·dw]

Written as matrices (im2col): cols_b = im2col(x̃_b) is [Cin·kh·kw, Ho·Wo] and y_b = K · cols_b
(per group). Both gradients are transposes of the two linear maps in that product:

    ∂L/∂K    = Σ_b g_b · cols_bᵀ               (a correlation of x with g)
    ∂L/∂x    = col2im(Kᵀ · g_b)                (a transposed convolution of g with K)
    ∂L/∂bias = Σ_{b, i, j} g[b, :, i, j]

See ``docs/math/conv2d.md`` for the derivation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._validate import check_int, check_pair, check_tensor
from ..autograd import Function
from ..backends.table import conv_output_size
from ..tensor import Tensor


@dataclass(frozen=True)
class ConvGeometry:
    """Validated convolution parameters.

    ``pads`` is ``(top, bottom, left, right)``; when it is symmetric the kernel pads by itself
    (``kernel_padding``), otherwise (``padding="same"`` with an even dilated kernel) the input
    is zero-padded explicitly first and the kernel uses no padding.
    """

    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int

    @property
    def symmetric(self) -> bool:
        top, bottom, left, right = self.pads
        return top == bottom and left == right

    @property
    def kernel_padding(self) -> tuple[int, int]:
        return (self.pads[0], self.pads[2]) if self.symmetric else (0, 0)


def resolve_padding(fn: str, padding: Any, kernel: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, ...]:
    """``padding`` (int, pair, "same", "valid") as ``(top, bottom, left, right)``.

    "same" pads d·(k−1) in total per axis, the odd element at the bottom/right (as PyTorch).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"{fn}: padding={padding!r} must be an int, a pair, 'same' or "
                             "'valid'")
        if stride != (1, 1):
            raise ValueError(f"{fn}: padding='same' needs stride=1, got stride={stride}")
        out = []
        for k, d in zip(kernel, dilation, strict=True):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    ph, pw = check_pair(fn, "padding", padding, 0)
    return (ph, ph, pw, pw)


def conv_geometry(fn: str, x_shape: tuple[int, ...], weight_shape: tuple[int, ...],
                  stride: Any, padding: Any, dilation: Any, groups: Any) -> ConvGeometry:
    """Check a convolution's arguments against the shapes of x and of one kernel
    ``[Cout, Cin/g, kh, kw]``; raise a ValueError/TypeError naming the argument."""
    B, Cin, H, W = x_shape
    Cout, cin_per_group, kh, kw = weight_shape
    stride = check_pair(fn, "stride", stride, 1)
    dilation = check_pair(fn, "dilation", dilation, 1)
    groups = check_int(fn, "groups", groups, 1)
    if Cin % groups:
        raise ValueError(f"{fn}: groups={groups} must divide in_channels={Cin}")
    if Cout % groups:
        raise ValueError(f"{fn}: groups={groups} must divide out_channels={Cout}")
    if cin_per_group * groups != Cin:
        raise ValueError(f"{fn}: weight expects {cin_per_group * groups} input channels "
                         f"({cin_per_group} per group × groups={groups}); x has {Cin}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: kernel size ({kh}, {kw}) must be positive")
    pads = resolve_padding(fn, padding, (kh, kw), stride, dilation)
    for size, before, after, k, s, d, axis in ((H, pads[0], pads[1], kh, stride[0],
                                                dilation[0], "height"),
                                               (W, pads[2], pads[3], kw, stride[1],
                                                dilation[1], "width")):
        if size + before + after < d * (k - 1) + 1:
            raise ValueError(f"{fn}: the dilated kernel {axis} {d * (k - 1) + 1} is larger "
                             f"than the padded input {axis} {size + before + after}")
        if conv_output_size(size + before + after, k, s, 0, d) < 1:  # pragma: no cover
            raise ValueError(f"{fn}: empty output along {axis}")
    return ConvGeometry(stride, pads, dilation, groups)


def conv_forward(be, x, kernel, geo: ConvGeometry):
    """y = conv(x, K) for a shared or per-example K; returns (y, the input the kernel saw)."""
    if not geo.symmetric:
        x = be.pad(x, geo.pads, "zeros")
    y = be.conv2d_forward(x, kernel, geo.stride, geo.kernel_padding, geo.dilation, geo.groups)
    return y, x


def conv_backward_input(be, g, kernel, x_shape, geo: ConvGeometry):
    """∂L/∂x: the transposed convolution of g with K (and the transpose of explicit padding)."""
    if geo.symmetric:
        return be.conv2d_backward_input(g, kernel, x_shape, geo.stride, geo.kernel_padding,
                                        geo.dilation, geo.groups)
    B, C, H, W = x_shape
    top, bottom, left, right = geo.pads
    padded = (B, C, H + top + bottom, W + left + right)
    gxp = be.conv2d_backward_input(g, kernel, padded, geo.stride, (0, 0), geo.dilation,
                                   geo.groups)
    return be.pad_backward(gxp, geo.pads, "zeros")


def conv_backward_weight(be, x_seen, g, kernel_shape, geo: ConvGeometry):
    """∂L/∂K: correlation of the (padded) input with g; 5-D ``kernel_shape`` keeps one
    gradient per example."""
    return be.conv2d_backward_weight(x_seen, g, kernel_shape, geo.stride, geo.kernel_padding,
                                     geo.dilation, geo.groups)


def bias_view(bias, be):
    return be.reshape(bias, (1, bias.shape[0], 1, 1))


class Conv2d(Function):
    """y = conv(x, K) + bias; gradients in the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, bias, geo):
        be = ctx.backend
        y, x_seen = conv_forward(be, x, weight, geo)
        if bias is not None:
            y = be.add(y, bias_view(bias, be))
        ctx.save_for_backward(x_seen, weight)
        ctx.geo, ctx.x_shape = geo, x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        x_seen, weight = ctx.saved
        be, geo = ctx.backend, ctx.geo
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = conv_backward_input(be, g, weight, ctx.x_shape, geo)
        if ctx.needs_input_grad[1]:
            gw = conv_backward_weight(be, x_seen, g, weight.shape, geo)
        if ctx.needs_input_grad[2]:
            gb = be.sum(g, (0, 2, 3), False)
        return gx, gw, gb, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """``torch.nn.functional.conv2d``: x [B, Cin, H, W], weight [Cout, Cin/g, kh, kw],
    bias [Cout] or None; padding an int, a pair, "same" or "valid"."""
    x = check_tensor("conv2d", "x", x, ndim=4)
    weight = check_tensor("conv2d", "weight", weight, ndim=4)
    geo = conv_geometry("conv2d", x.shape, weight.shape, stride, padding, dilation, groups)
    if bias is not None:
        bias = check_tensor("conv2d", "bias", bias, ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"conv2d: bias has shape {bias.shape}; expected "
                             f"({weight.shape[0]},)")
    return Conv2d.apply(x, weight, bias, geo)
