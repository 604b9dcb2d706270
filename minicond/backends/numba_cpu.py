"""The Numba CPU backend: the convolution path compiled with ``@njit``, the rest shared with
NumPy.

Layer: bottom (see ``table.py`` for the signatures). Elementwise maps, reductions, shape
operations, softmax and the small matrix products are NumPy's own vectorised loops already, so
they are taken from ``numpy_ref`` unchanged: a JIT brings nothing there. What is compiled here
is the convolution family, where NumPy needs Python loops or large temporaries:

* ``im2col``/``col2im`` and ``pad``/``pad_backward`` are parallel kernels whose threads own
  disjoint outputs (rows of the column matrix, image planes), so no two threads ever add into
  the same element and every sum runs in one fixed order.
* ``conv2d_*`` unfold a few examples at a time into a column buffer of a few MiB (it stays in
  cache while the matrix product reads it) and multiply it with ``np.matmul`` (OpenBLAS)
  outside the JIT. A per-example kernel ``[B, Cout, Cin/g, kh, kw]`` (CondConv) takes the same
  path: the batched product pairs example b's kernel with example b's columns, so CondConv
  costs one convolution, not E, and no Python loop runs per example.
* ``mix_experts`` is a compiled loop, K_b = Σ_e r_be W_e summed in expert order; its
  gradients gr = gK·Wᵀ and gW = rᵀ·gK are two matrix products.

Determinism: the compiled kernels give the same bits for any thread count (no parallel
reductions); the matrix products are OpenBLAS's, which give the same bits run to run at a fixed
thread count. ``docs/numba.md`` has the details, the thread settings and the compile cost.
"""

from __future__ import annotations

import builtins

import numpy as np

from . import BackendUnavailableError
from .numpy_ref import (  # noqa: F401 - re-exported as this backend's kernels
    add,
    argmax,
    astype,
    broadcast_to,
    div,
    dropout_mask,
    eq,
    exp,
    from_numpy,
    full,
    gt,
    log,
    log_softmax,
    log_softmax_backward,
    matmul,
    max,
    mul,
    neg,
    permute,
    power,
    relu,
    reshape,
    sigmoid,
    softmax,
    softmax_backward,
    sqrt,
    sub,
    sum,
    take_rows,
    to_numpy,
)
from .table import conv_output_size

try:
    from numba import njit, prange
except ImportError as err:  # pragma: no cover - numba is a dependency; this is the fallback
    _IMPORT_ERROR: ImportError | None = err
else:
    _IMPORT_ERROR = None

name = "numba"

# Column-buffer budget per chunk of examples: large enough that a chunk's matrix product is
# big, small enough that the columns are still in cache when the product reads them.
COLUMN_BUFFER_BYTES = 4 << 20

_PAD_MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}


def check_available() -> None:
    if _IMPORT_ERROR is not None:
        raise BackendUnavailableError(f"backend 'numba' needs numba: {_IMPORT_ERROR}")


# --- compiled kernels --------------------------------------------------------------------------
# (``max``/``sum`` above are the table's kernels, so compiled code avoids the builtins' names.)

