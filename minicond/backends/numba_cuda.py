"""The CUDA backend: every kernel of the table as a ``@cuda.jit`` kernel on device arrays.

Layer (docs/architecture.md): bottom (see ``table.py`` for the signatures). Arrays are Numba device
arrays from ``from_numpy`` to ``to_numpy``: no kernel here copies data back to the host, so a
training step (forward, backward, optimizer update) stays on the GPU. The only host-to-device copies
besides ``from_numpy`` are the flat positions of ``gather``/``scatter_add`` (they arrive as NumPy
arrays, computed from shapes alone) and the random-number states of ``dropout_mask``.

Kernel families (``docs/cuda.md`` has the thread-to-output maps and the tiling):

* elementwise maps and zips over flat arrays, with NumPy broadcasting done by index arithmetic
  on a collapsed shape (no broadcast copy is made); ``permute`` and ``broadcast_to`` are the
  same strided gather with one input;
* reductions over any set of axes: a block per output with a shared-memory tree when the
  reduced extent is long, a thread per output when it is short;
* one tiled GEMM kernel (shared-memory tiles, a register block of outputs per thread) that
  serves ``matmul``, ``mix_experts`` and its gradients, and the three convolutions as implicit
  GEMMs whose operand tiles are gathered straight from the image: no column matrix is built;
* gathers for ``pad``/``pad_backward``/``im2col``/``col2im`` (each output has one writer, so
  no atomics and a fixed summation order), atomics only in ``scatter_add``;
* the training kernels: ReLU's gradient and the Adam step as one flat kernel each, batch norm
  as a composition of the reductions and zips.

Every kernel is built per dtype by a cached factory, so each float literal is a constant of the
array's dtype and float32 kernels contain no float64 arithmetic (``tests/test_cuda.py``
compiles them for sm_90 and checks the PTX). In Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), launches use a few threads and small tiles: the simulator runs
one Python thread per CUDA thread, and small tiles still exercise every boundary case.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import math
import sys
import threading
import warnings
from collections.abc import Callable

import numpy as np

from . import BackendUnavailableError, geometry
from .geometry import output_size, pad_mode_code
from .numpy_ref import adam_scalars

try:
    from numba import config as _numba_config
    from numba import cuda
    from numba import types as _nbt
    from numba.cuda.random import (
        create_xoroshiro128p_states,
        xoroshiro128p_next,
        xoroshiro128p_uniform_float64,
    )
    from numba.np import numpy_support as _numpy_support
    from numba.np.numpy_support import from_dtype as _from_dtype
except ImportError as err:  # pragma: no cover - numba-cuda is a dependency; this reports it
    _IMPORT_ERROR: ImportError | None = err
    SIMULATOR = False
else:
    _IMPORT_ERROR = None
    SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)

name = "cuda"

# The table defines ``sum`` and ``max``; host and device code use these for the builtins.
_min, _max = builtins.min, builtins.max

def _simulator_shared_arrays_under_a_lock() -> None:
    """Make the simulator's ``cuda.shared.array`` safe for the threads of a block.

    The simulator gives a block one array per source line: the first thread to reach the line
    looks it up in a dict, misses and stores a new one. Two threads that both miss before
    either stores get different arrays, and the block then computes a wrong result now and
    then (seen as rare wrong GEMM results under load). The same lookup under a lock closes
    that window; the key is the caller's (file, line), as in the simulator."""
    from numba.cuda.simulator import kernelapi

    unlocked = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        if shape == 0 or alignment is not None:     # dynamic shared memory; errors as before
            return unlocked(self, shape, dtype, alignment)
        with lock:
            res = self._allocations.get(key)
            if res is None:
                res = self._allocations[key] = np.empty(shape, np.dtype(_as_numpy(dtype)))
            return res

    kernelapi.FakeCUDAShared.array = array


def _as_numpy(dtype):
    """A Numba type (as kernels pass to ``cuda.shared.array``) or NumPy dtype as NumPy's."""
    return _numpy_support.as_dtype(dtype) if isinstance(dtype, _nbt.Type) else dtype


# Launch geometry. On a GPU: 256 threads per block for flat kernels and reductions; GEMM
# tiles of 64×64 outputs, 16 deep, with a 4×4 register block per thread (256 threads). In the
# simulator every CUDA thread is a Python thread, so the same code runs with 4-thread blocks
# and 8×8×8 tiles (4×4 per thread): still several blocks and tiles per problem.
if SIMULATOR:
    THREADS, MAX_BLOCKS, REDUCE_THREADS = 4, 2, 4
    TILE_M, TILE_N, TILE_K, REG_M, REG_N = 8, 8, 8, 4, 4
    # The simulator's block manager polls its threads in a loop that holds the GIL; with the
    # default 5 ms switch interval each simulated block waits mostly for the GIL.
    sys.setswitchinterval(_min(sys.getswitchinterval(), 2e-4))
    _simulator_shared_arrays_under_a_lock()
else:
    THREADS, MAX_BLOCKS, REDUCE_THREADS = 256, 8192, 256
    TILE_M, TILE_N, TILE_K, REG_M, REG_N = 64, 64, 16, 4, 4
# A reduced extent at least this long gets a block per output, shorter ones a thread.
BLOCK_REDUCE_MIN = 64
# Split the K loop of a GEMM over more blocks when the output tiles alone fill fewer than this.
GEMM_TARGET_BLOCKS = 264



def check_available() -> None:
    """Raise :class:`BackendUnavailableError` unless a CUDA driver or the simulator is here."""
    if _IMPORT_ERROR is not None:
        raise BackendUnavailableError(
            f"backend 'cuda' needs numba-cuda ({_IMPORT_ERROR}); install numba-cuda[cu12] or "
            "numba-cuda[cu13] to match your NVIDIA driver")
    if SIMULATOR or cuda.is_available():
        return
    raise BackendUnavailableError(
        "backend 'cuda' found no usable CUDA GPU or driver. For a GPU, install "
        "numba-cuda[cu12] or numba-cuda[cu13] to match the driver's CUDA version; to run the "
        "kernels in Numba's CUDA simulator instead (slow, for tests), set "
        "NUMBA_ENABLE_CUDASIM=1 in the environment before importing minicond")


def _nb(dtype) -> object:
    """The Numba scalar type of a NumPy dtype."""
    return _from_dtype(np.dtype(dtype))


# --- launch helpers ----------------------------------------------------------------------------

