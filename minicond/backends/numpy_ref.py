"""The NumPy reference backend: every kernel of the table, written to be read.

Layer (docs/architecture.md): bottom (see ``table.py`` for the signatures). This is the oracle: the
Numba CPU and CUDA backends are tested against it, so each kernel here favours the obvious formula
over speed. Convolution is im2col followed by a matrix product; its two gradients are the
transposes of those two linear maps.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import grouped_weight, output_size, pad_mode_code, pad_source

name = "numpy"


# --- creation and transfer -------------------------------------------------------------------

def from_numpy(a, dtype):
    return np.array(a, dtype=dtype, copy=True, order="C")


def to_numpy(a):
    return np.array(a, copy=True)


def full(shape, value, dtype):
    return np.full(shape, value, dtype=dtype)


def astype(a, dtype):
    return a.astype(dtype, copy=True)


def dropout_mask(shape, p, dtype, seed):
    # Inverted dropout: kept units are scaled by 1/(1-p) so the expectation is unchanged.
    keep = np.random.default_rng(seed).random(shape) >= p
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    return (keep * scale).astype(dtype)


# --- elementwise -----------------------------------------------------------------------------

def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b


def div(a, b):
    return a / b


def gt(a, b):
    return (a > b).astype(np.result_type(a, b))


def eq(a, b):
    return (a == b).astype(np.result_type(a, b))


_COMPARISONS = {"lt": np.less, "le": np.less_equal, "gt": np.greater,
                "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal}


def compare(a, b, op):
    return _COMPARISONS[op](a, b)


def where(cond, a, b):
    return np.where(cond, a, b)


def neg(a):
    return -a


def exp(a):
    return np.exp(a)


def log(a):
    return np.log(a)


def sqrt(a):
    return np.sqrt(a)


def relu(a):
    return np.maximum(a, a.dtype.type(0))


def sigmoid(a):
    # Stable for both signs: with t = exp(-|a|) ∈ (0, 1], σ(a) = 1/(1+t) for a ≥ 0 and
    # t/(1+t) for a < 0, so exp never overflows.
    t = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + t), t / (1 + t)).astype(a.dtype)


def power(a, p):
    return (a ** a.dtype.type(p)).astype(a.dtype)


def power_tensor(a, b):
    return np.power(a, b)


def maximum(a, b):
    return np.maximum(a, b)


def minimum(a, b):
    return np.minimum(a, b)


def log1p(a):
    return np.log1p(a)


def tanh(a):
    return np.tanh(a)


def erf(a):
    # NumPy has no erf; the standard library's, applied elementwise, is the readable oracle.
    return np.vectorize(math.erf, otypes=[a.dtype])(a).reshape(a.shape)


# --- reductions and shape --------------------------------------------------------------------

def sum(a, axes, keepdims):  # noqa: A001 - the table's name
    return np.sum(a, axis=axes, keepdims=keepdims).astype(a.dtype)


def max(a, axes, keepdims):  # noqa: A001 - the table's name
    return np.max(a, axis=axes, keepdims=keepdims)


def argmax(a, axis):
    return np.argmax(a, axis=axis).astype(np.int64)


def reshape(a, shape):
    return np.reshape(a, shape)


def permute(a, axes):
    return np.ascontiguousarray(np.transpose(a, axes))


def broadcast_to(a, shape):
    return np.ascontiguousarray(np.broadcast_to(a, shape))


def gather(a, index):
    return np.reshape(a, -1)[index]


def scatter_add(shape, index, g):
    out = np.zeros(int(np.prod(shape)), dtype=g.dtype)
    np.add.at(out, np.reshape(index, -1), np.reshape(g, -1))  # repeated positions accumulate
    return out.reshape(shape)


# --- linear algebra and activations ----------------------------------------------------------

def matmul(a, b):
    return np.matmul(a, b)


def softmax(a, axis):
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(a, axis):
    shifted = a - np.max(a, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax_backward(y, gy, axis):
    return y * (gy - np.sum(gy * y, axis=axis, keepdims=True))


def log_softmax_backward(y, gy, axis):
    return gy - np.exp(y) * np.sum(gy, axis=axis, keepdims=True)


# --- padding ---------------------------------------------------------------------------------

def pad_source_index(n, before, after, mode):
    """For each of the n + before + after padded positions along one axis, the position of
    the original it copies, or −1 where "zeros" mode puts a zero (``geometry.pad_source``
    has the rule of each mode)."""
    code = pad_mode_code("pad", mode)
    return np.array([pad_source(k, n, before, code) for k in range(n + before + after)],
                    dtype=np.int64)


def pad(x, pads, mode):
    # Padding copies: y[..., i, j] = x[..., s_h(i), s_w(j)], and 0 where a source is −1.
    # (It is the linear map Ph · x · Pwᵀ with 0/1 matrices, but a matrix product would also
    # multiply each NaN or inf by the zeros of P and spread it to pixels that never copy it.)
    top, bottom, left, right = pads
    src_h = pad_source_index(x.shape[-2], top, bottom, mode)
    src_w = pad_source_index(x.shape[-1], left, right, mode)
    y = np.zeros(x.shape[:-2] + (src_h.size, src_w.size), dtype=x.dtype)
    rows, cols = np.nonzero(src_h >= 0)[0], np.nonzero(src_w >= 0)[0]
    y[..., rows[:, None], cols] = x[..., src_h[rows][:, None], src_w[cols]]
    return y


def pad_backward(g, pads, mode):
    # The transpose Phᵀ · g · Pw: each padded pixel's gradient is added to the pixel it
    # copied, in (i, j) order (np.add.at accumulates repeated targets).
    top, bottom, left, right = pads
    H = g.shape[-2] - top - bottom
    W = g.shape[-1] - left - right
    src_h = pad_source_index(H, top, bottom, mode)
    src_w = pad_source_index(W, left, right, mode)
    g3 = g.reshape((int(np.prod(g.shape[:-2])),) + g.shape[-2:])     # B may be 0
    gx = np.zeros((g3.shape[0], H, W), dtype=g.dtype)
    i, j = np.nonzero((src_h >= 0)[:, None] & (src_w >= 0))
    np.add.at(gx, (slice(None), src_h[i], src_w[j]), g3[:, i, j])
    return gx.reshape(g.shape[:-2] + (H, W))


# --- convolution -----------------------------------------------------------------------------

def im2col(x, kernel, stride, padding, dilation):
    """cols[b, (c, i, j), (oh, ow)] = xpad[b, c, oh·sh + i·dh, ow·sw + j·dw]."""
    B, C = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    Ho, Wo = output_size(x.shape, kernel, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((B, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
                                  j * dw: j * dw + sw * (Wo - 1) + 1: sw]
    return cols.reshape(B, C * kh * kw, Ho * Wo)


def col2im(cols, x_shape, kernel, stride, padding, dilation):
    """The transpose of im2col: every column entry is added back where it was read from."""
    B, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    Ho, Wo = output_size(x_shape, kernel, stride, padding, dilation)
    cols = cols.reshape(B, C, kh, kw, Ho, Wo)
    xp = np.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
               j * dw: j * dw + sw * (Wo - 1) + 1: sw] += cols[:, :, i, j]
    return xp[:, :, ph: ph + H, pw: pw + W].copy()


def conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None):
    B, Cin = x.shape[:2]
    Cout, kernel = weight.shape[-4], weight.shape[-2:]
    Ho, Wo = output_size(x.shape, kernel, stride, padding, dilation)
    L, K = Ho * Wo, Cin // groups * kernel[0] * kernel[1]
    cols = im2col(x, kernel, stride, padding, dilation)          # [B, Cin·kh·kw, L]
    cols = cols.reshape(B, groups, K, L)                         # [B, G, Cin/G·kh·kw, L]
    w = grouped_weight(weight, groups)                           # [B|1, G, Cout/G, K]
    y = (w @ cols).reshape(B, Cout, Ho, Wo)                      # [B, G, Cout/G, L] -> NCHW
    if bias is not None:
        y = y + bias[..., None, None]                            # [Cout] or [B, Cout]
    return y


def conv2d_backward_input(gy, weight, x_shape, stride, padding, dilation, groups):
    B, Cout, Ho, Wo = gy.shape
    kernel = weight.shape[-2:]
    w = grouped_weight(weight, groups)
    g = gy.reshape(B, groups, Cout // groups, Ho * Wo)
    gcols = np.swapaxes(w, -1, -2) @ g                           # [B, G, Cin/G·kh·kw, L]
    gcols = gcols.reshape(B, x_shape[1] * kernel[0] * kernel[1], Ho * Wo)
    return col2im(gcols, x_shape, kernel, stride, padding, dilation)


def conv2d_backward_weight(x, gy, weight_shape, stride, padding, dilation, groups):
    B, Cout, Ho, Wo = gy.shape
    kernel = tuple(weight_shape[-2:])
    K = x.shape[1] // groups * kernel[0] * kernel[1]
    cols = im2col(x, kernel, stride, padding, dilation).reshape(B, groups, K, Ho * Wo)
    g = gy.reshape(B, groups, Cout // groups, Ho * Wo)
    gw = g @ np.swapaxes(cols, -1, -2)                           # [B, G, Cout/G, K]
    if len(weight_shape) == 4:
        gw = gw.sum(axis=0)
    return gw.reshape(weight_shape)


def mix_experts(r, W):
    E = W.shape[0]
    return (r @ W.reshape(E, -1)).reshape((r.shape[0],) + W.shape[1:])


def mix_experts_backward(r, W, gK):
    E, B = W.shape[0], r.shape[0]
    gK_flat = gK.reshape(B, W[0].size)                # explicit: B may be 0
    gr = gK_flat @ W.reshape(E, -1).T                 # gr_be = ⟨gK_b, W_e⟩
    gW = (r.T @ gK_flat).reshape(W.shape)             # gW_e = Σ_b r_be gK_b
    return gr, gW


# --- training --------------------------------------------------------------------------------

def _per_channel(x, a):
    """A [C] array shaped to broadcast against x [B, C, ...]."""
    return a.reshape((1, -1) + (1,) * (x.ndim - 2))


def _channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def batch_norm_forward(x, weight, bias, mean, var, eps):
    if mean is None:
        mean = np.mean(x, axis=_channel_axes(x))
        var = np.mean((x - _per_channel(x, mean)) ** 2, axis=_channel_axes(x))
    mean, var = mean.astype(x.dtype), var.astype(x.dtype)
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    y = (x - _per_channel(x, mean)) * _per_channel(x, inv_std)
    if weight is not None:
        y = y * _per_channel(x, weight)
    if bias is not None:
        y = y + _per_channel(x, bias)
    return y.astype(x.dtype), mean, var, inv_std


def batch_norm_backward(g, x, weight, mean, inv_std, batch_stats):
    x_hat = (x - _per_channel(x, mean)) * _per_channel(x, inv_std)
    gbias = np.sum(g, axis=_channel_axes(x))
    gweight = np.sum(g * x_hat, axis=_channel_axes(x))
    if batch_stats:     # the statistics' share: (Σ ĝ + x̂·Σ ĝ·x̂)/N, with ĝ = g·γ
        g = g - (_per_channel(x, gbias) + x_hat * _per_channel(x, gweight)) / (x.size // x.shape[1])
    scale = inv_std if weight is None else weight * inv_std
    return (g * _per_channel(x, scale)).astype(x.dtype), gweight, gbias


def relu_backward(a, g):
    return np.where(a > 0, g, g.dtype.type(0))


def silu(a):
    s = sigmoid(a)
    return a * s, s


def adam_scalars(dtype, step, lr, beta1, beta2, eps, weight_decay):
    """The per-call constants of ``adam_update`` computed in float64 and rounded to ``dtype``
    once: (1 − lr·λ, λ, 1 − β₁, β₂, 1 − β₂, √(1 − β₂ᵗ), ε, lr/(1 − β₁ᵗ))."""
    values = (1.0 - lr * weight_decay, weight_decay, 1.0 - beta1, beta2, 1.0 - beta2,
              math.sqrt(1.0 - beta2 ** step), eps, lr / (1.0 - beta1 ** step))
    return tuple(np.dtype(dtype).type(c) for c in values)


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    decay, wd, one_minus_beta1, beta2_, one_minus_beta2, bias2, eps_, step_size = adam_scalars(
        p.dtype, step, lr, beta1, beta2, eps, weight_decay)
    d = g
    if weight_decay != 0:
        if decoupled:
            p = p * decay
        else:
            d = g + p * wd
    m = m + (d - m) * one_minus_beta1
    v = v * beta2_ + d * d * one_minus_beta2
    return p - m / (np.sqrt(v) / bias2 + eps_) * step_size, m, v
