"""The Numba CPU backend: the convolution path compiled with ``@njit``, the rest shared with
NumPy.

Layer (docs/architecture.md): bottom (see ``table.py`` for the signatures). Most elementwise
maps, reductions, shape operations and softmax are NumPy's own vectorised loops already, so
they are taken from ``numpy_ref`` unchanged: a JIT brings nothing there. The exceptions
(``sigmoid``, ``silu``, ``relu``, ``matmul``, ``permute``) are at the end
of this file, with the reason beside each. What is compiled here is above all the convolution
family, where NumPy needs Python loops or large temporaries:

* ``conv2d_*`` unfold a chunk of examples at a time into a column buffer of at most
  :data:`COLUMN_BUFFER_BYTES` (compiled ``im2col``, reading each image plane through a
  zero-bordered copy that stays in cache), multiply it with ``np.matmul`` (OpenBLAS), and fold
  column gradients back with a compiled ``col2im``. A per-example kernel
  ``[B, Cout, Cin/G, kh, kw]`` (CondConv) takes the same path: the batched product pairs
  example b's kernel with example b's columns, so CondConv costs one convolution, not E.
  The path is chosen by shape, in this order (the one place that decides it):
  1. depthwise (one input and one output channel per group, ``_is_depthwise``): direct
     compiled kernels instead of B·C tiny products, over the B·C image planes
     [B·C, 1, H, W], each with its own kernel, so that a batch-1 call splits too;
  2. 1×1 with stride 1 and no padding (``_is_pointwise``): the input is its own column
     matrix, no im2col;
  3. everything else: im2col + ``np.matmul`` (+ col2im) per chunk of examples.
* ``mix_experts`` (K_b = Σ_e r_be W_e) and its gradients gr = gK·Wᵀ and gW = rᵀ·gK are
  matrix products.
* ``pad``/``pad_backward`` gather and scatter through per-axis source indices.
* The training kernels fuse what NumPy would do in many passes: batch norm per channel
  (chunks of channels), ReLU's gradient, and the Adam step per parameter.

Parallelism: every matrix product of this backend runs on one OpenBLAS thread (OpenBLAS's own
threads spin long after a product and starve whatever runs next). A call with less than
:data:`INLINE_COST` operations runs on the calling thread; handing it to threads costs more
than it saves. Larger calls with matrix products cut their work into chunks (of examples or
bands of rows) that run on a pool of ``NUMBA_NUM_THREADS`` Python threads, each calling
``nogil`` compiled kernels and its own product. The depthwise kernels, which have no product,
run on Numba's own parallel threads (``prange``, started with passive waiting). Chunk
boundaries and the inline/pool choice depend on the shapes only, and every sum runs in a
fixed order, so results are bit-identical run to run and for any ``NUMBA_NUM_THREADS``
(``docs/numba.md`` says what else can change them).
"""

from __future__ import annotations

import builtins
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from . import BackendUnavailableError
from .geometry import grouped_weight, output_size, pad_mode_code, pad_source
from .numpy_ref import (  # noqa: F401 - re-exported as this backend's kernels
    adam_scalars,
    add,
    argmax,
    astype,
    broadcast_to,
    compare,
    div,
    dropout_mask,
    eq,
    exp,
    from_numpy,
    full,
    gather,
    gt,
    log,
    log1p,
    log_softmax,
    log_softmax_backward,
    max,
    maximum,
    minimum,
    mul,
    neg,
    power,
    power_tensor,
    reshape,
    softmax,
    softmax_backward,
    sqrt,
    sub,
    sum,
    tanh,
    to_numpy,
    where,
)

try:
    import numba
    from numba import njit, prange
    from threadpoolctl import ThreadpoolController
except ImportError as err:  # pragma: no cover - both are dependencies; this is the fallback
    _IMPORT_ERROR: ImportError | None = err

    def njit(*args, **kwargs):
        """Leave functions uncompiled so the module imports and check_available can report."""
        return lambda function: function

    prange = range
else:
    _IMPORT_ERROR = None

name = "numba"

# Column-buffer budget per chunk of examples: large enough that a chunk's matrix product is
# big, small enough that the columns are still in cache when the product reads them.
COLUMN_BUFFER_BYTES = 2 << 20
# Work is cut into at least this many chunks (when there are that many items), whatever the
# thread count, so that chunk boundaries, and with them every rounding, never depend on it.
MIN_CHUNKS = 8
# ... but no chunk smaller than this many operations (about 50-100 µs of work).
MIN_CHUNK_COST = 1 << 17
# Calls with less work than this in all run on the calling thread, in as few chunks as the
# column-buffer budget allows: handing chunks to the pool and waiting for them costs tens of
# microseconds per chunk, more than a small layer's whole computation.
INLINE_COST = 1 << 23
# Kernels without matrix products (the depthwise convolutions) run in parallel on Numba's own
# threads (``prange``; see _parallel_threads), which start in microseconds: from this many
# multiply-adds on, below it on the calling thread.
PARALLEL_COST = 1 << 16
# What one element of an elementwise map counts toward INLINE_COST: a few passes over memory
# and an exp cost about as much as this many of a GEMM's multiply-adds.
ELEMENTWISE_COST = 32

def check_available() -> None:
    if _IMPORT_ERROR is not None:
        raise BackendUnavailableError(
            f"backend 'numba' needs numba and threadpoolctl: {_IMPORT_ERROR}")


# --- the worker pool -----------------------------------------------------------------------------

_pool_lock = threading.Lock()
_pool: list[ThreadPoolExecutor] = []
_local = threading.local()


class _BlasLimit:
    """Counts the callers that need OpenBLAS on one thread; the first in sets the limit and the
    last out restores it, so nested and concurrent calls compose."""

    users = 0
    libraries: list | None = None     # threadpoolctl's controllers of the loaded BLAS libraries
    saved: list[int] = []             # their thread counts before the first user came in


def num_threads() -> int:
    """Worker threads used by this backend: ``NUMBA_NUM_THREADS`` (default: the CPU count)."""
    return builtins.max(1, int(numba.config.NUMBA_NUM_THREADS))


