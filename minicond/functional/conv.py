"""2-D convolution (cross-correlation, as in PyTorch), NCHW, with stride, padding, dilation
and groups.

Layer (docs/architecture.md): ``functional``. With x̃ the zero-padded input, G groups, (oh, ow) an
output pixel and (i, j) a kernel tap,

    y[b, o, oh, ow] = bias[o]
        + Σ_{c ∈ group(o)} Σ_{i, j} K[o, c, i, j] · x̃[b, c, oh·sh + i·dh, ow·sw + j·dw]

Written as matrices (im2col): cols_b = im2col(x̃_b) is [Cin·kh·kw, Ho·Wo] and y_b = K · cols_b
(per group). Both gradients are transposes of the two linear maps in that product, with
gy = ∂L/∂y:

    ∂L/∂K    = Σ_b gy_b · cols_bᵀ              (a correlation of x with gy)
    ∂L/∂x    = col2im(Kᵀ · gy_b)               (a transposed convolution of gy with K)
    ∂L/∂bias = Σ_{b, oh, ow} gy[b, :, oh, ow]

See ``docs/math/conv2d.md`` for the derivation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._validate import check_int, check_pair, check_tensor
from ..autograd import Function
from ..tensor import Tensor

PADDING_STRINGS = ("same", "valid", "tf_same")


@dataclass(frozen=True)
class ConvGeometry:
    """Validated convolution parameters.

    ``pads`` is ``(top, bottom, left, right)``; when it is symmetric the kernel pads by itself
    (``kernel_padding``), otherwise (``padding="same"`` with an even dilated kernel, or
    ``"tf_same"``) the input is zero-padded explicitly first and the kernel uses no padding.
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


def check_conv_options(fn: str, in_channels: int, out_channels: int, stride: Any,
                       padding: Any, dilation: Any, groups: Any
                       ) -> tuple[tuple[int, int], Any, tuple[int, int], int]:
    """The checks shared by ``conv2d``/``cond_conv2d`` and the ``Conv2d``/``CondConv2d``
    layers: ``(stride, padding, dilation, groups)`` validated, padding a string or a pair."""
    stride = check_pair(fn, "stride", stride, 1)
    dilation = check_pair(fn, "dilation", dilation, 1)
    groups = check_int(fn, "groups", groups, 1)
    if in_channels % groups:
        raise ValueError(f"{fn}: groups={groups} must divide in_channels={in_channels}")
    if out_channels % groups:
        raise ValueError(f"{fn}: groups={groups} must divide out_channels={out_channels}")
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(f"{fn}: padding={padding!r} must be an int, a pair, 'same', "
                             "'valid' or 'tf_same'")
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"{fn}: padding='same' needs stride=1, got stride={stride} "
                             "(padding='tf_same' pads for any stride)")
    else:
        padding = check_pair(fn, "padding", padding, 0)
    return stride, padding, dilation, groups


def same_padding(size: int, kernel: int, stride: int, dilation: int, tf: bool
                 ) -> tuple[int, int]:
    """(before, after) along one axis for ``"same"`` or, with ``tf``, ``"tf_same"``.

    "same" (stride 1): d·(k−1) in total, so the output length is n.
    "tf_same": max((⌈n/s⌉ − 1)·s + d·(k−1) + 1 − n, 0) in total, the least padding that
    makes the output length ⌈n/s⌉; it depends on n, so it is computed for each input.
    Both put the odd element of the total after (at the bottom/right).
    """
    span = dilation * (kernel - 1) + 1                  # the dilated kernel's extent
    if tf:
        total = max((-(-size // stride) - 1) * stride + span - size, 0)
    else:
        total = span - 1
    return total // 2, total - total // 2


def resolve_padding(padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], size: tuple[int, int]) -> tuple[int, ...]:
    """A checked ``padding`` (a pair, "same", "valid" or "tf_same") for an input of spatial
    ``size`` (H, W), as ``(top, bottom, left, right)``."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if isinstance(padding, str):
        tf = padding == "tf_same"
        return (*same_padding(size[0], kernel[0], stride[0], dilation[0], tf),
                *same_padding(size[1], kernel[1], stride[1], dilation[1], tf))
    ph, pw = padding
    return (ph, ph, pw, pw)


def conv_geometry(fn: str, x_shape: tuple[int, ...], weight_shape: tuple[int, ...],
                  stride: Any, padding: Any, dilation: Any, groups: Any) -> ConvGeometry:
    """Check a convolution's arguments against the shapes of x and of one kernel
    ``[Cout, Cin/G, kh, kw]``; raise a ValueError/TypeError naming the argument."""
    B, Cin, H, W = x_shape
    Cout, cin_per_group, kh, kw = weight_shape
    if Cout < 1:
        raise ValueError(f"{fn}: weight has out_channels Cout={Cout} (kernel shape "
                         f"{tuple(weight_shape)}); expected at least 1")
    stride, padding, dilation, groups = check_conv_options(fn, Cin, Cout, stride, padding,
                                                           dilation, groups)
    if cin_per_group * groups != Cin:
        raise ValueError(f"{fn}: weight expects {cin_per_group * groups} input channels "
                         f"({cin_per_group} per group × groups={groups}); x has {Cin}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: kernel size ({kh}, {kw}) must be positive")
    pads = resolve_padding(padding, (kh, kw), stride, dilation, (H, W))
    for size, before, after, k, d, axis in ((H, pads[0], pads[1], kh, dilation[0], "height"),
                                            (W, pads[2], pads[3], kw, dilation[1], "width")):
        if size + before + after < d * (k - 1) + 1:
            raise ValueError(f"{fn}: the dilated kernel {axis} {d * (k - 1) + 1} is larger "
                             f"than the padded input {axis} {size + before + after}")
    return ConvGeometry(stride, pads, dilation, groups)


def conv_forward(be, x, kernel, geo: ConvGeometry, bias=None):
    """y = conv(x, K) + bias for a shared or per-example K and a bias [Cout], [B, Cout] or
    None; returns (y, the input the kernel saw)."""
    if not geo.symmetric:
        x = be.pad(x, geo.pads, "zeros")
    y = be.conv2d_forward(x, kernel, geo.stride, geo.kernel_padding, geo.dilation, geo.groups,
                          bias)
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


class Conv2d(Function):
    """y = conv(x, K) + bias; gradients in the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, bias, geo):
        be = ctx.backend
        y, x_seen = conv_forward(be, x, weight, geo, bias)
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
    """``torch.nn.functional.conv2d``: x [B, Cin, H, W], weight [Cout, Cin/G, kh, kw],
    bias [Cout] or None.

    ``padding`` is an int, a pair, "valid", "same" or "tf_same". "same" is PyTorch's:
    stride 1 only, d·(k−1) in total per axis, so Ho×Wo = H×W. "tf_same" is TensorFlow's
    "SAME" (timm's ``Conv2dSame``): for any stride and dilation, the least zero padding that
    gives Ho = ⌈H/s⌉, Wo = ⌈W/s⌉, computed from the input's size at each call; the odd
    element of each total goes to the bottom/right. For stride 1 the two agree.
    """
    x = check_tensor("conv2d", "x", x, ndim=4)
    weight = check_tensor("conv2d", "weight", weight, ndim=4)
    geo = conv_geometry("conv2d", x.shape, weight.shape, stride, padding, dilation, groups)
    if bias is not None:
        bias = check_tensor("conv2d", "bias", bias, ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"conv2d: bias has shape {bias.shape}; expected "
                             f"({weight.shape[0]},)")
    return Conv2d.apply(x, weight, bias, geo)
