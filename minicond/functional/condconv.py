"""CondConv: mix E expert kernels per example, then convolve once.

Layer (docs/architecture.md): ``functional``. Shapes: x [B, Cin, H, W], routing weights r [B, E],
experts Θ [E, Cout, Cin/G, kh, kw] (``weight``), bias [Cout] (static) or [E, Cout] (mixed per
example). Symbols: the notation table of docs/math/README.md.

Forward:

    K_b = Σ_e r_be · Θ_e                 one small GEMM, [B, E] × [E, Cout·Cin/G·kh·kw]
    y_b = conv(x_b, K_b) + bias_b        bias_b = bias, or Σ_e r_be · bias_e when mixed

Backward, given gy = ∂L/∂y:

    gK_b  = gy_b · cols(x_b)ᵀ            the conv weight gradient, kept per example (the
                                         product sums over the output pixels)
    gΘ_e  = Σ_b r_be · gK_b              rᵀ · gK
    gr_be = ⟨gK_b, Θ_e⟩ (+ ⟨Σ_{oh,ow} gy_b, bias_e⟩ when mixed)     gK · Θᵀ
    gx_b  = convᵀ(gy_b, K_b)             the input gradient with the example's own kernel

Because conv is linear in its kernel, y_b = Σ_e r_be · conv(x_b, Θ_e): a mixture of E experts
at the price of one convolution. gr comes from that same linearity, without running E
convolutions.
"""

from __future__ import annotations

from typing import Any

from .._validate import check_tensor
from ..autograd import Function
from ..tensor import Tensor
from .conv import (
    conv_backward_input,
    conv_backward_weight,
    conv_forward,
    conv_geometry,
)


class MixExperts(Function):
    """K_b = Σ_e r_be Θ_e;  ∂L/∂r_be = ⟨gK_b, Θ_e⟩,  ∂L/∂Θ_e = Σ_b r_be gK_b."""

    @staticmethod
    def forward(ctx, r, W):
        ctx.save_for_backward(r, W)
        return ctx.backend.mix_experts(r, W)

    @staticmethod
    def backward(ctx, gK):
        r, W = ctx.saved
        return ctx.backend.mix_experts_backward(r, W, gK)


def mix_experts(routing_weights: Tensor, weight: Tensor) -> Tensor:
    """Per-example kernels ``[B, ...]`` from routing weights ``[B, E]`` and experts
    ``[E, ...]``."""
    r = check_tensor("mix_experts", "routing_weights", routing_weights, ndim=2)
    W = check_tensor("mix_experts", "weight", weight)
    if W.ndim >= 1 and W.shape[0] == 0:
        raise ValueError(f"mix_experts: weight has shape {W.shape}: E=0 experts; expected at "
                         "least 1")
    if W.ndim < 2 or W.shape[0] != r.shape[1]:
        raise ValueError(f"mix_experts: weight has shape {W.shape}; its first axis must be "
                         f"the number of experts E={r.shape[1]} of routing_weights {r.shape}")
    return MixExperts.apply(r, W)


class CondConv2d(Function):
    """y_b = conv(x_b, Σ_e r_be Θ_e) + bias_b; the derivation is in the module docstring."""

    @staticmethod
    def forward(ctx, x, r, W, bias, geo):
        be = ctx.backend
        K = be.mix_experts(r, W)                              # [B, Cout, Cin/g, kh, kw]
        beta = bias
        if bias is not None and bias.ndim == 2:               # mixed: β = r · bias, [B, Cout]
            beta = be.matmul(r, bias)
        y, x_seen = conv_forward(be, x, K, geo, beta)         # the kernel adds the bias
        ctx.save_for_backward(x_seen, r, W, K, bias)
        ctx.geo, ctx.x_shape = geo, x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        x_seen, r, W, K, bias = ctx.saved
        be, geo = ctx.backend, ctx.geo
        need_x, need_r, need_w, need_b, _ = ctx.needs_input_grad
        gx = gr = gW = gbias = None
        if need_x:
            gx = conv_backward_input(be, g, K, ctx.x_shape, geo)
        if need_r or need_w:
            gK = conv_backward_weight(be, x_seen, g, K.shape, geo)   # per example
            gr, gW = be.mix_experts_backward(r, W, gK)
        if bias is not None:
            if bias.ndim == 1:
                gbias = be.sum(g, (0, 2, 3), False) if need_b else None
            else:
                g_beta = be.sum(g, (2, 3), False)                      # [B, Cout]
                if need_b:
                    gbias = be.matmul(be.permute(r, (1, 0)), g_beta)   # rᵀ · gβ
                if need_r:
                    gr = be.add(gr, be.matmul(g_beta, be.permute(bias, (1, 0))))
        return gx, gr, gW, gbias, None


def cond_conv2d(x: Tensor, routing_weights: Tensor, weight: Tensor, bias: Tensor | None = None,
                stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """Conditionally parameterised convolution.

    x [B, Cin, H, W]; routing_weights [B, E]; weight [E, Cout, Cin/G, kh, kw];
    bias [Cout] (shared) or [E, Cout] (mixed with the routing weights) or None. The other
    arguments are those of :func:`conv2d`.
    """
    fn = "cond_conv2d"
    x = check_tensor(fn, "x", x, ndim=4)
    r = check_tensor(fn, "routing_weights", routing_weights, ndim=2)
    W = check_tensor(fn, "weight", weight, ndim=5)
    E = W.shape[0]
    if E < 1:
        raise ValueError(f"{fn}: weight has shape {W.shape}: E=0 experts; expected at least 1")
    if r.shape != (x.shape[0], E):
        raise ValueError(f"{fn}: routing_weights has shape {r.shape}; expected (B, E) = "
                         f"({x.shape[0]}, {E}) from x {x.shape} and weight {W.shape}")
    geo = conv_geometry(fn, x.shape, W.shape[1:], stride, padding, dilation, groups)
    if bias is not None:
        bias = check_tensor(fn, "bias", bias, ndim=(1, 2))
        Cout = W.shape[1]
        if bias.shape not in ((Cout,), (E, Cout)):
            raise ValueError(f"{fn}: bias has shape {bias.shape}; expected ({Cout},) or "
                             f"(E, Cout) = ({E}, {Cout})")
    return CondConv2d.apply(x, r, W, bias, geo)
