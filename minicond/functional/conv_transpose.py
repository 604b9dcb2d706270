"""Transposed 2-D convolution, NCHW, as ``torch.nn.functional.conv_transpose2d``.

Layer (docs/architecture.md): ``functional``. Derivation in the ``ConvTranspose2d`` docstring and in
``docs/math/conv_transpose.md``.

A convolution u [B, Cout, Hf, Wf] ↦ conv(u, K) [B, Cin, H, W] with kernel K [Cin, Cout/G, kh,
kw], stride s, dilation d, no padding and G groups is a linear map C_K. Its transpose C_Kᵀ
maps [B, Cin, H, W] back to [B, Cout, Hf, Wf], Hf = (H − 1)·s + d·(kh − 1) + 1, and is what
every backend computes as the convolution's input gradient (``conv2d_backward_input``). The
transposed convolution is

    y = crop_p(C_Kᵀ · x) + bias

where crop_p drops p rows/columns at the top/left and keeps Ho = Hf − 2p + output_padding
rows (zeros where output_padding reaches past Hf). Its two gradients are the convolution's
forward and weight gradient, with x in the role of the convolution's output gradient:

    ∂L/∂x = C_K · gu = conv(gu, K),     ∂L/∂K = conv2d_backward_weight(gu, x),
    gu = crop_pᵀ(gy)  (gy placed back into zeros of shape [B, Cout, Hf, Wf])

No kernel is specific to this op.
"""

from __future__ import annotations

from typing import Any

from .._validate import check_int, check_pair, check_tensor
from ..autograd import Function
from ..tensor import Tensor


class ConvTranspose2d(Function):
    """y = crop(C_Kᵀ x) + bias; the gradients in the module docstring.

    C_K u = conv(u, K) is bilinear in (u, K), so ⟨gy, crop(C_Kᵀ x)⟩ = ⟨C_K gu, x⟩ with
    gu = cropᵀ gy: differentiating ⟨conv(gu, K), x⟩ by x gives conv(gu, K), and by K gives
    the convolution's weight gradient for input gu and output gradient x.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, full_shape, extend, crop, stride, dilation, groups):
        be = ctx.backend
        y = be.conv2d_backward_input(x, weight, full_shape, stride, (0, 0), dilation, groups)
        if any(extend):
            y = be.pad(y, extend, "zeros")
        if any(crop):
            y = be.pad_backward(y, crop, "zeros")
        if bias is not None:
            y = be.add(y, be.reshape(bias, (1, bias.shape[0], 1, 1)))
        ctx.save_for_backward(x, weight)
        ctx.geo = (extend, crop, stride, dilation, groups)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved
        extend, crop, stride, dilation, groups = ctx.geo
        be = ctx.backend
        gu = be.pad(g, crop, "zeros") if any(crop) else g
        if any(extend):
            gu = be.pad_backward(gu, extend, "zeros")
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = be.conv2d_forward(gu, weight, stride, (0, 0), dilation, groups)
        if ctx.needs_input_grad[1]:
            gw = be.conv2d_backward_weight(gu, x, weight.shape, stride, (0, 0), dilation,
                                           groups)
        if ctx.needs_input_grad[2]:
            gb = be.sum(g, (0, 2, 3), False)
        return gx, gw, gb, None, None, None, None, None, None


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                     dilation: Any = 1) -> Tensor:
    """``torch.nn.functional.conv_transpose2d``: x [B, Cin, H, W], weight [Cin, Cout/G, kh, kw],
    bias [Cout] or None; output Ho = (H − 1)·s − 2p + d·(kh − 1) + output_padding + 1 (and so
    for W). ``output_padding`` must be smaller than the stride or the dilation, per axis."""
    fn = "conv_transpose2d"
    x = check_tensor(fn, "x", x, ndim=4)
    weight = check_tensor(fn, "weight", weight, ndim=4)
    stride = check_pair(fn, "stride", stride, 1)
    padding = check_pair(fn, "padding", padding, 0)
    output_padding = check_pair(fn, "output_padding", output_padding, 0)
    dilation = check_pair(fn, "dilation", dilation, 1)
    groups = check_int(fn, "groups", groups, 1)
    B, Cin, H, W = x.shape
    w_in, cout_per_group, kh, kw = weight.shape
    if w_in != Cin:
        raise ValueError(f"{fn}: weight has shape {weight.shape}, whose first axis "
                         f"{w_in} must equal x's channels Cin={Cin} (weight is [Cin, Cout/G, "
                         "kh, kw])")
    if Cin % groups:
        raise ValueError(f"{fn}: groups={groups} must divide in_channels={Cin}")
    if cout_per_group < 1 or kh < 1 or kw < 1:
        raise ValueError(f"{fn}: weight has shape {weight.shape}; expected Cout/G, kh and kw "
                         "of at least 1")
    for axis, op, s, d in zip(("height", "width"), output_padding, stride, dilation,
                              strict=True):
        if op >= s and op >= d:
            raise ValueError(f"{fn}: output_padding={output_padding} must be smaller than "
                             f"either stride={stride} or dilation={dilation} ({axis})")
    Cout = cout_per_group * groups
    full = tuple((n - 1) * s + d * (k - 1) + 1
                 for n, s, d, k in zip((H, W), stride, dilation, (kh, kw), strict=True))
    out = tuple(f - 2 * p + op for f, p, op in zip(full, padding, output_padding, strict=True))
    if min(out) < 1:
        raise ValueError(f"{fn}: the output would be {out[0]}x{out[1]} for x of shape "
                         f"{x.shape}, padding={padding}, output_padding={output_padding}; "
                         "expected at least 1x1")
    if bias is not None:
        bias = check_tensor(fn, "bias", bias, ndim=1)
        if bias.shape[0] != Cout:
            raise ValueError(f"{fn}: bias has shape {bias.shape}; expected ({Cout},)")
    (ph, pw), (oph, opw) = padding, output_padding
    extend = (0, max(oph - ph, 0), 0, max(opw - pw, 0))
    crop = (ph, max(ph - oph, 0), pw, max(pw - opw, 0))
    return ConvTranspose2d.apply(x, weight, bias, (B, Cout, *full), extend, crop, stride,
                                 dilation, groups)