@njit(cache=True)
def _valid_range(W, Wo, sw, col0):
    """(lo, hi), 0 <= lo <= hi <= Wo: the outputs ow whose input column ow·sw + col0 lies in
    [0, W). Both slice bounds derived from it are then non-negative and in range."""
    lo = 0
    if col0 < 0:
        lo = (-col0 + sw - 1) // sw
        if lo > Wo:
            lo = Wo
    hi = 0
    if W - 1 - col0 >= 0:
        hi = (W - 1 - col0) // sw + 1
        if hi > Wo:
            hi = Wo
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True, parallel=True)
def _im2col_kernel(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """cols[b, (c, i, j), oh·Wo + ow] = x[b, c, oh·sh − ph + i·dh, ow·sw − pw + j·dw], zero
    outside x. One task per row (b, c, i, j); each row is written by exactly one thread."""
    nb, C, H, W = x.shape
    rows = C * kh * kw
    for task in prange(nb * rows):
        b = task // rows
        row = task - b * rows
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        col0 = j * dw - pw                      # input column read by ow = 0
        # ow range whose input column lies in [0, W): ow·sw + col0 >= 0 and < W
        lo, hi = _valid_range(W, Wo, sw, col0)
        dst = cols[b, row]
        for oh in range(Ho):
            ih = oh * sh - ph + i * dh
            base = oh * Wo
            if ih < 0 or ih >= H:
                dst[base:base + Wo] = 0
                continue
            src = x[b, c, ih]
            dst[base:base + lo] = 0
            if sw == 1:
                if hi > lo:
                    dst[base + lo:base + hi] = src[lo + col0:hi + col0]
            else:
                for ow in range(lo, hi):
                    dst[base + ow] = src[ow * sw + col0]
            dst[base + hi:base + Wo] = 0


@njit(cache=True, parallel=True)
def _col2im_kernel(cols, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """The transpose of ``_im2col_kernel``: gx[b, c] = Σ over rows (c, i, j) of the column
    entries read from each pixel. One task per image plane (b, c): the rows that feed a plane
    belong to it alone, so threads never add into the same pixel, and each pixel's sum runs in
    the fixed order (i, j, oh, ow)."""
    nb, C, H, W = gx.shape
    for task in prange(nb * C):
        b = task // C
        c = task - b * C
        plane = gx[b, c]
        plane[:, :] = 0
        for i in range(kh):
            for j in range(kw):
                src = cols[b, (c * kh + i) * kw + j]
                col0 = j * dw - pw
                lo, hi = _valid_range(W, Wo, sw, col0)
                if hi == lo:
                    continue
                for oh in range(Ho):
                    ih = oh * sh - ph + i * dh
                    if ih < 0 or ih >= H:
                        continue
                    dst = plane[ih]
                    base = oh * Wo
                    if sw == 1:
                        dst[lo + col0:hi + col0] += src[base + lo:base + hi]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * sw + col0] += src[base + ow]


@njit(cache=True, parallel=True)
def _pad_kernel(x, src_h, src_w, out):
    """out[n, i, j] = x[n, src_h[i], src_w[j]], or 0 where either source is −1. One task per
    plane n."""
    N = x.shape[0]
    Hp = src_h.shape[0]
    Wp = src_w.shape[0]
    for n in prange(N):
        for i in range(Hp):
            si = src_h[i]
            if si < 0:
                out[n, i, :] = 0
                continue
            row = x[n, si]
            dst = out[n, i]
            for j in range(Wp):
                sj = src_w[j]
                if sj >= 0:
                    dst[j] = row[sj]
                else:
                    dst[j] = 0


@njit(cache=True, parallel=True)
def _pad_backward_kernel(g, src_h, src_w, out):
    """The transpose of ``_pad_kernel``: out[n, s_h, s_w] = Σ of g over the padded pixels that
    copied it. One task per plane n; within a plane the sum runs in (i, j) order."""
    N = g.shape[0]
    Hp = src_h.shape[0]
    Wp = src_w.shape[0]
    for n in prange(N):
        out[n, :, :] = 0
        for i in range(Hp):
            si = src_h[i]
            if si < 0:
                continue
            row = g[n, i]
            dst = out[n, si]
            for j in range(Wp):
                sj = src_w[j]
                if sj >= 0:
                    dst[sj] += row[j]


@njit(cache=True, parallel=True)
def _mix_experts_kernel(r, W, out):
    """out[b, p] = Σ_e r[b, e] · W[e, p], summed in expert order. One task per block of p
    for every b, so each output element has one writer."""
    B, E = r.shape
    P = W.shape[1]
    block = 4096
    nblocks = (P + block - 1) // block
    for task in prange(B * nblocks):
        b = task // nblocks
        p0 = (task - b * nblocks) * block
        p1 = p0 + block if p0 + block < P else P
        dst = out[b, p0:p1]
        dst[:] = r[b, 0] * W[0, p0:p1]
        for e in range(1, E):
            dst += r[b, e] * W[e, p0:p1]


@njit(cache=True)
def _scatter_add_rows_kernel(index, g, out):
    """out[index[k]] += g[k], rows in index order (a repeated row accumulates)."""
    for k in range(index.shape[0]):
        out[index[k]] += g[k]


# --- padding -----------------------------------------------------------------------------------

def _pad_sources(n, before, after, mode):
    """Source index of every padded position along one axis (−1: a zero of "zeros" mode)."""
    src = np.arange(-before, n + after, dtype=np.int64)
    if mode == "reflect":
        src = np.abs(src)
        src = np.where(src > n - 1, 2 * (n - 1) - src, src)
    elif mode == "replicate":
        src = np.clip(src, 0, n - 1)
    elif mode == "circular":
        src = src % n
    else:
        src = np.where((src >= 0) & (src < n), src, -1)
    # A source outside [0, n) must never reach a kernel (callers bound the pads; this is the
    # last line before unchecked indexing).
    if src.size and (src.min() < -1 or src.max() >= n or (mode != "zeros" and src.min() < 0)):
        raise ValueError(f"pad: pads ({before}, {after}) are invalid for mode={mode!r} "
                         f"and size {n}")
    return src


def pad(x, pads, mode):
    top, bottom, left, right = pads
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode={mode!r} must be one of {tuple(_PAD_MODES)}")
    H, W = x.shape[-2:]
    src_h = _pad_sources(H, top, bottom, mode)
    src_w = _pad_sources(W, left, right, mode)
    lead = x.shape[:-2]
    x3 = np.ascontiguousarray(x).reshape((-1, H, W))
    out = np.empty((x3.shape[0], src_h.size, src_w.size), dtype=x.dtype)
    if out.size:
        _pad_kernel(x3, src_h, src_w, out)
    return out.reshape(lead + (src_h.size, src_w.size))


def pad_backward(g, pads, mode):
    top, bottom, left, right = pads
    if mode not in _PAD_MODES:
        raise ValueError(f"pad_backward: mode={mode!r} must be one of {tuple(_PAD_MODES)}")
    Hp, Wp = g.shape[-2:]
    H, W = Hp - top - bottom, Wp - left - right
    src_h = _pad_sources(H, top, bottom, mode)
    src_w = _pad_sources(W, left, right, mode)
    lead = g.shape[:-2]
    g3 = np.ascontiguousarray(g).reshape((-1, Hp, Wp))
    out = np.empty((g3.shape[0], H, W), dtype=g.dtype)
    if out.size:
        _pad_backward_kernel(g3, src_h, src_w, out)
    return out.reshape(lead + (H, W))


# --- im2col / col2im ---------------------------------------------------------------------------

def _out_size(x_shape, kernel, stride, padding, dilation):
    Ho = conv_output_size(x_shape[2], kernel[0], stride[0], padding[0], dilation[0])
    Wo = conv_output_size(x_shape[3], kernel[1], stride[1], padding[1], dilation[1])
    return Ho, Wo


def _geometry_args(kernel, stride, padding, dilation, Ho, Wo):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    return (int(kh), int(kw), int(sh), int(sw), int(ph), int(pw), int(dh), int(dw),
            int(Ho), int(Wo))


def im2col(x, kernel, stride, padding, dilation):
    x = np.ascontiguousarray(x)
    B, C = x.shape[:2]
    Ho, Wo = _out_size(x.shape, kernel, stride, padding, dilation)
    cols = np.empty((B, C * kernel[0] * kernel[1], Ho * Wo), dtype=x.dtype)
    if cols.size:
        _im2col_kernel(x, cols, *_geometry_args(kernel, stride, padding, dilation, Ho, Wo))
    return cols


def col2im(cols, x_shape, kernel, stride, padding, dilation):
    B, C, H, W = x_shape
    Ho, Wo = _out_size(x_shape, kernel, stride, padding, dilation)
    cols = np.ascontiguousarray(cols).reshape(B, C * kernel[0] * kernel[1], Ho * Wo)
    gx = np.empty(tuple(x_shape), dtype=cols.dtype)
    if gx.size:
        if cols.size:
            _col2im_kernel(cols, gx, *_geometry_args(kernel, stride, padding, dilation, Ho, Wo))
        else:
            gx[...] = 0
    return gx


# --- convolution -------------------------------------------------------------------------------

def _chunk(B, rows, L, itemsize):
    """Examples per chunk so that a chunk's columns [n, rows, L] fit the buffer budget."""
    per_example = builtins.max(1, rows * L * itemsize)
    return builtins.max(1, builtins.min(B, COLUMN_BUFFER_BYTES // per_example))


def _grouped(weight, groups):
    """A shared [Cout, Cin/g, kh, kw] or per-example [B, Cout, ...] weight as
    [1 or B, g, Cout/g, Cin/g·kh·kw]."""
    w = weight if weight.ndim == 5 else weight[None]
    return np.ascontiguousarray(w).reshape(w.shape[0], groups, w.shape[1] // groups, -1)


def conv2d_forward(x, weight, stride, padding, dilation, groups):
    x = np.ascontiguousarray(x)
    B, C = x.shape[:2]
    kernel = weight.shape[-2:]
    Cout = weight.shape[-4]
    Ho, Wo = _out_size(x.shape, kernel, stride, padding, dilation)
    L = Ho * Wo
    dtype = np.result_type(x, weight)
    w = _grouped(weight, groups).astype(dtype, copy=False)
    per_example = weight.ndim == 5
    y = np.empty((B, Cout, Ho, Wo), dtype=dtype)
    rows = C * kernel[0] * kernel[1]
    if y.size == 0:
        return y
    if rows == 0:
        y[...] = 0
        return y
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)
    nb = _chunk(B, rows, L, dtype.itemsize)
    cols = np.empty((nb, rows, L), dtype=dtype)
    for b0 in range(0, B, nb):
        n = builtins.min(nb, B - b0)
        _im2col_kernel(x[b0:b0 + n].astype(dtype, copy=False), cols[:n], *geo)
        wb = w[b0:b0 + n] if per_example else w
        np.matmul(wb, cols[:n].reshape(n, groups, rows // groups, L),
                  out=y[b0:b0 + n].reshape(n, groups, Cout // groups, L))
    return y


def conv2d_backward_input(gy, weight, x_shape, stride, padding, dilation, groups):
    gy = np.ascontiguousarray(gy)
    B, Cout, Ho, Wo = gy.shape
    C = x_shape[1]
    kernel = weight.shape[-2:]
    L = Ho * Wo
    dtype = np.result_type(gy, weight)
    # wᵀ [1|B, g, Cin/g·kh·kw, Cout/g], contiguous so each product is a plain GEMM
    wT = np.ascontiguousarray(np.swapaxes(_grouped(weight, groups), -1, -2).astype(dtype))
    per_example = weight.ndim == 5
    gx = np.empty(tuple(x_shape), dtype=dtype)
    rows = C * kernel[0] * kernel[1]
    if gx.size == 0:
        return gx
    if rows == 0 or L == 0:
        gx[...] = 0
        return gx
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)
    nb = _chunk(B, rows, L, dtype.itemsize)
    gcols = np.empty((nb, rows, L), dtype=dtype)
    for b0 in range(0, B, nb):
        n = builtins.min(nb, B - b0)
        wb = wT[b0:b0 + n] if per_example else wT
        np.matmul(wb, gy[b0:b0 + n].reshape(n, groups, Cout // groups, L).astype(dtype),
                  out=gcols[:n].reshape(n, groups, rows // groups, L))
        _col2im_kernel(gcols[:n], gx[b0:b0 + n], *geo)
    return gx


def conv2d_backward_weight(x, gy, weight_shape, stride, padding, dilation, groups):
    x = np.ascontiguousarray(x)
    gy = np.ascontiguousarray(gy)
    B, Cout, Ho, Wo = gy.shape
    C = x.shape[1]
    weight_shape = tuple(weight_shape)
    kernel = weight_shape[-2:]
    L = Ho * Wo
    dtype = np.result_type(x, gy)
    rows = C * kernel[0] * kernel[1]
    per_example = len(weight_shape) == 5
    # one gradient per example [B, g, Cout/g, Cin/g·kh·kw]; summed over b for a shared weight
    gw = np.zeros((B if per_example else 1, groups, Cout // groups, rows // groups),
                  dtype=dtype)
    if gw.size == 0 or L == 0 or B == 0:
        return gw.reshape(weight_shape)
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)
    nb = _chunk(B, rows, L, dtype.itemsize)
    cols = np.empty((nb, rows, L), dtype=dtype)
    part = None if per_example else np.empty((nb,) + gw.shape[1:], dtype=dtype)
    for b0 in range(0, B, nb):
        n = builtins.min(nb, B - b0)
        _im2col_kernel(x[b0:b0 + n].astype(dtype, copy=False), cols[:n], *geo)
        g = gy[b0:b0 + n].reshape(n, groups, Cout // groups, L).astype(dtype, copy=False)
        colsT = np.swapaxes(cols[:n].reshape(n, groups, rows // groups, L), -1, -2)
        if per_example:
            np.matmul(g, colsT, out=gw[b0:b0 + n])
        else:
            np.matmul(g, colsT, out=part[:n])
            for k in range(n):          # fixed order: example b0, b0+1, ...
                gw[0] += part[k]
    return gw.reshape(weight_shape)


def mix_experts(r, W):
    r = np.ascontiguousarray(r)
    B, E = r.shape
    dtype = np.result_type(r, W)
    W2 = np.ascontiguousarray(W).reshape(E, -1).astype(dtype, copy=False)
    out = np.empty((B, W2.shape[1]), dtype=dtype)
    if out.size:
        if E == 0:
            out[...] = 0
        else:
            _mix_experts_kernel(r.astype(dtype, copy=False), W2, out)
    return out.reshape((B,) + W.shape[1:])


def mix_experts_backward(r, W, gK):
    E, B = W.shape[0], r.shape[0]
    gK_flat = np.ascontiguousarray(gK).reshape(B, -1)
    W_flat = np.ascontiguousarray(W).reshape(E, -1)
    gr = gK_flat @ W_flat.T                          # gr_be = ⟨gK_b, W_e⟩
    gW = (np.ascontiguousarray(r.T) @ gK_flat).reshape(W.shape)   # gW_e = Σ_b r_be gK_b
    return gr, gW


# --- rows --------------------------------------------------------------------------------------

def scatter_add_rows(shape, index, g):
    index = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
    n = shape[0] if len(shape) else 0
    if index.size and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"scatter_add_rows: index has values in [{index.min()}, "
                         f"{index.max()}]; expected 0 <= index < {n}")
    if g.shape[:1] != index.shape or tuple(g.shape[1:]) != tuple(shape[1:]):
        raise ValueError(f"scatter_add_rows: g has shape {g.shape}; expected "
                         f"{index.shape + tuple(shape[1:])}")
    out = np.zeros(shape, dtype=g.dtype)
    if out.size and index.size:
        _scatter_add_rows_kernel(index, np.ascontiguousarray(g).reshape(index.size, -1),
                                 out.reshape(n, -1))
    return out