def _blocks(n: int) -> int:
    return _max(1, _min((n + THREADS - 1) // THREADS, MAX_BLOCKS))


if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    class _SimulatedArray(FakeCUDAArray):
        """A simulator device array whose host-side ``shape`` is a plain tuple, as a GPU
        device array's is (the simulator's refuses negative indices everywhere, though only
        kernel code must avoid them)."""

        @property
        def shape(self):
            return self._ary.shape

        def reshape(self, *args, **kwargs):
            return _SimulatedArray(self._ary.reshape(*args, **kwargs))

    def _device(host):
        return _SimulatedArray(np.array(host, order="C"))
else:
    def _device(host):
        # A fresh C-order copy: NumPy flags views such as ``w[None]`` as C-contiguous while
        # giving their size-1 axes arbitrary strides, which Numba's device reshape refuses.
        return cuda.to_device(np.array(host, order="C", copy=True))

    # Tiny grids are normal here (a bias of 8 values is one block): Numba's low-occupancy
    # warning would fire on most calls of a small model.
    with contextlib.suppress(ImportError):
        from numba.cuda.core import config as _cuda_config

        _cuda_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    _numba_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0


def _empty(shape, dtype):
    shape = tuple(int(s) for s in shape)
    if SIMULATOR:
        return _SimulatedArray(np.empty(shape, dtype=np.dtype(dtype)))
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def _flat(a):
    """A 1-D view of a C-contiguous device array (0-d arrays become length 1)."""
    return a.reshape(int(a.size))


def _contiguous_strides(shape) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= int(n)
    return strides[::-1]


def _collapse(shape, *strides_list):
    """Drop size-1 axes and merge neighbours that every operand walks contiguously, so the
    kernels index with as few divisions as possible. Returns (shape, strides per operand) as
    tuples of at least one axis."""
    keep = [d for d, n in enumerate(shape) if n != 1]
    out_shape = [int(shape[d]) for d in keep]
    out_strides = [[int(s[d]) for d in keep] for s in strides_list]
    d = len(out_shape) - 2
    while d >= 0:
        if all(st[d] == st[d + 1] * out_shape[d + 1] for st in out_strides):
            out_shape[d] *= out_shape[d + 1]
            del out_shape[d + 1]
            for st in out_strides:
                st[d] = st[d + 1]
                del st[d + 1]
        d -= 1
    if not out_shape:
        return (1,), tuple((0,) for _ in strides_list)
    return tuple(out_shape), tuple(tuple(st) for st in out_strides)


def _broadcast_strides(in_shape, out_shape) -> list[int]:
    """Element strides of a contiguous ``in_shape`` read as ``out_shape`` (0 on broadcast
    axes)."""
    pad = len(out_shape) - len(in_shape)
    shape = (1,) * pad + tuple(in_shape)
    strides = _contiguous_strides(shape)
    return [0 if n == 1 else s for n, s in zip(shape, strides, strict=True)]


_BUILT: list = []


def _kernel(f):
    """``cuda.jit`` for a kernel, remembered so that :func:`built_kernels` can list it."""
    kern = cuda.jit(f)
    _BUILT.append(kern)
    return kern


def built_kernels() -> list:
    """Every kernel dispatcher built so far in this process (each compiles per signature)."""
    return list(_BUILT)


# --- device functions --------------------------------------------------------------------------

@functools.cache
def _offset_fn():
    @cuda.jit(device=True, inline=True)
    def offset(i, shape, strides):
        """Element offset of flat index i of ``shape`` in an array walked with ``strides``."""
        nd = len(shape)
        if nd == 1:
            return i * strides[0]
        off = 0
        for d in range(nd - 1, -1, -1):
            q = i // shape[d]
            off += (i - q * shape[d]) * strides[d]
            i = q
        return off
    return offset


@functools.cache
def _scalar_ops(dtype) -> dict[str, Callable]:
    """Scalar device functions for one dtype; their constants have that dtype."""
    dt = np.dtype(dtype)
    zero, one = dt.type(0), dt.type(1)

    def device(f):
        return cuda.jit(device=True, inline=True)(f)

    ops = {
        "add": device(lambda x, y: x + y),
        "sub": device(lambda x, y: x - y),
        "mul": device(lambda x, y: x * y),
        "div": device(lambda x, y: x / y),
        "gt": device(lambda x, y: one if x > y else zero),
        "eq": device(lambda x, y: one if x == y else zero),
        "neg": device(lambda x: -x),
        "exp": device(lambda x: math.exp(x)),
        "log": device(lambda x: math.log(x)),
        "sqrt": device(lambda x: math.sqrt(x)),
        "log1p": device(lambda x: math.log1p(x)),
        "tanh": device(lambda x: math.tanh(x)),
        "erf": device(lambda x: math.erf(x)),
        # NaN stays NaN, like np.maximum
        "relu": device(lambda x: zero if x < zero else x),
        "power": device(lambda x, p: math.pow(x, p)),
        "identity": device(lambda x: x),
    }

    @cuda.jit(device=True, inline=True)
    def sigmoid(x):
        # t = e^{−|x|} ∈ (0, 1]: σ(x) = 1/(1+t) for x ≥ 0 and t/(1+t) below, no overflow
        t = math.exp(-abs(x))
        r = one / (one + t)
        return r if x >= zero else t * r

    @cuda.jit(device=True, inline=True)
    def maximum(x, y):
        # NaN wins, as in np.max: once acc is NaN, y > acc is false forever
        return y if (y > x or y != y) else x

    @cuda.jit(device=True, inline=True)
    def minimum(x, y):
        return y if (y < x or y != y) else x

    ops["sigmoid"] = sigmoid
    ops["maximum"] = maximum
    ops["minimum"] = minimum
    return ops


# --- creation and transfer ---------------------------------------------------------------------

def from_numpy(a, dtype):
    return _device(np.asarray(a, dtype=np.dtype(dtype), order="C"))


def to_numpy(a):
    return a.copy_to_host()


@functools.cache
def _fill_kernel(dtype):
    @_kernel
    def fill(out, value):
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = value
    return fill


def full(shape, value, dtype):
    dt = np.dtype(dtype)
    out = _empty(shape, dt)
    if out.size:
        _fill_kernel(dt)[_blocks(out.size), THREADS](_flat(out), dt.type(value))
    return out


@functools.cache
def _cast_kernel(src, dst):
    if np.dtype(dst) == np.bool_:
        zero = np.dtype(src).type(0)

        @_kernel
        def cast_to_bool(out, a):
            for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
                out[i] = a[i] != zero
        return cast_to_bool
    # conversion on store: truncation toward zero for int64, 0/1 from bool
    convert = np.dtype(dst).type

    @_kernel
    def cast(out, a):
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = convert(a[i])
    return cast


def astype(a, dtype):
    dt = np.dtype(dtype)
    out = _empty(a.shape, dt)
    if out.size:
        _cast_kernel(np.dtype(a.dtype), dt)[_blocks(out.size), THREADS](_flat(out), _flat(a))
    return out


# Random states for dropout: a fixed count (state s draws elements s, s + S, ...), so a seed
# gives the same mask on any launch geometry, the simulator's included. The states are seeded
# on the host (Numba's jump-ahead), so the count is kept small.
DROPOUT_STATES = 64


@functools.cache
def _dropout_kernel(dtype):
    dt = np.dtype(dtype)
    zero = dt.type(0)
    if dt == np.float32:
        # Numba's float32 uniform goes through float64; the top 24 bits of the 64-bit draw
        # give the same kind of number, k·2⁻²⁴ in [0, 1), in float32 arithmetic alone.
        shift, unit = np.uint64(40), np.float32(2.0 ** -24)

        @cuda.jit(device=True, inline=True)
        def uniform(states, s):
            return np.float32(xoroshiro128p_next(states, s) >> shift) * unit
    else:
        uniform = xoroshiro128p_uniform_float64

    @_kernel
    def dropout(out, states, p, scale):
        # state s draws the elements s, s + S, s + 2S, ... in order
        n_states = states.shape[0]
        for s in range(cuda.grid(1), n_states, cuda.gridsize(1)):
            for i in range(s, out.shape[0], n_states):
                out[i] = scale if uniform(states, s) >= p else zero
    return dropout


@contextlib.contextmanager
def _quiet_simulated_rng():
    """In the simulator the generator runs as Python on NumPy uint64 scalars, whose intended
    wrap-around NumPy reports as overflow, and Numba warns that its CPU seeding falls back to
    object mode; both are expected there and silenced. On a GPU this does nothing."""
    if not SIMULATOR:
        yield
        return
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.simplefilter("ignore")
        yield


def dropout_mask(shape, p, dtype, seed):
    dt = np.dtype(dtype)
    out = _empty(shape, dt)
    n = int(out.size)
    if n:
        n_states = _min(n, DROPOUT_STATES)
        scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
        with _quiet_simulated_rng():
            states = create_xoroshiro128p_states(n_states, seed=int(seed) % (1 << 64))
            _dropout_kernel(dt)[_blocks(n_states), THREADS](_flat(out), states, dt.type(p),
                                                             dt.type(scale))
    return out


# --- elementwise -------------------------------------------------------------------------------

@functools.cache
def _map_kernel(op, dtype):
    f = _scalar_ops(dtype)[op]

    @_kernel
    def map1(out, a):
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = f(a[i])
    return map1


@functools.cache
def _power_kernel(dtype):
    f = _scalar_ops(dtype)["power"]

    @_kernel
    def power_map(out, a, p):
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = f(a[i], p)
    return power_map


def _broadcast_binary_kernel(f):
    """out[i] = f(a[offset_a(i)], b[offset_b(i)]) over broadcast operands, one thread per
    output element; ``f`` is a device function, ``out``'s dtype is the caller's."""
    offset = _offset_fn()

    @_kernel
    def zip2(out, a, b, shape, sa, sb):
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = f(a[offset(i, shape, sa)], b[offset(i, shape, sb)])
    return zip2


@functools.cache
def _zip_kernel(op, dtype):
    return _broadcast_binary_kernel(_scalar_ops(dtype)[op])


@functools.cache
def _compare_kernel(op, dtype):
    """The comparison ``op`` of a and b, written into a bool ``out``."""
    test = {"lt": lambda x, y: x < y, "le": lambda x, y: x <= y, "gt": lambda x, y: x > y,
            "ge": lambda x, y: x >= y, "eq": lambda x, y: x == y,
            "ne": lambda x, y: x != y}[op]
    return _broadcast_binary_kernel(cuda.jit(device=True, inline=True)(test))


@functools.cache
def _where_kernel(dtype):
    offset = _offset_fn()

    @_kernel
    def where3(out, c, a, b, shape, sc, sa, sb):
        """out[i] = a[offset_a(i)] if c[offset_c(i)] else b[offset_b(i)]."""
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            if c[offset(i, shape, sc)]:
                out[i] = a[offset(i, shape, sa)]
            else:
                out[i] = b[offset(i, shape, sb)]
    return where3


def _map(op, a):
    out = _empty(a.shape, a.dtype)
    if out.size:
        _map_kernel(op, np.dtype(a.dtype))[_blocks(out.size), THREADS](_flat(out), _flat(a))
    return out


def _zip(op, a, b):
    out_shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    dt = np.result_type(a.dtype, b.dtype)
    out = _empty(out_shape, dt)
    if out.size:
        shape, (sa, sb) = _collapse(out_shape, _broadcast_strides(a.shape, out_shape),
                                    _broadcast_strides(b.shape, out_shape))
        _zip_kernel(op, dt)[_blocks(out.size), THREADS](_flat(out), _flat(a), _flat(b),
                                                        shape, sa, sb)
    return out


def add(a, b):
    return _zip("add", a, b)


def sub(a, b):
    return _zip("sub", a, b)


def mul(a, b):
    return _zip("mul", a, b)


def div(a, b):
    return _zip("div", a, b)


def gt(a, b):
    return _zip("gt", a, b)


def eq(a, b):
    return _zip("eq", a, b)


def maximum(a, b):
    return _zip("maximum", a, b)


def minimum(a, b):
    return _zip("minimum", a, b)


def compare(a, b, op):
    out_shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    out = _empty(out_shape, np.bool_)
    if out.size:
        shape, (sa, sb) = _collapse(out_shape, _broadcast_strides(a.shape, out_shape),
                                    _broadcast_strides(b.shape, out_shape))
        _compare_kernel(op, np.dtype(a.dtype))[_blocks(out.size), THREADS](
            _flat(out), _flat(a), _flat(b), shape, sa, sb)
    return out


def where(cond, a, b):
    out_shape = np.broadcast_shapes(tuple(cond.shape), tuple(a.shape), tuple(b.shape))
    dt = np.dtype(a.dtype)
    out = _empty(out_shape, dt)
    if out.size:
        shape, strides = _collapse(out_shape, *(_broadcast_strides(t.shape, out_shape)
                                                for t in (cond, a, b)))
        _where_kernel(dt)[_blocks(out.size), THREADS](
            _flat(out), _flat(cond), _flat(a), _flat(b), shape, *strides)
    return out


def neg(a):
    return _map("neg", a)


def exp(a):
    return _map("exp", a)


def log(a):
    return _map("log", a)


def sqrt(a):
    return _map("sqrt", a)


def log1p(a):
    return _map("log1p", a)


def tanh(a):
    return _map("tanh", a)


def erf(a):
    return _map("erf", a)


def relu(a):
    return _map("relu", a)


def sigmoid(a):
    return _map("sigmoid", a)


def power(a, p):
    dt = np.dtype(a.dtype)
    out = _empty(a.shape, dt)
    if out.size:
        _power_kernel(dt)[_blocks(out.size), THREADS](_flat(out), _flat(a), dt.type(p))
    return out


def power_tensor(a, b):
    return _zip("power", a, b)


# --- reductions and shape ----------------------------------------------------------------------

@functools.cache
def _reduce_kernels(op, dtype):
    """(thread-per-output, block-per-output) reductions with ``op`` = "add" or "maximum"."""
    ops = _scalar_ops(dtype)
    combine = ops[op]
    dt = np.dtype(dtype)
    init = dt.type(0) if op == "add" else dt.type(-np.inf)
    nbt = _nb(dt)
    offset = _offset_fn()
    width = REDUCE_THREADS

    @_kernel
    def reduce_thread(out, a, kshape, kstrides, rshape, rstrides, nred):
        """One thread per output: out[o] = ⊕_r a[base(o) + off(r)], r in order."""
        for o in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            base = offset(o, kshape, kstrides)
            acc = init
            for r in range(nred):
                acc = combine(acc, a[base + offset(r, rshape, rstrides)])
            out[o] = acc

    @_kernel
    def reduce_block(out, a, kshape, kstrides, rshape, rstrides, nred):
        """One block per output: each thread folds a strided slice of r, then a shared-memory
        tree combines the block's partial results."""
        buf = cuda.shared.array(width, nbt)
        tid = cuda.threadIdx.x
        for o in range(cuda.blockIdx.x, out.shape[0], cuda.gridDim.x):
            base = offset(o, kshape, kstrides)
            acc = init
            for r in range(tid, nred, width):
                acc = combine(acc, a[base + offset(r, rshape, rstrides)])
            buf[tid] = acc
            cuda.syncthreads()
            step = width // 2
            while step > 0:
                if tid < step:
                    buf[tid] = combine(buf[tid], buf[tid + step])
                cuda.syncthreads()
                step //= 2
            if tid == 0:
                out[o] = buf[0]
            cuda.syncthreads()
    return reduce_thread, reduce_block


def _reduce(op, a, axes, keepdims):
    shape = tuple(a.shape)
    axes = tuple(sorted(int(x) % _max(len(shape), 1) for x in axes)) if shape else ()
    kept = [d for d in range(len(shape)) if d not in axes]
    out_shape = tuple(1 if d in axes else shape[d] for d in range(len(shape))) if keepdims \
        else tuple(shape[d] for d in kept)
    dt = np.dtype(a.dtype)
    out = _empty(out_shape, dt)
    n_out = int(out.size)
    if n_out == 0:
        return out
    strides = _contiguous_strides(shape)
    kshape, (kstrides,) = _collapse([shape[d] for d in kept], [strides[d] for d in kept])
    rshape, (rstrides,) = _collapse([shape[d] for d in axes], [strides[d] for d in axes])
    nred = int(np.prod([shape[d] for d in axes], dtype=np.int64))
    thread_k, block_k = _reduce_kernels(op, dt)
    args = (_flat(out), _flat(a), kshape, kstrides, rshape, rstrides, nred)
    if nred >= BLOCK_REDUCE_MIN:
        block_k[_min(n_out, MAX_BLOCKS * 8), REDUCE_THREADS](*args)
    else:
        thread_k[_blocks(n_out), THREADS](*args)
    return out


def sum(a, axes, keepdims):  # noqa: A001 - the table's name
    return _reduce("add", a, axes, keepdims)


def max(a, axes, keepdims):  # noqa: A001 - the table's name
    return _reduce("maximum", a, axes, keepdims)


def _axis_plan(shape, axis):
    """(outer, n, inner) of a C-contiguous ``shape`` around ``axis``."""
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, int(shape[axis]), inner


@functools.cache
def _argmax_kernel(dtype):
    @_kernel
    def argmax_rows(out, a, n, inner):
        """One thread per output (outer, inner): the first index of the largest value (the
        first NaN if any, as NumPy)."""
        for o in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            base = (o // inner) * n * inner + o % inner
            best = 0
            bv = a[base]
            for k in range(1, n):
                v = a[base + k * inner]
                if bv == bv and (v > bv or v != v):
                    best = k
                    bv = v
            out[o] = best
    return argmax_rows


def argmax(a, axis):
    shape = tuple(a.shape)
    axis = int(axis) % len(shape)
    outer, n, inner = _axis_plan(shape, axis)
    out = _empty(shape[:axis] + shape[axis + 1:], np.int64)
    if out.size:
        _argmax_kernel(np.dtype(a.dtype))[_blocks(out.size), THREADS](
            _flat(out), _flat(a), n, inner)
    return out


def reshape(a, shape):
    # Every array of this backend is C-contiguous, so a reshape is a view.
    shape = tuple(int(s) for s in shape)
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        shape = tuple(int(a.size) // known if s == -1 else s for s in shape)
    return a.reshape(shape) if shape else a.reshape(1).reshape(())


@functools.cache
def _gather_kernel(dtype):
    offset = _offset_fn()

    @_kernel
    def gather(out, a, shape, strides):
        """out[i] = a[offset(i)]: permutation and broadcasting as one strided read."""
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = a[offset(i, shape, strides)]
    return gather


def _strided_copy(a, out_shape, strides):
    dt = np.dtype(a.dtype)
    out = _empty(out_shape, dt)
    if out.size:
        shape, (st,) = _collapse(out_shape, strides)
        _gather_kernel(dt)[_blocks(out.size), THREADS](_flat(out), _flat(a), shape, st)
    return out


def permute(a, axes):
    shape = tuple(a.shape)
    strides = _contiguous_strides(shape)
    return _strided_copy(a, tuple(shape[p] for p in axes), [strides[p] for p in axes])


def broadcast_to(a, shape):
    shape = tuple(int(s) for s in shape)
    return _strided_copy(a, shape, _broadcast_strides(a.shape, shape))


@functools.cache
def _take_kernel(dtype):
    @_kernel
    def take(out, a, index):
        """One thread per output element: out[k] = a[index[k]]."""
        for k in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[k] = a[index[k]]
    return take


@functools.cache
def _scatter_kernel(dtype):
    @_kernel
    def scatter(out, g, index):
        """One thread per element of g: out[index[k]] += g[k] (atomic: positions repeat)."""
        for k in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
            cuda.atomic.add(out, index[k], g[k])
    return scatter


def gather(a, index):
    index = np.asarray(index, dtype=np.int64)
    out = _empty(index.shape, a.dtype)
    if out.size:
        _take_kernel(np.dtype(a.dtype))[_blocks(out.size), THREADS](
            _flat(out), _flat(a), cuda.to_device(np.ascontiguousarray(index.reshape(-1))))
    return out


def scatter_add(shape, index, g):
    index = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
    shape = tuple(int(s) for s in shape)
    out = full(shape, 0.0, g.dtype)
    if out.size and index.size:
        _scatter_kernel(np.dtype(g.dtype))[_blocks(index.size), THREADS](
            _flat(out), _flat(g), cuda.to_device(index))
    return out


# --- the tiled GEMM ----------------------------------------------------------------------------
# C[z, m, n] = Σ_k A(z, m, k) · B(z, k, n). Each kind of product supplies three device
# functions giving flat indices: src_a(pa, z, m, k) into A, src_b(pb, z, k, n) into B (−1 where
# the operand is a zero that comes from nowhere: the padding, or a tap no output reads) and
# dst(pc, z, m, n) into C, with its integer parameters in the tuples pa, pb, pc. One kernel
# body serves every kind.

def _dev(f):
    return cuda.jit(device=True, inline=True)(f)


@functools.cache
def _index_fns():
    """The index functions of ``geometry``, compiled as device functions."""
    return (_dev(geometry.pad_source), _dev(geometry.im2col_pixel),
            _dev(geometry.col2im_column))


@functools.cache
def _gemm_parts(kind):
    _, im2col_pixel, col2im_column = _index_fns()
    if kind == "strided":
        # plain (batched, possibly transposed) matrices: p = (stride_m, stride_k, stride_z)
        @_dev
        def src_a(p, z, m, k):
            return z * p[2] + m * p[0] + k * p[1]

        @_dev
        def src_b(p, z, k, n):
            return z * p[2] + k * p[1] + n * p[0]

        @_dev
        def dst(p, z, m, n):
            return z * p[0] + m * p[1] + n
        return src_a, src_b, dst

    @_dev
    def im2col_at(p, z, row, col):
        """Index in x of cols_b,g[row, col] of group g of example b (z = b·G + g): row =
        (c, i, j) a channel and tap, col = (oh, ow) an output pixel; −1 in the padding."""
        G, Cin, Cg, H, W, Wo, kh, kw = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
        b = z // G
        c = row // (kh * kw)
        pixel = im2col_pixel(row - c * (kh * kw), col, H, W, Wo, kw,
                             p[8], p[9], p[10], p[11], p[12], p[13])
        if pixel < 0:
            return -1
        return (b * Cin + (z - b * G) * Cg + c) * (H * W) + pixel

    @_dev
    def channel_major_at(p, z, m, n):
        """Flat index of Y[b, g·Mg + m, n] for a [B, C, N] array (p = (G, C, Mg, N))."""
        G, C, Mg, N = p[0], p[1], p[2], p[3]
        b = z // G
        return (b * C + (z - b * G) * Mg + m) * N + n

    # Every convolution writes a [B, C, N] array: dst is channel_major_at.
    if kind == "conv_forward":
        # y[b, g·Mg + m, n] = Σ_k K[(b), g·Mg + m, k] · cols_b,g[k, n];  z = b·G + g
        @_dev
        def weight_at(p, z, m, k):
            G, Mg, Kk, wsb = p[0], p[1], p[2], p[3]
            b = z // G
            return b * wsb + ((z - b * G) * Mg + m) * Kk + k
        return weight_at, im2col_at, channel_major_at

    if kind == "conv_input":
        # gx[b, g·Cg + c, n] = Σ_{(o,i,j)} K[(b), g·Mg + o, c, i, j] · gy[b, g·Mg + o, oh, ow]
        # over the output pixels (oh, ow) whose tap (i, j) reads pixel n: gather those gy
        @_dev
        def weight_t_at(p, z, m, k):
            G, Mg, Cg, khw, wsb = p[0], p[1], p[2], p[3], p[4]
            b = z // G
            o = k // khw
            return b * wsb + (((z - b * G) * Mg + o) * Cg + m) * khw + (k - o * khw)

        @_dev
        def gy_at(p, z, k, n):
            G, Cout, Mg, Ho, Wo, W, kh, kw = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
            b = z // G
            o = k // (kh * kw)
            col = col2im_column(k - o * (kh * kw), n, W, Ho, Wo, kw,
                                p[8], p[9], p[10], p[11], p[12], p[13])
            if col < 0:
                return -1
            return (b * Cout + (z - b * G) * Mg + o) * (Ho * Wo) + col
        return weight_t_at, gy_at, channel_major_at

    if kind == "conv_weight":
        # gK[b, g·Mg + o, (c,i,j)] = Σ_l gy[b, g·Mg + o, l] · cols_b,g[(c,i,j), l];  z = b·G + g
        @_dev
        def im2col_t_at(p, z, k, n):
            return im2col_at(p, z, n, k)     # the column matrix read transposed
        return channel_major_at, im2col_t_at, channel_major_at
    raise ValueError(f"unknown GEMM kind {kind!r}")


@functools.cache
def _gemm_kernel(kind, dtype):
    src_a, src_b, dst = _gemm_parts(kind)
    nbt = _nb(dtype)
    zero = np.dtype(dtype).type(0)
    BM, BN, BK, TM, TN = TILE_M, TILE_N, TILE_K, REG_M, REG_N
    NTM, NTN = BM // TM, BN // TN
    NT = NTM * NTN
    # +1 column: k-fast fills then write rows BM+1 apart, missing the same shared-memory bank
    A_TILE, B_TILE = (BK, BM + 1), (BK, BN + 1)
    # The input gradient's B operand has zeros that are no term of the sum (taps that no
    # output pixel reads): they are skipped, not multiplied, so that an inf or NaN weight
    # reaches only the pixels its tap reads, as in the column formula. The forward and weight
    # products multiply the padding's zeros, which are terms of theirs.
    masked = kind == "conv_input"
    MASK_TILE = B_TILE if masked else (1, 1)
    i8 = _nbt.int8

    @_kernel
    def gemm(C, A, B, pa, pb, pc, M, N, K, splits, kchunk, a_kfast, b_nfast):
        """Block (x, y, z) computes the BM×BN tile (y, x) of product z // splits over the K
        range of split z % splits; thread (tx, ty) owns outputs (ty + i·NTM, tx + j·NTN)."""
        As = cuda.shared.array(A_TILE, nbt)
        Bs = cuda.shared.array(B_TILE, nbt)
        Bm = cuda.shared.array(MASK_TILE, i8)
        acc = cuda.local.array((TM, TN), nbt)
        ar = cuda.local.array(TM, nbt)
        br = cuda.local.array(TN, nbt)
        bm = cuda.local.array(TN, i8)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * NTN + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        zz = cuda.blockIdx.z
        z = zz // splits
        kbeg = (zz - z * splits) * kchunk
        kend = _min(K, kbeg + kchunk)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(kbeg, kend, BK):
            # Fill order follows the operand's contiguous axis so global reads coalesce.
            for e in range(tid, BM * BK, NT):
                if a_kfast:
                    mm = e // BK
                    kk = e - mm * BK
                else:
                    kk = e // BM
                    mm = e - kk * BM
                m = m0 + mm
                k = k0 + kk
                As[kk, mm] = A[src_a(pa, z, m, k)] if (m < M and k < kend) else zero
            for e in range(tid, BK * BN, NT):
                if b_nfast:
                    kk = e // BN
                    nn = e - kk * BN
                else:
                    nn = e // BK
                    kk = e - nn * BK
                n = n0 + nn
                k = k0 + kk
                src = src_b(pb, z, k, n) if (n < N and k < kend) else -1
                Bs[kk, nn] = B[src] if src >= 0 else zero
                if masked:
                    Bm[kk, nn] = 1 if src >= 0 else 0
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    ar[i] = As[kk, ty + i * NTM]
                for j in range(TN):
                    br[j] = Bs[kk, tx + j * NTN]
                    if masked:
                        bm[j] = Bm[kk, tx + j * NTN]
                for i in range(TM):
                    for j in range(TN):
                        if not masked or bm[j] != 0:
                            acc[i, j] += ar[i] * br[j]
            cuda.syncthreads()
        for i in range(TM):
            m = m0 + ty + i * NTM
            for j in range(TN):
                n = n0 + tx + j * NTN
                if m < M and n < N:
                    C[dst(pc, zz, m, n)] = acc[i, j]
    return gemm


def _gemm(kind, dtype, C, A, B, pa, pb, pc, M, N, K, Z, a_kfast, b_nfast, splits=1):
    """Launch the GEMM of ``kind`` on Z products of M×N over K (``splits`` K-ranges each,
    written to consecutive z of C)."""
    kchunk = -(-K // splits) if K else 0
    kchunk = -(-kchunk // TILE_K) * TILE_K
    grid = (-(-N // TILE_N), -(-M // TILE_M), Z * splits)
    _gemm_kernel(kind, np.dtype(dtype))[grid, (TILE_N // REG_N, TILE_M // REG_M)](
        C, A, B, pa, pb, pc, int(M), int(N), int(K), int(splits), int(kchunk),
        int(a_kfast), int(b_nfast))


def _split_count(M, N, K, Z) -> int:
    """K-splits that bring a GEMM with few output tiles up to GEMM_TARGET_BLOCKS blocks."""
    tiles = -(-M // TILE_M) * -(-N // TILE_N) * Z
    if tiles == 0 or tiles >= GEMM_TARGET_BLOCKS or K < 8 * TILE_K:
        return 1
    return int(_min(-(-GEMM_TARGET_BLOCKS // tiles), K // (4 * TILE_K)))


def _matmul2(a, b, Z, M, K, N, a_strides, b_strides, dtype):
    """C [Z, M, N] from strided operands: a_strides/b_strides = (stride of m (or n), stride
    of k, stride of z) in elements."""
    splits = _split_count(M, N, K, Z)
    out = _empty((Z * splits, M, N), dtype)
    if out.size == 0:
        return out
    if K == 0:
        return full((Z, M, N), 0.0, dtype)
    _gemm("strided", dtype, _flat(out), _flat(a), _flat(b), tuple(a_strides),
          tuple(b_strides), (M * N, N), M, N, K, Z, a_strides[1] == 1, b_strides[0] == 1,
          splits)
    if splits == 1:
        return out
    return sum(out.reshape(Z, splits, M, N), (1,), False)


def matmul(a, b):
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)
    batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    M, K = a_shape[-2:]
    N = b_shape[-1]
    dt = np.result_type(a.dtype, b.dtype)
    Z = int(np.prod(batch, dtype=np.int64))
    # A batch that broadcasts along some but not all axes is materialised; a missing or
    # all-ones batch reads the one matrix for every z (stride 0).
    ops = []
    for x, shape in ((a, a_shape), (b, b_shape)):
        if shape[:-2] == batch or int(np.prod(shape[:-2], dtype=np.int64)) == 1:
            ops.append((x, 0 if shape[:-2] != batch else shape[-2] * shape[-1]))
        else:
            ops.append((broadcast_to(x, batch + shape[-2:]), shape[-2] * shape[-1]))
    (a, za), (b, zb) = ops
    out = _matmul2(a, b, Z, M, K, N, (K, 1, za), (1, N, zb), dt)
    return out.reshape(batch + (M, N))


# --- softmax -----------------------------------------------------------------------------------

@functools.cache
def _softmax_kernels(dtype):
    zero = np.dtype(dtype).type(0)
    maximum = _scalar_ops(dtype)["maximum"]

    @_kernel
    def softmax_rows(out, a, n, inner, log_form):
        """One thread per row (outer, inner) along the axis: max, Σ e^{a−max}, then write."""
        for o in range(cuda.grid(1), out.shape[0] // n, cuda.gridsize(1)):
            base = (o // inner) * n * inner + o % inner
            m = a[base]
            for k in range(1, n):
                m = maximum(m, a[base + k * inner])
            s = zero
            for k in range(n):
                s += math.exp(a[base + k * inner] - m)
            if log_form:
                # (a − m) − log s, not a − (m + log s): m + log s would round at |m|'s scale
                log_s = math.log(s)
                for k in range(n):
                    out[base + k * inner] = (a[base + k * inner] - m) - log_s
            else:
                for k in range(n):
                    out[base + k * inner] = math.exp(a[base + k * inner] - m) / s

    @_kernel
    def softmax_backward_rows(out, y, gy, n, inner, log_form):
        """One thread per row: softmax y(g − Σ g·y), log-softmax g − e^y Σ g."""
        for o in range(cuda.grid(1), out.shape[0] // n, cuda.gridsize(1)):
            base = (o // inner) * n * inner + o % inner
            s = zero
            for k in range(n):
                j = base + k * inner
                s += gy[j] if log_form else gy[j] * y[j]
            for k in range(n):
                j = base + k * inner
                if log_form:
                    out[j] = gy[j] - math.exp(y[j]) * s
                else:
                    out[j] = y[j] * (gy[j] - s)
    return softmax_rows, softmax_backward_rows


def _softmax(a, axis, log_form):
    dt = np.dtype(a.dtype)
    out = _empty(a.shape, dt)
    outer, n, inner = _axis_plan(tuple(a.shape), int(axis) % a.ndim)
    if out.size:
        _softmax_kernels(dt)[0][_blocks(outer * inner), THREADS](
            _flat(out), _flat(a), n, inner, int(log_form))
    return out


def _softmax_backward(y, gy, axis, log_form):
    dt = np.dtype(y.dtype)
    out = _empty(y.shape, dt)
    outer, n, inner = _axis_plan(tuple(y.shape), int(axis) % y.ndim)
    if out.size:
        _softmax_kernels(dt)[1][_blocks(outer * inner), THREADS](
            _flat(out), _flat(y), _flat(gy), n, inner, int(log_form))
    return out


def softmax(a, axis):
    return _softmax(a, axis, False)


def log_softmax(a, axis):
    return _softmax(a, axis, True)


def softmax_backward(y, gy, axis):
    return _softmax_backward(y, gy, axis, False)


def log_softmax_backward(y, gy, axis):
    return _softmax_backward(y, gy, axis, True)


# --- padding -----------------------------------------------------------------------------------

@functools.cache
def _pad_kernels(dtype):
    source = _index_fns()[0]
    zero = np.dtype(dtype).type(0)

    @_kernel
    def pad_gather(out, x, H, W, top, left, Hp, Wp, mode):
        """One thread per padded pixel: out[p, i, j] = x[p, s_h(i), s_w(j)] or 0."""
        for t in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            plane = t // (Hp * Wp)
            rest = t - plane * Hp * Wp
            i = rest // Wp
            sh = source(i, H, top, mode)
            sw = source(rest - i * Wp, W, left, mode)
            out[t] = zero if (sh < 0 or sw < 0) else x[(plane * H + sh) * W + sw]

    @_kernel
    def pad_backward_gather(out, g, H, W, top, left, Hp, Wp, mode):
        """One thread per input pixel (h, w): the sum of g over every padded (i, j) with
        s_h(i) = h and s_w(j) = w, in (i, j) order; the two axes are matched separately."""
        for t in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            plane = t // (H * W)
            rest = t - plane * H * W
            h = rest // W
            w = rest - h * W
            acc = zero
            for i in range(Hp):
                if source(i, H, top, mode) == h:
                    row = (plane * Hp + i) * Wp
                    for j in range(Wp):
                        if source(j, W, left, mode) == w:
                            acc += g[row + j]
            out[t] = acc
    return pad_gather, pad_backward_gather


def pad(x, pads, mode):
    top, bottom, left, right = (int(p) for p in pads)
    shape = tuple(x.shape)
    H, W = shape[-2:]
    Hp, Wp = H + top + bottom, W + left + right
    out = _empty(shape[:-2] + (Hp, Wp), x.dtype)
    if out.size:
        _pad_kernels(np.dtype(x.dtype))[0][_blocks(out.size), THREADS](
            _flat(out), _flat(x), H, W, top, left, Hp, Wp, pad_mode_code("pad", mode))
    return out


def pad_backward(g, pads, mode):
    top, bottom, left, right = (int(p) for p in pads)
    shape = tuple(g.shape)
    Hp, Wp = shape[-2:]
    H, W = Hp - top - bottom, Wp - left - right
    out = _empty(shape[:-2] + (H, W), g.dtype)
    if out.size:
        _pad_kernels(np.dtype(g.dtype))[1][_blocks(out.size), THREADS](
            _flat(out), _flat(g), H, W, top, left, Hp, Wp, pad_mode_code("pad", mode))
    return out


# --- im2col / col2im ---------------------------------------------------------------------------

def _geometry(kernel, stride, padding, dilation):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    return tuple(int(v) for v in (kh, kw, sh, sw, ph, pw, dh, dw))


@functools.cache
def _im2col_kernels(dtype):
    zero = np.dtype(dtype).type(0)
    _, im2col_pixel, col2im_column = _index_fns()

    @_kernel
    def im2col_gather(cols, x, C, H, W, Ho, Wo, geo):
        """One thread per column entry (b, (c, i, j), (oh, ow)): the pixel it reads, or 0."""
        kh, kw, sh, sw, ph, pw, dh, dw = geo
        L = Ho * Wo
        rows = C * kh * kw
        for t in range(cuda.grid(1), cols.shape[0], cuda.gridsize(1)):
            b = t // (rows * L)
            rest = t - b * rows * L
            row = rest // L
            c = row // (kh * kw)
            pixel = im2col_pixel(row - c * (kh * kw), rest - row * L, H, W, Wo, kw,
                                 sh, sw, ph, pw, dh, dw)
            cols[t] = zero if pixel < 0 else x[(b * C + c) * (H * W) + pixel]

    @_kernel
    def col2im_gather(gx, cols, C, H, W, Ho, Wo, geo):
        """One thread per pixel (b, c, h, w): the sum of the column entries that read it, in
        (i, j) order; no two threads write one pixel."""
        kh, kw, sh, sw, ph, pw, dh, dw = geo
        L = Ho * Wo
        for t in range(cuda.grid(1), gx.shape[0], cuda.gridsize(1)):
            bc = t // (H * W)
            pixel = t - bc * (H * W)
            acc = zero
            for tap in range(kh * kw):
                col = col2im_column(tap, pixel, W, Ho, Wo, kw, sh, sw, ph, pw, dh, dw)
                if col >= 0:
                    acc += cols[(bc * kh * kw + tap) * L + col]
            gx[t] = acc
    return im2col_gather, col2im_gather


def im2col(x, kernel, stride, padding, dilation):
    B, C, H, W = (int(s) for s in x.shape)
    Ho, Wo = output_size(x.shape, kernel, stride, padding, dilation)
    cols = _empty((B, C * kernel[0] * kernel[1], Ho * Wo), x.dtype)
    if cols.size:
        _im2col_kernels(np.dtype(x.dtype))[0][_blocks(cols.size), THREADS](
            _flat(cols), _flat(x), C, H, W, Ho, Wo,
            _geometry(kernel, stride, padding, dilation))
    return cols


def col2im(cols, x_shape, kernel, stride, padding, dilation):
    B, C, H, W = (int(s) for s in x_shape)
    Ho, Wo = output_size(x_shape, kernel, stride, padding, dilation)
    gx = _empty((B, C, H, W), cols.dtype)
    if gx.size:
        if cols.size == 0:
            return full((B, C, H, W), 0.0, cols.dtype)
        _im2col_kernels(np.dtype(cols.dtype))[1][_blocks(gx.size), THREADS](
            _flat(gx), _flat(cols), C, H, W, Ho, Wo,
            _geometry(kernel, stride, padding, dilation))
    return gx


# --- convolution -------------------------------------------------------------------------------

def _conv_params(x_shape, kernel, stride, padding, dilation, groups, Ho, Wo):
    B, C, H, W = (int(s) for s in x_shape)
    kh, kw, sh, sw, ph, pw, dh, dw = _geometry(kernel, stride, padding, dilation)
    return (int(groups), C, C // groups, H, W, int(Wo), kh, kw, sh, sw, ph, pw, dh, dw)


def conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None):
    y = _conv2d_forward(x, weight, stride, padding, dilation, groups)
    if bias is None:
        return y
    return add(y, reshape(bias, tuple(int(s) for s in bias.shape) + (1, 1)))


def _conv2d_forward(x, weight, stride, padding, dilation, groups):
    B, Cin, H, W = (int(s) for s in x.shape)
    wshape = tuple(int(s) for s in weight.shape)
    Cout, Cg, kh, kw = wshape[-4:]
    G = int(groups)
    Ho, Wo = output_size(x.shape, (kh, kw), stride, padding, dilation)
    dt = np.result_type(x.dtype, weight.dtype)
    Mg, Kk, L = Cout // G, Cg * kh * kw, Ho * Wo
    if B * Cout * L == 0 or Kk == 0:
        return full((B, Cout, Ho, Wo), 0.0, dt)
    y = _empty((B, Cout, Ho, Wo), dt)
    wsb = Cout * Kk if len(wshape) == 5 else 0
    _gemm("conv_forward", dt, _flat(y), _flat(weight), _flat(x), (G, Mg, Kk, wsb),
          _conv_params(x.shape, (kh, kw), stride, padding, dilation, G, Ho, Wo),
          (G, Cout, Mg, L), Mg, L, Kk, B * G, True, True)
    return y


def conv2d_backward_input(gy, weight, x_shape, stride, padding, dilation, groups):
    B, Cout, Ho, Wo = (int(s) for s in gy.shape)
    wshape = tuple(int(s) for s in weight.shape)
    _, Cg, kh, kw = wshape[-4:]
    _, Cin, H, W = (int(s) for s in x_shape)
    G = int(groups)
    Mg, khw = Cout // G, kh * kw
    dt = np.result_type(gy.dtype, weight.dtype)
    if B * Cin * H * W == 0 or Mg * khw * Ho * Wo == 0:
        return full((B, Cin, H, W), 0.0, dt)
    gx = _empty((B, Cin, H, W), dt)
    wsb = Cout * Cg * khw if len(wshape) == 5 else 0
    kh_, kw_, sh, sw, ph, pw, dh, dw = _geometry((kh, kw), stride, padding, dilation)
    pb = (G, Cout, Mg, Ho, Wo, W, kh, kw, sh, sw, ph, pw, dh, dw)
    _gemm("conv_input", dt, _flat(gx), _flat(weight), _flat(gy), (G, Mg, Cg, khw, wsb), pb,
          (G, Cin, Cg, H * W), Cg, H * W, Mg * khw, B * G, True, True)
    return gx


def conv2d_backward_weight(x, gy, weight_shape, stride, padding, dilation, groups):
    B, Cout, Ho, Wo = (int(s) for s in gy.shape)
    weight_shape = tuple(int(s) for s in weight_shape)
    _, Cg, kh, kw = weight_shape[-4:]
    G = int(groups)
    Mg, Kk, L = Cout // G, Cg * kh * kw, Ho * Wo
    dt = np.result_type(x.dtype, gy.dtype)
    # One gradient per example (a GEMM per (b, g)); a shared weight's is their sum over b,
    # which also keeps many blocks busy where a single long reduction would not.
    if B * Cout * Kk == 0 or L == 0:
        gk = full((B, Cout, Cg, kh, kw), 0.0, dt)
    else:
        gk = _empty((B, Cout, Cg, kh, kw), dt)
        _gemm("conv_weight", dt, _flat(gk), _flat(gy), _flat(x), (G, Cout, Mg, L),
              _conv_params(x.shape, (kh, kw), stride, padding, dilation, G, Ho, Wo),
              (G, Cout, Mg, Kk), Mg, Kk, L, B * G, True, False)
    if len(weight_shape) == 5:
        return gk
    return sum(gk, (0,), False)


def mix_experts(r, W):
    B, E = (int(s) for s in r.shape)
    D = int(np.prod(W.shape[1:], dtype=np.int64))
    dt = np.result_type(r.dtype, W.dtype)
    out = _matmul2(r, W, 1, B, E, D, (E, 1, 0), (1, D, 0), dt)   # r [B, E] · W [E, D]
    return out.reshape((B,) + tuple(W.shape[1:]))


def mix_experts_backward(r, W, gK):
    B, E = (int(s) for s in r.shape)
    D = int(np.prod(W.shape[1:], dtype=np.int64))
    dt = np.result_type(r.dtype, W.dtype, gK.dtype)
    gr = _matmul2(gK, W, 1, B, D, E, (D, 1, 0), (D, 1, 0), dt)   # gK [B, D] · Wᵀ [D, E]
    gW = _matmul2(r, gK, 1, E, B, D, (1, E, 0), (1, D, 0), dt)   # rᵀ [E, B] · gK [B, D]
    return gr.reshape((B, E)), gW.reshape(tuple(W.shape))


# --- training ----------------------------------------------------------------------------------
# ReLU's gradient and the Adam step are one flat kernel each; batch norm is a composition of
# the reductions and broadcast zips above (its passes as in ``numpy_ref``).

def _per_channel(a, ndim):
    """A [C] array shaped to broadcast against an array [B, C, ...] of ``ndim`` axes."""
    return reshape(a, (1, int(a.shape[0])) + (1,) * (ndim - 2))


def batch_norm_forward(x, weight, bias, mean, var, eps):
    dt = np.dtype(x.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    if mean is None:
        count = full((), int(x.size) // int(x.shape[1]), dt)
        mean = div(sum(x, axes, False), count)
        centred = sub(x, _per_channel(mean, x.ndim))
        var = div(sum(mul(centred, centred), axes, False), count)
    else:
        mean, var = astype(mean, dt), astype(var, dt)
        centred = sub(x, _per_channel(mean, x.ndim))
    inv_std = div(full((), 1.0, dt), sqrt(add(var, full((), eps, dt))))
    y = mul(centred, _per_channel(inv_std, x.ndim))
    if weight is not None:
        y = mul(y, _per_channel(weight, x.ndim))
    if bias is not None:
        y = add(y, _per_channel(bias, x.ndim))
    return y, mean, var, inv_std


def batch_norm_backward(g, x, weight, mean, inv_std, batch_stats):
    dt = np.dtype(x.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    x_hat = mul(sub(x, _per_channel(mean, x.ndim)), _per_channel(inv_std, x.ndim))
    gbias = sum(g, axes, False)
    gweight = sum(mul(g, x_hat), axes, False)
    if batch_stats:
        share = add(_per_channel(gbias, x.ndim), mul(x_hat, _per_channel(gweight, x.ndim)))
        g = sub(g, div(share, full((), int(x.size) // int(x.shape[1]), dt)))
    scale = inv_std if weight is None else mul(weight, inv_std)
    return mul(g, _per_channel(scale, x.ndim)), gweight, gbias


@functools.cache
def _relu_backward_kernel(dtype):
    zero = np.dtype(dtype).type(0)

    @_kernel
    def relu_backward_map(out, a, g):
        """out[i] = g[i] where a[i] > 0, else 0 (a select: NaN or inf in g stays out)."""
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = g[i] if a[i] > zero else zero
    return relu_backward_map


def silu(a):
    s = sigmoid(a)
    return mul(a, s), s


def relu_backward(a, g):
    dt = np.dtype(a.dtype)
    out = _empty(a.shape, dt)
    if out.size:
        _relu_backward_kernel(dt)[_blocks(out.size), THREADS](_flat(out), _flat(a), _flat(g))
    return out


@functools.cache
def _adam_kernel(dtype, mode):
    """One Adam step per element (``table.py``'s order); ``mode`` 1 decoupled decay, 2 the L2
    term, 0 neither. The constants arrive in the dtype (``numpy_ref.adam_scalars``)."""

    @_kernel
    def adam_step(p_out, m_out, v_out, p, g, m, v, decay, wd, one_minus_beta1, beta2,
                  one_minus_beta2, bias2, eps, step_size):
        for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
            pk, d = p[i], g[i]
            if mode == 1:
                pk = pk * decay
            elif mode == 2:
                d = d + pk * wd
            mk = m[i] + (d - m[i]) * one_minus_beta1
            vk = v[i] * beta2 + d * d * one_minus_beta2
            m_out[i] = mk
            v_out[i] = vk
            p_out[i] = pk - mk / (math.sqrt(vk) / bias2 + eps) * step_size
    return adam_step


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    dt = np.dtype(p.dtype)
    outs = [_empty(p.shape, dt) for _ in range(3)]
    mode = 0 if weight_decay == 0 else (1 if decoupled else 2)
    if p.size:
        _adam_kernel(dt, mode)[_blocks(p.size), THREADS](
            *map(_flat, outs), *map(_flat, (p, g, m, v)),
            *adam_scalars(dt, step, lr, beta1, beta2, eps, weight_decay))
    return tuple(outs)


# --- ahead-of-time compilation (no device needed) ----------------------------------------------

def kernel_signatures(dtype) -> list[tuple[str, Callable, tuple]]:
    """Every kernel with argument types it is launched with, for ``dtype``.

    Lets the kernels be compiled for a GPU target on a machine without one
    (``numba.cuda.compile_ptx``): the float32 ones must contain no float64 instruction.
    Tuple arguments are given at a representative length. ``dropout_mask`` is listed only
    where a CUDA driver is present.
    """
    dt = np.dtype(dtype)
    f = _nb(dt)
    arr = _nbt.Array(f, 1, "C")
    i64 = _nbt.int64
    iarr = _nbt.Array(i64, 1, "C")
    barr = _nbt.Array(_nbt.boolean, 1, "C")

    def tup(n):
        return _nbt.UniTuple(i64, n)

    cases = [("full", _fill_kernel(dt), (arr, f)),
             ("astype", _cast_kernel(dt, dt), (arr, arr)),
             ("power", _power_kernel(dt), (arr, arr, f)),
             ("argmax", _argmax_kernel(dt), (iarr, arr, i64, i64)),
             ("gather[flat]", _take_kernel(dt), (arr, arr, iarr)),
             ("scatter_add", _scatter_kernel(dt), (arr, arr, iarr)),
             ("where", _where_kernel(dt), (arr, barr, arr, arr) + (tup(2),) * 4)]
    for target, tarr in (("int64", iarr), ("bool", barr)):
        cases.append((f"astype[{target}]", _cast_kernel(dt, np.dtype(target)), (tarr, arr)))
    for op in ("lt", "le", "gt", "ge", "eq", "ne"):
        cases.append((f"compare_{op}", _compare_kernel(op, dt),
                      (barr, arr, arr, tup(2), tup(2), tup(2))))
    for op in ("neg", "exp", "log", "sqrt", "relu", "sigmoid"):
        cases.append((op, _map_kernel(op, dt), (arr, arr)))
    for op in ("add", "sub", "mul", "div", "gt", "eq", "power"):
        for nd in (1, 3):
            cases.append((f"{op}[{nd}d]", _zip_kernel(op, dt),
                          (arr, arr, arr, tup(nd), tup(nd), tup(nd))))
    for op in ("add", "maximum"):
        for label, kern in zip(("thread", "block"), _reduce_kernels(op, dt), strict=True):
            cases.append((f"reduce_{op}_{label}", kern,
                          (arr, arr, tup(1), tup(1), tup(2), tup(2), i64)))
    cases.append(("gather", _gather_kernel(dt), (arr, arr, tup(3), tup(3))))
    cases.append(("relu_backward", _relu_backward_kernel(dt), (arr, arr, arr)))
    for mode in (0, 1, 2):
        cases.append((f"adam_update[{mode}]", _adam_kernel(dt, mode), (arr,) * 7 + (f,) * 8))
    soft, soft_back = _softmax_kernels(dt)
    cases += [("softmax", soft, (arr, arr, i64, i64, i64)),
              ("softmax_backward", soft_back, (arr, arr, arr, i64, i64, i64))]
    pad_k, pad_back = _pad_kernels(dt)
    pad_sig = (arr, arr) + (i64,) * 7
    cases += [("pad", pad_k, pad_sig), ("pad_backward", pad_back, pad_sig)]
    i2c, c2i = _im2col_kernels(dt)
    col_sig = (arr, arr) + (i64,) * 5 + (tup(8),)
    cases += [("im2col", i2c, col_sig), ("col2im", c2i, col_sig)]
    gemm_tuples = {"strided": (3, 3, 2), "conv_forward": (4, 14, 4),
                   "conv_input": (5, 14, 4), "conv_weight": (4, 14, 4)}
    for kind, (na, nb, nc) in gemm_tuples.items():
        cases.append((f"gemm_{kind}", _gemm_kernel(kind, dt),
                      (arr, arr, arr, tup(na), tup(nb), tup(nc)) + (i64,) * 7))
    # The RNG's device functions are typed against the current device, so dropout compiles
    # ahead only where a driver is present (the GPU run checks it then).
    if not SIMULATOR and cuda.is_available():
        from numba.cuda.random import xoroshiro128p_type
        cases.append(("dropout_mask", _dropout_kernel(dt),
                      (arr, _nbt.Array(xoroshiro128p_type, 1, "C"), f, f)))
    return [(label, kern.py_func, sig) for label, kern, sig in cases]