def _executor(workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if not _pool or _pool[0]._max_workers != workers:
            if _pool:
                _pool.pop().shutdown(wait=False)
            _pool.append(ThreadPoolExecutor(workers, thread_name_prefix="minicond-numba"))
        return _pool[0]


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """OpenBLAS on one thread for every product of this backend: on the pool's threads, each
    runs its own; on the calling thread, for the small products that stay there. OpenBLAS's
    own threads keep spinning long after a product; a mixing product on two OpenBLAS threads
    made the convolutions that followed it on the pool 1.5 times slower (32×32×32, 8 experts:
    31 ms a training step against 20 ms for 2 experts, whose product stayed on one thread).
    The libraries' own setters are called directly, about 1 µs each way (``limit()`` builds
    its bookkeeping on every call, 6–9 µs: a tenth of a small product)."""
    with _pool_lock:
        if _BlasLimit.libraries is None:
            _BlasLimit.libraries = [lib for lib in ThreadpoolController().lib_controllers
                                    if lib.user_api == "blas"]
        if _BlasLimit.users == 0:
            _BlasLimit.saved = [lib.get_num_threads() for lib in _BlasLimit.libraries]
            for lib in _BlasLimit.libraries:
                lib.set_num_threads(1)
        _BlasLimit.users += 1
    try:
        yield
    finally:
        with _pool_lock:
            _BlasLimit.users -= 1
            if _BlasLimit.users == 0:
                for lib, n in zip(_BlasLimit.libraries, _BlasLimit.saved, strict=True):
                    lib.set_num_threads(n)


def _chunk_size(n: int, item_cost: int, item_bytes: int) -> int:
    """Items per chunk, from the shapes alone (never the thread count): all of them for work
    that runs inline, else about ``n/MIN_CHUNKS`` items, but at least ``MIN_CHUNK_COST``
    operations' worth (a chunk must outweigh the cost of handing it to a thread); at most
    ``COLUMN_BUFFER_BYTES`` of scratch either way."""
    if n * item_cost < INLINE_COST:
        size = n
    else:
        size = builtins.max(math.ceil(n / MIN_CHUNKS),
                            math.ceil(MIN_CHUNK_COST / builtins.max(item_cost, 1)))
    if item_bytes:
        size = builtins.min(size, COLUMN_BUFFER_BYTES // item_bytes)
    return builtins.max(1, builtins.min(n, size))


def _run_chunks(n: int, work: Callable[[int, int], object], item_cost: int,
                item_bytes: int = 0) -> list:
    """``[work(start, stop)]`` over consecutive blocks of ``range(n)``, in order. ``item_cost``
    is a rough operation count per item (element copies or multiply-adds), ``item_bytes`` its
    scratch size.

    Below :data:`INLINE_COST` operations in all, the blocks run on the calling thread: a
    hand-off to the pool would cost more than the work. Above it, the blocks run on the pool.
    Either way OpenBLAS runs on one thread, so the products, and with them the bits, are the
    same for any ``NUMBA_NUM_THREADS``. The choice depends on the shapes only."""
    size = _chunk_size(n, item_cost, item_bytes)
    bounds = [(s, builtins.min(n, s + size)) for s in range(0, n, size)]
    workers = builtins.min(num_threads(), len(bounds))
    with _single_threaded_blas():
        if n * item_cost < INLINE_COST or workers <= 1:
            return [work(s, e) for s, e in bounds]
        return list(_executor(num_threads()).map(lambda be: work(*be), bounds))


def _scratch(shape: tuple[int, ...], dtype: np.dtype, slot: int = 0) -> np.ndarray:
    """A per-thread reusable buffer (``np.empty`` of a few MiB would fault its pages in again
    on every call)."""
    dtype = np.dtype(dtype)
    used = math.prod(shape) * dtype.itemsize
    nbytes = builtins.max(1, used)
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get(slot)
    if buf is None or buf.size < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        if nbytes <= 4 * COLUMN_BUFFER_BYTES:    # keep only buffers of the budgeted size
            buffers[slot] = buf
    return buf[:used].view(dtype).reshape(shape)


# --- Numba's parallel threads ------------------------------------------------------------------

@njit(cache=True, nogil=True, parallel=True)
def _parallel_probe(out):
    """A trivial parallel loop: its first call starts Numba's threads."""
    for k in prange(out.shape[0]):
        out[k] = k


_parallel_started = False


def _parallel_threads() -> None:
    """Start Numba's parallel threads, once, waiting passively when idle.

    With the OpenMP threading layer, the threads otherwise spin for a while after every
    parallel loop, and so do OpenBLAS's after every product: taking turns on two cores, a
    256×256 product and a tiny parallel loop took 8 ms together against 0.15 ms apart.
    Passive waiting costs about 3 µs per parallel loop. libgomp reads ``OMP_WAIT_POLICY``
    when Numba loads it, at the first parallel call, so the variable is set for that call
    only (unless the user set it) and other OpenMP libraries loaded later never see it."""
    global _parallel_started
    if _parallel_started:
        return
    with _pool_lock:
        if not _parallel_started:
            preset = "OMP_WAIT_POLICY" in os.environ
            if not preset:
                os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            try:
                _parallel_probe(np.zeros(2, dtype=np.int64))
            finally:
                if not preset:
                    del os.environ["OMP_WAIT_POLICY"]
            _parallel_started = True


def _parallel_chunk(n: int, item_cost: int, align: int = 1) -> int:
    """Items per chunk of a parallel loop over n independent items of ``item_cost``
    multiply-adds each: all n (one chunk, on the calling thread) below PARALLEL_COST in all,
    else about n/MIN_CHUNKS, a whole number of ``align`` items (from the shapes alone; every
    item's result is the same in any chunk)."""
    if n * item_cost < PARALLEL_COST:
        return n
    return math.ceil(math.ceil(n / MIN_CHUNKS) / align) * align


def _parallel(n: int, item_cost: int, align: int = 1) -> int:
    """Items per chunk for a parallel loop over n items (``_parallel_chunk``), with Numba's
    threads started; or 0: run on the calling thread (one chunk, or one thread)."""
    per = _parallel_chunk(n, item_cost, align)
    if per >= n or num_threads() == 1:
        return 0
    _parallel_threads()
    return per


# --- compiled kernels --------------------------------------------------------------------------
# Serial and ``nogil``: the pool above supplies the parallelism. ``max``/``sum`` at module level
# are the table's kernels, so compiled code spells out its comparisons instead.

# The convolution kernels walk a zero-bordered copy of each image plane, flat [Hp·Wp]: output
# row oh at tap (i, j) reads the padded row starting at (oh·sh + i·dh)·Wp + j·dw, every sw-th
# element (``_window``); the row operations below step through it.

@njit(cache=True, nogil=True)
def _fill_padded(plane, padded, ph, pw, Wp):
    """Copy an [H, W] plane into the interior of a zero-bordered flat [Hp·Wp] plane."""
    H, W = plane.shape
    for h in range(H):
        src = plane[h]
        dst = padded[(h + ph) * Wp + pw:]
        for w in range(W):
            dst[w] = src[w]


@njit(cache=True, nogil=True)
def _crop_padded(padded, plane, ph, pw, Wp):
    """The interior of a zero-bordered flat plane back into an [H, W] plane."""
    H, W = plane.shape
    for h in range(H):
        src = padded[(h + ph) * Wp + pw:]
        dst = plane[h]
        for w in range(W):
            dst[w] = src[w]


@njit(inline="always", nogil=True)
def _bordered_plane(a, ph, pw):
    """A zero flat plane for the [H, W] planes of the 4-D array a with a border of (ph, pw),
    and its row length Wp."""
    Wp = a.shape[3] + 2 * pw
    return np.zeros((a.shape[2] + 2 * ph) * Wp, dtype=a.dtype), Wp


@njit(inline="always", nogil=True)
def _window(padded, oh, i, j, sh, dh, dw, Wp):
    """The padded row that output row oh reads at tap (i, j), from its first pixel."""
    return padded[(oh * sh + i * dh) * Wp + j * dw:]


@njit(inline="always", nogil=True)
def _copy_row(out, v, sw, n):
    """out[ow] = v[ow·sw] for ow < n (stride 1 a plain vectorised copy)."""
    if sw == 1:
        for ow in range(n):
            out[ow] = v[ow]
    else:
        for ow in range(n):
            out[ow] = v[ow * sw]


@njit(inline="always", nogil=True)
def _scatter_row(v, a, g, sw, n):
    """v[ow·sw] += a · g[ow] for ow < n (stride 1 a plain vectorised loop)."""
    if sw == 1:
        for ow in range(n):
            v[ow] += a * g[ow]
    else:
        for ow in range(n):
            v[ow * sw] += a * g[ow]


@njit(inline="always", nogil=True)
def _im2col_rows(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Wo, oh0, oh1):
    """cols[(c, i, j), (oh − oh0)·Wo + ow] = x[c, oh·sh − ph + i·dh, ow·sw − pw + j·dw] for the
    output rows oh0 ≤ oh < oh1 of one example x [C, H, W], zero outside x. Each channel's
    rows that the band reads are copied into a zero-bordered buffer that stays in cache, and
    every column row is then a plain (strided at sw > 1) copy from it: no bounds tests."""
    C, H, W = x.shape
    span = (oh1 - oh0 - 1) * sh + (kh - 1) * dh + 1    # bordered rows the band reads
    Wp = W + 2 * pw
    padded = np.zeros(span * Wp, dtype=x.dtype)
    top = oh0 * sh - ph                                 # input row of bordered row 0
    for c in range(C):
        for r in range(span):
            h = top + r
            dst = padded[r * Wp + pw:]
            if 0 <= h < H:
                src = x[c, h]
                for w in range(W):
                    dst[w] = src[w]
            else:
                for w in range(W):
                    dst[w] = 0
        for tap in range(kh * kw):                      # row (c, i, j) = c·kh·kw + tap
            i, j = tap // kw, tap % kw
            d = cols[c * kh * kw + tap]
            for oh in range(oh1 - oh0):
                _copy_row(d[oh * Wo:], _window(padded, oh, i, j, sh, dh, dw, Wp), sw, Wo)


@njit(cache=True, nogil=True)
def _im2col_kernel(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """cols[b, (c, i, j), oh·Wo + ow] = x[b, c, oh·sh − ph + i·dh, ow·sw − pw + j·dw], zero
    outside x (:func:`_im2col_rows` over all output rows of each example)."""
    for b in range(x.shape[0]):
        _im2col_rows(x[b], cols[b], kh, kw, sh, sw, ph, pw, dh, dw, Wo, 0, Ho)


@njit(cache=True, nogil=True)
def _im2col_band_kernel(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Wo, oh0, oh1):
    """The columns of one example x [C, H, W] for its output rows oh0 ≤ oh < oh1 only."""
    _im2col_rows(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Wo, oh0, oh1)


@njit(cache=True, nogil=True)
def _col2im_kernel(cols, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """The transpose of ``_im2col_kernel``: every column entry is added back to the pixel it
    was read from, each pixel's sum in the fixed order (i, j, oh, ow), accumulated in a
    zero-bordered plane whose interior is then copied out."""
    nb, C = gx.shape[0], gx.shape[1]
    padded, Wp = _bordered_plane(gx, ph, pw)
    one = np.ones(1, dtype=gx.dtype)[0]           # in the array's dtype: no float64 detour
    for b in range(nb):
        for c in range(C):
            padded[:] = 0
            for i in range(kh):
                for j in range(kw):
                    s = cols[b, (c * kh + i) * kw + j]
                    for oh in range(Ho):
                        _scatter_row(_window(padded, oh, i, j, sh, dh, dw, Wp), one,
                                     s[oh * Wo:], sw, Wo)
            _crop_padded(padded, gx[b, c], ph, pw, Wp)


# --- depthwise kernels ------------------------------------------------------------------------
# Two loop structures, chosen by shape in ``_depthwise`` (docs/numba.md draws both):
#
# * flat rows (unit stride, planes wider than FLAT_MIN_WIDTH): with the bordered plane P of row
#   length Wp, output pixel (oh, ow) at tap (i, j) reads P[oh·Wp + ow + i·dh·Wp + j·dw], so one
#   loop over k = oh·Wp + ow, for k < (Ho − 1)·Wp + Wo, computes every output row in one long
#   vectorised pass; the Wp − Wo positions at the end of each row fall between rows, are
#   computed from real neighbours and dropped when the rows are copied out.
# * plane blocks (any stride, and small planes): PLANE_BLOCK planes interleaved pixel by pixel
#   into a bordered block [Hp·Wp, PLANE_BLOCK], so the innermost loop runs over the planes of
#   the block, a full vector whatever the plane size, stride or dilation. Short or strided rows
#   would otherwise leave most of each vector loop to its scalar remainder.

PLANE_BLOCK = 16
# unit-stride planes with more output columns than this take flat rows, the rest plane blocks
# (measured: flat rows win from 14 columns up, plane blocks at 4; both are exact)
FLAT_MIN_WIDTH = 8


@njit(inline="always", nogil=True)
def _flat_plane(a, ph, pw, kw, dw):
    """A zero flat bordered plane for the [H, W] planes of the 4-D array a (border (ph, pw)),
    with (kw − 1)·dw zeros of slack after it so that a flat row's last tap stays in range,
    and its row length Wp."""
    Wp = a.shape[3] + 2 * pw
    return np.zeros((a.shape[2] + 2 * ph) * Wp + (kw - 1) * dw, dtype=a.dtype), Wp


@njit(inline="always", nogil=True)
def _all_finite(a):
    """No NaN and no infinity in the 2-D array a."""
    for h in range(a.shape[0]):
        for v in a[h]:
            if not np.isfinite(v):
                return False
    return True


@njit(inline="always", nogil=True)
def _add_to_plane(plane, v):
    """plane += v, for a plane just written (still in cache)."""
    for h in range(plane.shape[0]):
        row = plane[h]
        for w in range(row.shape[0]):
            row[w] += v


@njit(inline="always", nogil=True)
def _rows_out(flat, plane, Wf):
    """plane[h, :] = flat[h·Wf : h·Wf + W]: the valid columns of flat rows of length Wf."""
    H, W = plane.shape
    for h in range(H):
        src = flat[h * Wf:]
        dst = plane[h]
        for w in range(W):
            dst[w] = src[w]


@njit(inline="always", nogil=True)
def _taps_flat(out, w, src, Wr, dh, dw, n):
    """out[k] = Σ_ij w[i, j] · src[k + i·dh·Wr + j·dw] for k < n, the taps added in (i, j)
    order: for a 3×3 kernel at unit column dilation one pass over out with the nine weights in
    registers (the column offsets 1 and 2 must be constants for the compiler to vectorise the
    loop well: runtime offsets made it five times slower), else one multiply-add pass per
    tap."""
    kh, kw = w.shape
    if kh == 3 and kw == 3 and dw == 1:
        w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
        w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
        w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
        r0 = src
        r1 = src[dh * Wr:]
        r2 = src[2 * dh * Wr:]
        for k in range(n):
            out[k] = (w00 * r0[k] + w01 * r0[k + 1] + w02 * r0[k + 2]
                      + w10 * r1[k] + w11 * r1[k + 1] + w12 * r1[k + 2]
                      + w20 * r2[k] + w21 * r2[k + 1] + w22 * r2[k + 2])
        return
    out[:n] = 0
    for i in range(kh):
        for j in range(kw):
            wv = w[i, j]
            v = src[i * dh * Wr + j * dw:]
            for k in range(n):
                out[k] += wv * v[k]


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot(a, v, n):
    """Σ_{k<n} a[k]·v[k], compiled with reassociation allowed, so that the compiler keeps
    several vector partial sums instead of one serial chain (eight times faster at n = 224).
    The order of the additions is fixed by the compiled loop and n alone: the bits repeat run
    to run and do not depend on the thread count."""
    total = a[0] * v[0]
    for k in range(1, n):
        total += a[k] * v[k]
    return total


@njit(cache=True, nogil=True)
def _depthwise_forward_flat(x, w, y, bias, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """y[b, c, oh, ow] = Σ_ij w[b, c, i, j] · x[b, c, oh − ph + i·dh, ow − pw + j·dw] at unit
    stride, x zero outside, each output summed in (i, j) order, over flat rows; then
    + bias[b·C + c] when ``bias`` is not empty."""
    nb, C = x.shape[0], x.shape[1]
    padded, Wp = _flat_plane(x, ph, pw, kw, dw)
    n = (Ho - 1) * Wp + Wo
    flat = np.empty(n, dtype=y.dtype)
    for b in range(nb):
        for c in range(C):
            _fill_padded(x[b, c], padded, ph, pw, Wp)
            _taps_flat(flat, w[b, c], padded, Wp, dh, dw, n)
            _rows_out(flat, y[b, c], Wp)
            if bias.size:
                _add_to_plane(y[b, c], bias[b * C + c])


@njit(cache=True, nogil=True)
def _depthwise_backward_input_flat(gy, w, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """The input gradient at unit stride: the scatter of the forward turned into a gather over
    flat rows, gx[h, x] = Σ_ij w[i, j] · gy[h + ph − i·dh, x + pw − j·dw] (gy zero outside),
    read from a copy of gy with a zero border of ((kh − 1)·dh, (kw − 1)·dw) and row length Wq
    in which every index is in range: the forward loop of the flipped kernel, so the products
    are added in reverse tap order. A plane whose kernel holds a NaN or an infinity takes the
    plane-block scatter instead: the gather would also multiply it by gy's zero border and
    spread it to pixels its tap never reads."""
    nb, C, H, W = gx.shape
    bh, bw = (kh - 1) * dh, (kw - 1) * dw
    Wq = Wo + 2 * bw
    n = (H - 1) * Wq + W
    gyb = np.zeros((Ho + 2 * bh) * Wq + bw, dtype=gx.dtype)
    flat = np.empty(n, dtype=gx.dtype)
    flipped = np.empty((kh, kw), dtype=gx.dtype)
    for b in range(nb):
        for c in range(C):
            if not _all_finite(w[b, c]):
                _depthwise_backward_input_blocks(gy[b:b + 1, c:c + 1], w[b:b + 1, c:c + 1],
                                                 gx[b:b + 1, c:c + 1], kh, kw, sh, sw, ph,
                                                 pw, dh, dw, Ho, Wo)
                continue
            _fill_padded(gy[b, c], gyb, bh, bw, Wq)
            # flat position k = h·Wq + x reads tap (i, j) at gyb offset
            # (ph + (kh − 1 − i)·dh)·Wq + pw + (kw − 1 − j)·dw: the flipped kernel's tap
            # (kh − 1 − i, kw − 1 − j), read from ph·Wq + pw on
            for i in range(kh):
                for j in range(kw):
                    flipped[kh - 1 - i, kw - 1 - j] = w[b, c, i, j]
            _taps_flat(flat, flipped, gyb[ph * Wq + pw:], Wq, dh, dw, n)
            _rows_out(flat, gx[b, c], Wq)


@njit(cache=True, nogil=True)
def _depthwise_backward_weight_flat(x, gy, gw, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """gw[b, c, i, j] += Σ_{oh, ow} gy[b, c, oh, ow] · x[b, c, oh − ph + i·dh, ow − pw + j·dw]
    at unit stride: gy copied into flat rows of the bordered plane's row length Wp, zero in
    the Wp − Wo columns past each row, so that every tap's sum is one flat dot product of
    length Ho·Wp (:func:`_dot`). A plane of x holding a NaN or an infinity takes the plane
    block instead: the zero columns would multiply it where no tap reads it."""
    nb, C = x.shape[0], x.shape[1]
    padded, Wp = _flat_plane(x, ph, pw, kw, dw)
    n = Ho * Wp
    gyq = np.zeros(n, dtype=gw.dtype)
    for b in range(nb):
        for c in range(C):
            if not _all_finite(x[b, c]):
                _depthwise_backward_weight_blocks(x[b:b + 1, c:c + 1], gy[b:b + 1, c:c + 1],
                                                  gw[b:b + 1, c:c + 1], kh, kw, sh, sw, ph,
                                                  pw, dh, dw, Ho, Wo)
                continue
            _fill_padded(x[b, c], padded, ph, pw, Wp)
            for oh in range(Ho):
                src = gy[b, c, oh]
                dst = gyq[oh * Wp:]
                for ow in range(Wo):
                    dst[ow] = src[ow]
            for i in range(kh):
                for j in range(kw):
                    gw[b, c, i, j] += _dot(gyq, padded[i * dh * Wp + j * dw:], n)


@njit(inline="always", nogil=True)
def _planes_in(a, first, n, buf, ph, pw, Wp):
    """buf[(h + ph)·Wp + w + pw, p] = a[b, c, h, w] for the planes first ≤ (b, c) < first + n
    of a [nb, C, H, W] (counted b-major) as lanes p < n of a plane block; its border is
    never written."""
    C, H, W = a.shape[1], a.shape[2], a.shape[3]
    for p in range(n):
        plane = a[(first + p) // C, (first + p) % C]
        for h in range(H):
            row = plane[h]
            base = (h + ph) * Wp + pw
            for w in range(W):
                buf[base + w, p] = row[w]


@njit(inline="always", nogil=True)
def _planes_out(buf, a, first, n, ph, pw, Wp):
    """The transpose of :func:`_planes_in`: a[b, c, h, w] = buf[(h + ph)·Wp + w + pw, p]."""
    C, H, W = a.shape[1], a.shape[2], a.shape[3]
    for p in range(n):
        plane = a[(first + p) // C, (first + p) % C]
        for h in range(H):
            row = plane[h]
            base = (h + ph) * Wp + pw
            for w in range(W):
                row[w] = buf[base + w, p]


@njit(inline="always", nogil=True)
def _taps_in(w, first, n, wt):
    """wt[i·kw + j, p] = w[b, c, i, j] for the planes first ≤ (b, c) < first + n; the lanes
    from n on are zero."""
    C, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    wt[:, :] = 0
    for p in range(n):
        for i in range(kh):
            for j in range(kw):
                wt[i * kw + j, p] = w[(first + p) // C, (first + p) % C, i, j]


@njit(cache=True, nogil=True)
def _depthwise_forward_blocks(x, w, y, bias, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """The forward over plane blocks: out[pixel, p] = Σ_ij wt[(i, j), p] · block[(oh·sh + i·dh)
    ·Wp + ow·sw + j·dw, p], each output summed in (i, j) order, the p loop a full vector; for a
    3×3 kernel the nine products of a pixel in one expression, else one pass per tap. Then
    + bias[plane] when ``bias`` is not empty."""
    nb, C, H, W = x.shape
    planes = nb * C
    Wp = W + 2 * pw
    block = np.zeros(((H + 2 * ph) * Wp, PLANE_BLOCK), dtype=x.dtype)
    out = np.empty((Ho * Wo, PLANE_BLOCK), dtype=y.dtype)
    wt = np.empty((kh * kw, PLANE_BLOCK), dtype=y.dtype)
    offs = np.empty(kh * kw, dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            offs[i * kw + j] = i * dh * Wp + j * dw
    for first in range(0, planes, PLANE_BLOCK):
        n = builtins.min(PLANE_BLOCK, planes - first)
        _planes_in(x, first, n, block, ph, pw, Wp)
        _taps_in(w, first, n, wt)
        if kh * kw == 9:
            w0, w1, w2, w3, w4 = wt[0], wt[1], wt[2], wt[3], wt[4]
            w5, w6, w7, w8 = wt[5], wt[6], wt[7], wt[8]
            for oh in range(Ho):
                for ow in range(Wo):
                    q = oh * sh * Wp + ow * sw
                    o = out[oh * Wo + ow]
                    b0, b1, b2 = block[q + offs[0]], block[q + offs[1]], block[q + offs[2]]
                    b3, b4, b5 = block[q + offs[3]], block[q + offs[4]], block[q + offs[5]]
                    b6, b7, b8 = block[q + offs[6]], block[q + offs[7]], block[q + offs[8]]
                    for p in range(PLANE_BLOCK):
                        o[p] = (w0[p] * b0[p] + w1[p] * b1[p] + w2[p] * b2[p]
                                + w3[p] * b3[p] + w4[p] * b4[p] + w5[p] * b5[p]
                                + w6[p] * b6[p] + w7[p] * b7[p] + w8[p] * b8[p])
        else:
            out[:, :] = 0
            for t in range(kh * kw):
                wv = wt[t]
                for oh in range(Ho):
                    for ow in range(Wo):
                        o = out[oh * Wo + ow]
                        v = block[oh * sh * Wp + ow * sw + offs[t]]
                        for p in range(PLANE_BLOCK):
                            o[p] += wv[p] * v[p]
        _planes_out(out, y, first, n, 0, 0, Wo)
        if bias.size:
            for p in range(n):
                _add_to_plane(y[(first + p) // C, (first + p) % C], bias[first + p])


@njit(cache=True, nogil=True)
def _depthwise_backward_input_blocks(gy, w, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """The transpose of the forward in x over plane blocks: every gy·w product is added to the
    bordered pixel it came from, in the fixed order (i, j, oh, ow), and the interior copied
    out. A scatter: exact for any weights, NaN and infinities included."""
    nb, C, H, W = gx.shape
    planes = nb * C
    Wp = W + 2 * pw
    acc = np.empty(((H + 2 * ph) * Wp, PLANE_BLOCK), dtype=gx.dtype)
    g = np.empty((Ho * Wo, PLANE_BLOCK), dtype=gx.dtype)
    wt = np.empty((kh * kw, PLANE_BLOCK), dtype=gx.dtype)
    for first in range(0, planes, PLANE_BLOCK):
        n = builtins.min(PLANE_BLOCK, planes - first)
        _planes_in(gy, first, n, g, 0, 0, Wo)
        _taps_in(w, first, n, wt)
        acc[:, :] = 0
        for i in range(kh):
            for j in range(kw):
                wv = wt[i * kw + j]
                for oh in range(Ho):
                    for ow in range(Wo):
                        d = acc[(oh * sh + i * dh) * Wp + ow * sw + j * dw]
                        gv = g[oh * Wo + ow]
                        for p in range(PLANE_BLOCK):
                            d[p] += wv[p] * gv[p]
        _planes_out(acc, gx, first, n, ph, pw, Wp)


@njit(cache=True, nogil=True)
def _depthwise_backward_weight_blocks(x, gy, gw, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """gw[b, c, i, j] += Σ_{oh, ow} gy · x at the pixel tap (i, j) reads, over plane blocks:
    one vector of per-plane sums per tap, each over (oh, ow) in order."""
    nb, C, H, W = x.shape
    planes = nb * C
    Wp = W + 2 * pw
    block = np.zeros(((H + 2 * ph) * Wp, PLANE_BLOCK), dtype=x.dtype)
    g = np.empty((Ho * Wo, PLANE_BLOCK), dtype=x.dtype)
    acc = np.empty(PLANE_BLOCK, dtype=gw.dtype)
    for first in range(0, planes, PLANE_BLOCK):
        n = builtins.min(PLANE_BLOCK, planes - first)
        _planes_in(x, first, n, block, ph, pw, Wp)
        _planes_in(gy, first, n, g, 0, 0, Wo)
        for i in range(kh):
            for j in range(kw):
                acc[:] = 0
                for oh in range(Ho):
                    for ow in range(Wo):
                        v = block[(oh * sh + i * dh) * Wp + ow * sw + j * dw]
                        gv = g[oh * Wo + ow]
                        for p in range(PLANE_BLOCK):
                            acc[p] += gv[p] * v[p]
                for p in range(n):
                    b, c = (first + p) // C, (first + p) % C
                    gw[b, c, i, j] += acc[p]


# The parallel loops over chunks of planes, one per step (forward, input gradient, weight
# gradient), each running the flat-row or the plane-block kernel on its chunks. (One loop for
# all six kernels compiled in 20 s; three of two take about 10 s in all.)

@njit(cache=True, nogil=True, parallel=True)
def _depthwise_forward_parallel(blocks, x, w, y, bias, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo,
                                per):
    n = y.shape[0]
    for chunk in prange((n + per - 1) // per):
        s = chunk * per
        e = builtins.min(n, s + per)
        b = bias[s:e] if bias.size else bias
        if blocks:
            _depthwise_forward_blocks(x[s:e], w[s:e], y[s:e], b, kh, kw, sh, sw, ph, pw, dh, dw,
                                      Ho, Wo)
        else:
            _depthwise_forward_flat(x[s:e], w[s:e], y[s:e], b, kh, kw, sh, sw, ph, pw, dh, dw,
                                    Ho, Wo)


@njit(cache=True, nogil=True, parallel=True)
def _depthwise_backward_input_parallel(blocks, gy, w, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho,
                                       Wo, per):
    n = gx.shape[0]
    for chunk in prange((n + per - 1) // per):
        s = chunk * per
        e = builtins.min(n, s + per)
        if blocks:
            _depthwise_backward_input_blocks(gy[s:e], w[s:e], gx[s:e], kh, kw, sh, sw, ph, pw,
                                             dh, dw, Ho, Wo)
        else:
            _depthwise_backward_input_flat(gy[s:e], w[s:e], gx[s:e], kh, kw, sh, sw, ph, pw,
                                           dh, dw, Ho, Wo)


@njit(cache=True, nogil=True, parallel=True)
def _depthwise_backward_weight_parallel(blocks, x, gy, gw, kh, kw, sh, sw, ph, pw, dh, dw, Ho,
                                        Wo, per):
    n = gw.shape[0]
    for chunk in prange((n + per - 1) // per):
        s = chunk * per
        e = builtins.min(n, s + per)
        if blocks:
            _depthwise_backward_weight_blocks(x[s:e], gy[s:e], gw[s:e], kh, kw, sh, sw, ph, pw,
                                              dh, dw, Ho, Wo)
        else:
            _depthwise_backward_weight_flat(x[s:e], gy[s:e], gw[s:e], kh, kw, sh, sw, ph, pw,
                                            dh, dw, Ho, Wo)


# step -> (flat-row kernel, plane-block kernel, parallel loop)
_DEPTHWISE = ((_depthwise_forward_flat, _depthwise_forward_blocks, _depthwise_forward_parallel),
              (_depthwise_backward_input_flat, _depthwise_backward_input_blocks,
               _depthwise_backward_input_parallel),
              (_depthwise_backward_weight_flat, _depthwise_backward_weight_blocks,
               _depthwise_backward_weight_parallel))


def _depthwise(step, a, b, out, geo, bias=None):
    """Run depthwise ``step`` (0 forward, 1 input gradient, 2 weight gradient) over the planes
    [B·C, 1, ·, ·] of a, b and out: flat rows at unit stride on planes wider than
    FLAT_MIN_WIDTH, plane blocks otherwise; in parallel chunks of planes (whole blocks) when
    the call is large enough, else on the calling thread. ``bias`` (forward only): one value
    per plane, or None."""
    kh, kw, sh, sw, *_, Ho, Wo = geo
    blocks = not (sh == 1 and sw == 1 and Wo > FLAT_MIN_WIDTH)
    per = _parallel(out.shape[0], kh * kw * Ho * Wo, PLANE_BLOCK if blocks else 1)
    biases = () if step else (np.zeros(0, dtype=out.dtype) if bias is None else bias,)
    if per:
        _DEPTHWISE[step][2](blocks, a, b, out, *biases, *geo, per)
    else:
        _DEPTHWISE[step][blocks](a, b, out, *biases, *geo)


_pad_source = njit(inline="always")(pad_source)


@njit(cache=True, nogil=True)
def _pad_source_kernel(n, before, mode, out):
    """out[k] = geometry.pad_source(k, n, before, mode) for every padded position k."""
    for k in range(out.shape[0]):
        out[k] = _pad_source(k, n, before, mode)


@njit(cache=True, nogil=True)
def _pad_kernel(x, src_h, src_w, out):
    """out[n, i, j] = x[n, src_h[i], src_w[j]], or 0 where either source is −1."""
    for n in range(x.shape[0]):
        for i in range(src_h.shape[0]):
            si = src_h[i]
            dst = out[n, i]
            if si < 0:
                dst[:] = 0
                continue
            row = x[n, si]
            for j in range(src_w.shape[0]):
                sj = src_w[j]
                if sj >= 0:
                    dst[j] = row[sj]
                else:
                    dst[j] = 0


@njit(cache=True, nogil=True)
def _pad_backward_kernel(g, src_h, src_w, out):
    """The transpose of ``_pad_kernel``: out[n, s_h, s_w] sums g over the padded pixels that
    copied it, in (i, j) order."""
    for n in range(g.shape[0]):
        out[n, :, :] = 0
        for i in range(src_h.shape[0]):
            si = src_h[i]
            if si < 0:
                continue
            row = g[n, i]
            dst = out[n, si]
            for j in range(src_w.shape[0]):
                sj = src_w[j]
                if sj >= 0:
                    dst[sj] += row[j]


@njit(cache=True, nogil=True)
def _scatter_add_kernel(index, g, out):
    """out[index[k]] += g[k] in index order (a repeated position accumulates)."""
    for k in range(index.shape[0]):
        out[index[k]] += g[k]


# --- padding -----------------------------------------------------------------------------------

def _pad_sources(fn, n, before, after, mode):
    """Source index of every padded position along one axis (−1: a zero of "zeros" mode),
    from the compiled ``geometry.pad_source``, checked, since the kernels use it without
    bounds checks."""
    src = np.empty(n + before + after, dtype=np.int64)
    _pad_source_kernel(n, before, pad_mode_code(fn, mode), src)
    # The kernels index without bounds checks: an out-of-range source must stop here (callers
    # bound the pads per mode; this is the last line before unchecked indexing).
    lowest = -1 if mode == "zeros" else 0
    if src.size and (src.min() < lowest or src.max() >= n):
        raise ValueError(f"{fn}: pads ({before}, {after}) are invalid for mode={mode!r} "
                         f"and size {n}")
    return src


def _planes(kernel, src, src_h, src_w, out):
    """Run a padding kernel over the [N, ·, ·] planes in chunks on the pool."""
    def work(s, e):
        kernel(src[s:e], src_h, src_w, out[s:e])
    if out.size:
        _run_chunks(out.shape[0], work, out.shape[1] * out.shape[2])


def pad(x, pads, mode):
    top, bottom, left, right = pads
    H, W = x.shape[-2:]
    src_h = _pad_sources("pad", H, top, bottom, mode)
    src_w = _pad_sources("pad", W, left, right, mode)
    x3 = np.ascontiguousarray(x).reshape((-1, H, W))
    out = np.empty((x3.shape[0], src_h.size, src_w.size), dtype=x.dtype)
    _planes(_pad_kernel, x3, src_h, src_w, out)
    return out.reshape(x.shape[:-2] + (src_h.size, src_w.size))


def pad_backward(g, pads, mode):
    top, bottom, left, right = pads
    Hp, Wp = g.shape[-2:]
    H, W = Hp - top - bottom, Wp - left - right
    src_h = _pad_sources("pad_backward", H, top, bottom, mode)
    src_w = _pad_sources("pad_backward", W, left, right, mode)
    g3 = np.ascontiguousarray(g).reshape((-1, Hp, Wp))
    out = np.empty((g3.shape[0], H, W), dtype=g.dtype)
    _planes(_pad_backward_kernel, g3, src_h, src_w, out)
    return out.reshape(g.shape[:-2] + (H, W))


# --- im2col / col2im ---------------------------------------------------------------------------

def _geometry_args(kernel, stride, padding, dilation, Ho, Wo):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    return (int(kh), int(kw), int(sh), int(sw), int(ph), int(pw), int(dh), int(dw),
            int(Ho), int(Wo))


def im2col(x, kernel, stride, padding, dilation):
    x = np.ascontiguousarray(x)
    B, C = x.shape[:2]
    Ho, Wo = output_size(x.shape, kernel, stride, padding, dilation)
    cols = np.empty((B, C * kernel[0] * kernel[1], Ho * Wo), dtype=x.dtype)
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)

    def work(s, e):
        _im2col_kernel(x[s:e], cols[s:e], *geo)
    if cols.size:
        _run_chunks(B, work, cols.shape[1] * cols.shape[2])
    return cols


def col2im(cols, x_shape, kernel, stride, padding, dilation):
    B, C, H, W = x_shape
    Ho, Wo = output_size(x_shape, kernel, stride, padding, dilation)
    cols = np.ascontiguousarray(cols).reshape(B, C * kernel[0] * kernel[1], Ho * Wo)
    gx = np.zeros(tuple(x_shape), dtype=cols.dtype)
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)

    def work(s, e):
        _col2im_kernel(cols[s:e], gx[s:e], *geo)
    if gx.size and cols.size:
        _run_chunks(B, work, cols.shape[1] * cols.shape[2])
    return gx


# --- convolution -------------------------------------------------------------------------------

def _is_pointwise(kernel, stride, padding):
    """A 1×1 kernel with stride 1 and no padding: the columns are the input itself."""
    return (tuple(kernel) == (1, 1) and tuple(stride) == (1, 1)
            and tuple(padding) == (0, 0))


def _columns(x, s, e, rows, L, geo, pointwise):
    """Examples s..e of x unfolded to [e − s, rows, L]: a view of x for a pointwise kernel,
    else compiled im2col into this thread's scratch buffer."""
    if pointwise:
        return x[s:e].reshape(e - s, rows, L)
    cols = _scratch((e - s, rows, L), x.dtype)
    _im2col_kernel(x[s:e], cols, *geo)
    return cols


def _is_depthwise(weight_shape, channels, groups):
    """One input and one output channel per group: a direct kernel beats B·C tiny products."""
    return groups == channels and weight_shape[-4] == groups and weight_shape[-3] == 1


def _planes_of(a):
    """An NCHW array as B·C single-channel images [B·C, 1, H, W] (a view)."""
    B, C, H, W = a.shape
    return a.reshape(B * C, 1, H, W)


def _plane_weights(weight, B, C, dtype):
    """A depthwise weight, shared [C, 1, kh, kw] or per-example [B, C, 1, kh, kw], as one
    kernel per image plane [B·C, 1, kh, kw]. The planes are independent, so the depthwise work
    splits over (example, channel) pairs and a single example still fills every thread."""
    kh, kw = weight.shape[-2:]
    w = np.broadcast_to(weight if weight.ndim == 5 else weight[None], (B, C, 1, kh, kw))
    # always a writeable copy: a read-only view (what broadcasting returns) is another type
    # to Numba, and every kernel would be compiled a second time for it
    return np.array(w, dtype=dtype, order="C").reshape(B * C, 1, kh, kw)


def _grouped(weight, groups, dtype):
    """``geometry.grouped_weight`` of a contiguous copy in ``dtype``."""
    return grouped_weight(np.ascontiguousarray(weight, dtype=dtype), groups)


def conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None):
    dtype = np.result_type(x, weight)
    x = np.ascontiguousarray(x, dtype=dtype)
    B, C = x.shape[:2]
    kernel = weight.shape[-2:]
    Cout = weight.shape[-4]
    Ho, Wo = output_size(x.shape, kernel, stride, padding, dilation)
    L, rows = Ho * Wo, C * kernel[0] * kernel[1]
    per_example = weight.ndim == 5
    # the bias as one row per example, added by each path to the output it has just written
    b_rows = None if bias is None else np.ascontiguousarray(
        np.broadcast_to(bias, (B, Cout)), dtype=dtype)
    if not (B * Cout * L and rows):                            # nothing to convolve
        y = np.zeros((B, Cout, Ho, Wo), dtype=dtype)
        return y if b_rows is None else y + b_rows[:, :, None, None]
    y = np.empty((B, Cout, Ho, Wo), dtype=dtype)               # every path writes all of it
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)
    if _is_depthwise(weight.shape, C, groups):
        xp, wp, yp = _planes_of(x), _plane_weights(weight, B, C, dtype), _planes_of(y)
        _depthwise(0, xp, wp, yp, geo, None if b_rows is None else b_rows.reshape(B * C))
        return y
    w = _grouped(weight, groups, dtype)                       # [1|B, G, Cout/G, K]

    pointwise = _is_pointwise(kernel, stride, padding)
    cost = (Cout // groups + 1) * rows * L                    # per example
    if B < MIN_CHUNKS and B * cost >= INLINE_COST and not pointwise:
        _banded_forward(x, w, y, geo, groups, per_example, b_rows)
        return y

    def work(s, e):
        cols = _columns(x, s, e, rows, L, geo, pointwise)
        np.matmul(w[s:e] if per_example else w,
                  cols.reshape(e - s, groups, rows // groups, L),
                  out=y[s:e].reshape(e - s, groups, Cout // groups, L))
        if b_rows is not None:                                # while the chunk is in cache
            y[s:e] += b_rows[s:e, :, None, None]
    _run_chunks(B, work, cost, rows * L * dtype.itemsize)
    return y


def _bands(B: int, Ho: int) -> tuple[int, int]:
    """(output rows per band, bands per example) for the banded forward: ⌈MIN_CHUNKS/B⌉ bands
    of whole rows, from the shapes alone."""
    per_band = math.ceil(Ho / builtins.min(Ho, math.ceil(MIN_CHUNKS / B)))
    return per_band, math.ceil(Ho / per_band)


def _banded_forward(x, w, y, geo, groups, per_example, b_rows):
    """The forward of a few large examples (batch 1 above all), cut into bands of output rows
    so that every thread has work: ⌈MIN_CHUNKS/B⌉ bands per example (from the shapes alone),
    each unfolded by :func:`_im2col_band_kernel` and multiplied into its rows of y."""
    B, Cout, Ho, Wo = y.shape
    kh, kw = geo[0], geo[1]
    rows = x.shape[1] * kh * kw
    per_band, bands = _bands(B, Ho)
    y3 = y.reshape(B, groups, Cout // groups, Ho * Wo)

    def work(s, e):
        for item in range(s, e):
            b, band = divmod(item, bands)
            oh0 = band * per_band
            oh1 = builtins.min(Ho, oh0 + per_band)
            cols = _scratch((rows, (oh1 - oh0) * Wo), x.dtype)
            _im2col_band_kernel(x[b], cols, *geo[:8], Wo, oh0, oh1)
            band = y3[b, :, :, oh0 * Wo:oh1 * Wo]
            np.matmul(w[b] if per_example else w[0],
                      cols.reshape(groups, rows // groups, (oh1 - oh0) * Wo), out=band)
            if b_rows is not None:
                band += b_rows[b].reshape(groups, Cout // groups, 1)
    _run_chunks(B * bands, work, (Cout // groups + 1) * rows * per_band * Wo)


def conv2d_backward_input(gy, weight, x_shape, stride, padding, dilation, groups):
    dtype = np.result_type(gy, weight)
    gy = np.ascontiguousarray(gy, dtype=dtype)
    B, Cout, Ho, Wo = gy.shape
    C = x_shape[1]
    kernel = weight.shape[-2:]
    L, rows = Ho * Wo, C * kernel[0] * kernel[1]
    per_example = weight.ndim == 5
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)
    if _is_depthwise(weight.shape, C, groups):
        # the direct kernel writes every pixel of gx (zeros only where it does not run)
        gx = (np.empty if math.prod(x_shape) and rows and L else np.zeros)(
            tuple(x_shape), dtype=dtype)
        if gx.size and rows and L:
            _depthwise(1, _planes_of(gy), _plane_weights(weight, B, C, dtype), _planes_of(gx),
                       geo)
        return gx
    gx = np.zeros(tuple(x_shape), dtype=dtype)
    # wᵀ [1|B, G, Cin/G·kh·kw, Cout/G], contiguous so each product is a plain GEMM
    wT = np.ascontiguousarray(np.swapaxes(_grouped(weight, groups, dtype), -1, -2))

    pointwise = _is_pointwise(kernel, stride, padding)

    def work(s, e):
        # a 1×1 kernel's column gradients are the input gradient itself
        gcols = gx[s:e] if pointwise else _scratch((e - s, rows, L), dtype)
        np.matmul(wT[s:e] if per_example else wT,
                  gy[s:e].reshape(e - s, groups, Cout // groups, L),
                  out=gcols.reshape(e - s, groups, rows // groups, L))
        if not pointwise:
            _col2im_kernel(gcols, gx[s:e], *geo)
    if gx.size and rows and L:
        _run_chunks(B, work, (Cout // groups + 1) * rows * L, rows * L * dtype.itemsize)
    return gx


def conv2d_backward_weight(x, gy, weight_shape, stride, padding, dilation, groups):
    dtype = np.result_type(x, gy)
    x = np.ascontiguousarray(x, dtype=dtype)
    gy = np.ascontiguousarray(gy, dtype=dtype)
    B, Cout, Ho, Wo = gy.shape
    C = x.shape[1]
    weight_shape = tuple(weight_shape)
    kernel = weight_shape[-2:]
    L, rows = Ho * Wo, C * kernel[0] * kernel[1]
    per_example = len(weight_shape) == 5
    grouped = (groups, Cout // groups, rows // groups)       # one example's [G, Cout/G, K]
    geo = _geometry_args(kernel, stride, padding, dilation, Ho, Wo)
    gw = np.zeros((B if per_example else 1,) + grouped, dtype=dtype)
    if gw.size == 0 or L == 0 or B == 0:
        return gw.reshape(weight_shape)
    if _is_depthwise(weight_shape, C, groups):
        return _depthwise_backward_weight(x, gy, kernel, geo, per_example).reshape(
            weight_shape)

    pointwise = _is_pointwise(kernel, stride, padding)

    # The products are formed transposed, cols_b · g_bᵀ [K, Cout/G]: OpenBLAS runs this
    # orientation (long reduction over L, both operands read along rows) markedly faster than
    # g_b · cols_bᵀ, and the small result is transposed back for free.
    def work(s, e):
        cols = _columns(x, s, e, rows, L, geo, pointwise)
        cols = cols.reshape(e - s, groups, rows // groups, L)
        gT = np.swapaxes(gy[s:e].reshape(e - s, *grouped[:2], L), -1, -2)
        if per_example:                                      # gK_bᵀ = cols_b · g_bᵀ
            gw[s:e] = np.swapaxes(np.matmul(cols, gT), -1, -2)
            return None
        acc = np.matmul(cols[0], gT[0])                      # Σ_b cols_b · g_bᵀ, b in order
        part = np.empty_like(acc)
        for k in range(1, e - s):
            np.matmul(cols[k], gT[k], out=part)
            acc += part
        return acc

    partials = _run_chunks(B, work, (Cout // groups + 1) * rows * L, rows * L * dtype.itemsize)
    if not per_example:
        for acc in partials:                                 # chunks in batch order
            gw[0] += np.swapaxes(acc, -1, -2)
    return gw.reshape(weight_shape)


def _depthwise_backward_weight(x, gy, kernel, geo, per_example):
    """The depthwise weight gradient through the direct kernel, one kernel gradient per image
    plane [B·C, 1, kh, kw] (split over (example, channel) pairs like the forward); a shared
    kernel's gradient is then their sum over the batch, in batch order."""
    B, C = x.shape[:2]
    gwp = np.zeros((B * C, 1) + tuple(kernel), dtype=x.dtype)
    _depthwise(2, _planes_of(x), _planes_of(gy), gwp, geo)
    if per_example:
        return gwp
    gw = gwp[:C].copy()
    for b in range(1, B):
        gw += gwp[b * C:(b + 1) * C]
    return gw


def matmul(a, b):
    # OpenBLAS on one thread, as everywhere in this backend (see _single_threaded_blas)
    with _single_threaded_blas():
        return np.matmul(a, b)


def mix_experts(r, W):
    # One [B, E]·[E, P] product: E is small, so this is a pass over W per example, which
    # OpenBLAS does faster than a compiled loop and without a per-call thread hand-off.
    dtype = np.result_type(r, W)
    r = np.ascontiguousarray(r, dtype=dtype)
    W2 = np.ascontiguousarray(W, dtype=dtype).reshape(W.shape[0], -1)
    with _single_threaded_blas():
        return (r @ W2).reshape((r.shape[0],) + W.shape[1:])


def mix_experts_backward(r, W, gK):
    E, B = W.shape[0], r.shape[0]
    gK_flat = np.ascontiguousarray(gK).reshape(B, W[0].size)    # explicit: B may be 0
    W_flat = np.ascontiguousarray(W).reshape(E, -1)
    with _single_threaded_blas():
        gr = gK_flat @ W_flat.T                                  # gr_be = ⟨gK_b, W_e⟩
        gW = (np.ascontiguousarray(r.T) @ gK_flat).reshape(W.shape)  # gW_e = Σ_b r_be gK_b
    return gr, gW


# --- elementwise ---------------------------------------------------------------------------------

def permute(a, axes):
    # A view: NumPy's loops and OpenBLAS read transposed operands in place (a Linear layer's
    # Wᵀ, 1280×1000 in EfficientNet's classifier, was copied on every call), and the compiled
    # kernels make their inputs contiguous themselves. Nothing writes into a kernel's output.
    return np.transpose(a, axes)


@njit(cache=True, nogil=True)
def _sigmoid_finish(a, t, out, y):
    """out = 1/(1 + t) where a ≥ 0, else t/(1 + t), for t = exp(−|a|); and y = a·out when y
    is not empty (SiLU)."""
    one = np.ones(1, dtype=out.dtype)[0]
    for k in range(a.shape[0]):
        out[k] = (one if a[k] >= 0 else t[k]) / (one + t[k])
    if y.size:
        for k in range(a.shape[0]):
            y[k] = a[k] * out[k]


def _sigmoid(a, with_silu):
    # numpy_ref's formula, bit for bit: t = exp(−|a|) by NumPy's vectorised exp in place, then
    # one compiled pass for the division and the choice of branch (and SiLU's product), where
    # numpy_ref's composition makes eight passes; chunks on the pool for large arrays (NumPy's
    # loops release the GIL).
    shape = np.shape(a)
    a = np.ascontiguousarray(a).reshape(-1)              # (ascontiguousarray makes 0-d 1-d)
    t, out = np.empty_like(a), np.empty_like(a)
    y = np.empty_like(a) if with_silu else np.empty(0, dtype=a.dtype)

    def work(s, e):
        np.abs(a[s:e], out=t[s:e])
        np.negative(t[s:e], out=t[s:e])
        np.exp(t[s:e], out=t[s:e])
        _sigmoid_finish(a[s:e], t[s:e], out[s:e], y[s:e] if with_silu else y)
    if out.size * ELEMENTWISE_COST < INLINE_COST:
        work(0, out.size)
    else:
        _run_chunks(out.size, work, ELEMENTWISE_COST)
    return out.reshape(shape), (y.reshape(shape) if with_silu else None)


def sigmoid(a):
    return _sigmoid(a, False)[0]


def silu(a):
    s, y = _sigmoid(a, True)
    return y, s


@njit(cache=True, nogil=True)
def _erf_kernel(a, out):
    for k in range(a.shape[0]):
        out[k] = math.erf(a[k])


def erf(a):
    # The one elementwise map NumPy lacks: compiled here rather than NumPy's per-element
    # Python call in numpy_ref.
    out = np.empty(a.shape, dtype=a.dtype)
    if out.size:
        _erf_kernel(np.ascontiguousarray(a).reshape(-1), out.reshape(-1))
    return out


# --- scatter ----------------------------------------------------------------------------------

def scatter_add(shape, index, g):
    index = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
    n = math.prod(shape)
    # The kernel indexes without bounds checks: a bad index must stop here.
    if index.size and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"scatter_add: index has values in [{index.min()}, "
                         f"{index.max()}]; expected 0 <= index < {n}")
    if g.size != index.size:
        raise ValueError(f"scatter_add: g has {g.size} elements; index has {index.size}")
    out = np.zeros(n, dtype=g.dtype)
    if n and index.size:
        _scatter_add_kernel(index, np.ascontiguousarray(g).reshape(-1), out)
    return out.reshape(shape)


# --- training kernels: batch norm, ReLU's gradient, the Adam step ----------------------------
# Batch norm works per channel on x viewed as [B, C, L] (L the pixels of one plane), the
# chunks cut over channels: each channel's statistics are its own, so no result depends on
# the chunking. Channel sums accumulate in float64 for either dtype (a float32 sum of
# N = B·H·W values would lose digits as N grows), in a fixed order that vectorises: a float64
# partial sum per pixel position l, over the batch in order, then those L partial sums in
# order. Per-channel results are rounded to the array's dtype before the elementwise passes,
# which run in that dtype.

@njit(inline="always", nogil=True)
def _channel_moments(x, c, acc, acc_sq):
    """(μ, σ²) of channel c of x [B, C, L] from one pass, in float64: with d = x − K for one
    value K of the channel (its first), μ = K + Σ d/N and σ² = (Σ d² − (Σ d)²/N)/N. The
    subtraction loses about (μ − K)²/σ² ≤ N units of float64 rounding, since no value of the
    channel lies more than √N·σ from μ; ``acc``/``acc_sq`` are [L] float64 scratch."""
    B, L = x.shape[0], x.shape[2]
    n = B * L
    K = np.float64(x[0, c, 0])
    acc[:] = 0.0
    acc_sq[:] = 0.0
    for b in range(B):
        row = x[b, c]
        for l in range(L):
            d = row[l] - K
            acc[l] += d
            acc_sq[l] += d * d
    total = 0.0
    total_sq = 0.0
    for l in range(L):
        total += acc[l]
        total_sq += acc_sq[l]
    return K + total / n, builtins.max(total_sq - total * total / n, 0.0) / n


@njit(cache=True, nogil=True)
def _batch_norm_forward_kernel(x, weight, bias, mean, var, inv_std, y, eps, batch, c0, c1):
    """Channels c0..c1 of x [B, C, L]. With ``batch``: μ = Σ x/N and σ² = Σ (x − μ)²/N in
    one pass (``_channel_moments``) into ``mean``/``var``; then inv_std = 1/√(σ² + ε) and
    y = (x − μ)·(inv_std·γ) + β (pass 2)."""
    B, L = x.shape[0], x.shape[2]
    one = np.ones(1, dtype=x.dtype)[0]          # in the array's dtype: no float64 detour
    acc, acc_sq = np.empty(L), np.empty(L)
    for c in range(c0, c1):
        if batch:
            mean[c], var[c] = _channel_moments(x, c, acc, acc_sq)
        s = one / np.sqrt(var[c] + eps)
        inv_std[c] = s
        mu_c, scale, shift = mean[c], s * weight[c], bias[c]
        for b in range(B):
            src, dst = x[b, c], y[b, c]
            for l in range(L):
                dst[l] = (src[l] - mu_c) * scale + shift


@njit(cache=True, nogil=True)
def _batch_norm_backward_kernel(g, x, weight, mean, inv_std, gx, gweight, gbias, batch,
                                c0, c1):
    """Channels c0..c1 of g and x [B, C, L]: Σ g and Σ g·(x − μ) in one pass (x̂ = (x − μ)·s
    is not stored), then gx = γs·(g − Σ g/N − (x − μ)·s·Σ g·x̂/N) (γs·g without ``batch``)."""
    B, L = x.shape[0], x.shape[2]
    n = B * L
    acc_g, acc_gx = np.empty(L), np.empty(L)
    k = np.empty(2, dtype=x.dtype)              # the pass-2 constants, rounded to the dtype
    for c in range(c0, c1):
        mu, s = mean[c], inv_std[c]
        mu64 = np.float64(mu)
        acc_g[:] = 0.0
        acc_gx[:] = 0.0
        for b in range(B):
            gr, xr = g[b, c], x[b, c]
            for l in range(L):
                acc_g[l] += gr[l]
                acc_gx[l] += gr[l] * (xr[l] - mu64)
        sum_g = 0.0
        sum_gx = 0.0
        for l in range(L):
            sum_g += acc_g[l]
            sum_gx += acc_gx[l]
        gbias[c] = sum_g
        gweight[c] = sum_gx * s
        scale = weight[c] * s
        if batch:
            k[0] = sum_g / n
            k[1] = sum_gx * s * s / n
            mean_g, slope = k[0], k[1]
            for b in range(B):
                gr, xr, dst = g[b, c], x[b, c], gx[b, c]
                for l in range(L):
                    dst[l] = scale * (gr[l] - mean_g - (xr[l] - mu) * slope)
        else:
            for b in range(B):
                gr, dst = g[b, c], gx[b, c]
                for l in range(L):
                    dst[l] = scale * gr[l]


# Parallel loops over chunks of channels (batch norm) and of elements (ReLU's gradient) on
# Numba's threads, like the depthwise kernels: every channel and element is its own, so no
# result depends on the chunking.

@njit(cache=True, nogil=True, parallel=True)
def _batch_norm_forward_parallel(x, weight, bias, mean, var, inv_std, y, eps, batch, per):
    C = x.shape[1]
    for chunk in prange((C + per - 1) // per):
        c0 = chunk * per
        _batch_norm_forward_kernel(x, weight, bias, mean, var, inv_std, y, eps, batch, c0,
                                   builtins.min(C, c0 + per))


@njit(cache=True, nogil=True, parallel=True)
def _batch_norm_backward_parallel(g, x, weight, mean, inv_std, gx, gweight, gbias, batch, per):
    C = x.shape[1]
    for chunk in prange((C + per - 1) // per):
        c0 = chunk * per
        _batch_norm_backward_kernel(g, x, weight, mean, inv_std, gx, gweight, gbias, batch,
                                    c0, builtins.min(C, c0 + per))


@njit(cache=True, nogil=True)
def _relu_kernel(a, out):
    """out = max(a, 0) as NumPy's maximum: a where a > 0 or a is NaN, else 0 (−0 too)."""
    zero = np.zeros(1, dtype=out.dtype)[0]
    for k in range(a.shape[0]):
        v = a[k]
        out[k] = v if (v > zero or v != v) else zero


@njit(cache=True, nogil=True, parallel=True)
def _relu_parallel(a, out, per):
    n = out.shape[0]
    for chunk in prange((n + per - 1) // per):
        s = chunk * per
        e = builtins.min(n, s + per)
        _relu_kernel(a[s:e], out[s:e])


def relu(a):
    shape = np.shape(a)
    a1 = np.ascontiguousarray(a).reshape(-1)
    out = np.empty_like(a1)
    per = _parallel(out.size, 1)
    if per:
        _relu_parallel(a1, out, per)
    elif out.size:
        _relu_kernel(a1, out)
    return out.reshape(shape)


@njit(cache=True, nogil=True, parallel=True)
def _relu_backward_parallel(a, g, out, per):
    n = out.shape[0]
    for chunk in prange((n + per - 1) // per):
        s = chunk * per
        e = builtins.min(n, s + per)
        _relu_backward_kernel(a[s:e], g[s:e], out[s:e])


def _channels_view(a, dtype):
    """x [B, C, ...] as a contiguous [B, C, L] array of ``dtype``."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(a.shape[0], a.shape[1],
                                                        math.prod(a.shape[2:]))


def _channel_vector(a, C, fill, dtype):
    """A [C] parameter as a contiguous array of ``dtype``; None as ``fill`` everywhere."""
    if a is None:
        return np.full(C, fill, dtype=dtype)
    return np.ascontiguousarray(a, dtype=dtype)


def batch_norm_forward(x, weight, bias, mean, var, eps):
    dtype = x.dtype
    x3 = _channels_view(x, dtype)
    B, C, L = x3.shape
    batch = mean is None
    mean = np.empty(C, dtype) if batch else np.array(mean, dtype=dtype)
    var = np.empty(C, dtype) if batch else np.array(var, dtype=dtype)
    inv_std = np.empty(C, dtype)
    y = np.empty_like(x3)
    gamma = _channel_vector(weight, C, 1, dtype)
    beta = _channel_vector(bias, C, 0, dtype)

    args = (x3, gamma, beta, mean, var, inv_std, y, dtype.type(eps), batch)
    per = _parallel(C, 3 * B * L)
    if per:
        _batch_norm_forward_parallel(*args, per)
    else:
        _batch_norm_forward_kernel(*args, 0, C)
    return y.reshape(x.shape), mean, var, inv_std


def batch_norm_backward(g, x, weight, mean, inv_std, batch_stats):
    dtype = x.dtype
    x3, g3 = _channels_view(x, dtype), _channels_view(g, dtype)
    B, C, L = x3.shape
    gx = np.empty_like(x3)
    gweight, gbias = np.empty(C, dtype), np.empty(C, dtype)
    gamma = _channel_vector(weight, C, 1, dtype)
    mean = np.ascontiguousarray(mean, dtype=dtype)
    inv_std = np.ascontiguousarray(inv_std, dtype=dtype)

    args = (g3, x3, gamma, mean, inv_std, gx, gweight, gbias, bool(batch_stats))
    per = _parallel(C, 2 * B * L)
    if per:
        _batch_norm_backward_parallel(*args, per)
    else:
        _batch_norm_backward_kernel(*args, 0, C)
    return gx.reshape(x.shape), gweight, gbias


@njit(cache=True, nogil=True)
def _relu_backward_kernel(a, g, out):
    """out[k] = g[k] where a[k] > 0, else 0 (a select: a NaN or inf in g stays out)."""
    zero = np.zeros(1, dtype=out.dtype)[0]
    for k in range(a.shape[0]):
        out[k] = g[k] if a[k] > zero else zero


def relu_backward(a, g):
    a1 = np.ascontiguousarray(a).reshape(-1)
    g1 = np.ascontiguousarray(g, dtype=a.dtype).reshape(-1)
    out = np.empty(a1.shape, dtype=a.dtype)

    per = _parallel(out.size, 1)
    if per:
        _relu_backward_parallel(a1, g1, out, per)
    elif out.size:
        _relu_backward_kernel(a1, g1, out)
    return out.reshape(a.shape)


@njit(cache=True, nogil=True)
def _adam_kernel(p, g, m, v, p_out, m_out, v_out, mode, decay, wd, one_minus_beta1, beta2,
                 one_minus_beta2, bias2, eps, step_size):
    """One Adam step per element, the operations in ``table.py``'s order; ``mode`` 1 is
    decoupled decay (AdamW), 2 the L2 term, 0 neither."""
    for k in range(p.shape[0]):
        pk, d = p[k], g[k]
        if mode == 1:
            pk = pk * decay
        elif mode == 2:
            d = d + pk * wd
        mk = m[k] + (d - m[k]) * one_minus_beta1
        vk = v[k] * beta2 + d * d * one_minus_beta2
        m_out[k], v_out[k] = mk, vk
        p_out[k] = pk - mk / (np.sqrt(vk) / bias2 + eps) * step_size


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    dtype = p.dtype
    flat = [np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in (p, g, m, v)]
    outs = [np.empty(p.size, dtype=dtype) for _ in range(3)]
    mode = 0 if weight_decay == 0 else (1 if decoupled else 2)
    scalars = adam_scalars(dtype, step, lr, beta1, beta2, eps, weight_decay)
    if p.size:
        _adam_kernel(*flat, *outs, mode, *scalars)
    return tuple(o.reshape(p.shape) for o in outs)
