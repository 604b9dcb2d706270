"""Convolution and padding geometry, written once for the three backends.

Layer (docs/architecture.md): bottom. Two kinds of code live here:

* host helpers, called in Python by every backend: the padding modes, the output size of a
  convolution, the grouped view of a weight;
* index functions, plain Python on integers that each backend compiles for itself:
  ``numpy_ref`` calls them as they are, ``numba_cpu`` wraps them with ``numba.njit`` and
  ``numba_cuda`` with ``numba.cuda.jit(device=True)``. So the CPU and GPU kernels read a
  padded or unfolded image through one definition of where each value comes from. An index
  function calls no other function (a compiled one could not call a plain Python one), and
  returns −1 where the value is a zero that comes from nowhere (zero padding, or a tap that
  falls outside the image).

Notation: an axis of length n, a kernel tap i, stride s, padding p (before), dilation d, an
output position o; the 2-D maps use (c, i, j) for a row of the column matrix (a channel and a
tap) and (oh, ow) for a column (an output pixel).
"""

from __future__ import annotations

#: Padding modes; a mode's index in this tuple is the integer code the compiled kernels take.
PAD_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")


def pad_mode_code(fn: str, mode: str) -> int:
    """The integer code of ``mode`` for the index functions; a ValueError naming ``fn``
    for an unknown mode."""
    if mode not in PAD_MODES:
        raise ValueError(f"{fn}: mode={mode!r} must be one of {PAD_MODES}")
    return PAD_MODES.index(mode)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis: ⌊(n + 2p − d(k−1) − 1)/s⌋ + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_size(x_shape, kernel, stride, padding, dilation) -> tuple[int, int]:
    """(Ho, Wo) of a convolution of an NCHW input with symmetric ``padding`` (ph, pw)."""
    return (conv_output_size(int(x_shape[2]), kernel[0], stride[0], padding[0], dilation[0]),
            conv_output_size(int(x_shape[3]), kernel[1], stride[1], padding[1], dilation[1]))


def grouped_weight(weight, groups: int):
    """A shared [Cout, Cin/G, kh, kw] or per-example [B, Cout, Cin/G, kh, kw] NumPy weight as
    [1 or B, G, Cout/G, Cin/G·kh·kw] (a view where the weight is contiguous), so one batched
    product serves both."""
    w = weight if weight.ndim == 5 else weight[None]
    per_group = w.shape[2] * w.shape[3] * w.shape[4]      # explicit: an empty batch has no −1
    return w.reshape(w.shape[0], groups, w.shape[1] // groups, per_group)


# --- index functions (compiled by the backends) -----------------------------------------------

def pad_source(k, n, before, mode):
    """The position along an axis of length n that padded position k copies (k runs from 0 to
    before + n + after − 1), or −1 where zeros mode puts a zero. ``mode`` is a code of
    :data:`PAD_MODES`. With t = k − before:

        zeros      t if 0 <= t < n, else −1
        reflect    |t|, then 2(n−1) − |t| past the last position (the edge is not repeated)
        replicate  clamp(t, 0, n−1)
        circular   t mod n
    """
    t = k - before
    if mode == 0:
        return t if (t >= 0 and t < n) else -1
    if mode == 1:
        t = abs(t)
        return 2 * (n - 1) - t if t > n - 1 else t
    if mode == 2:
        return min(max(t, 0), n - 1)
    return ((t % n) + n) % n        # non-negative whatever the sign convention of %


def im2col_pixel(tap, col, H, W, Wo, kw, sh, sw, ph, pw, dh, dw):
    """The pixel h·W + w of an H×W plane that column ``col`` = oh·Wo + ow of the column matrix
    reads at kernel tap ``tap`` = i·kw + j, or −1 where that falls in the padding:
    h = oh·sh − ph + i·dh, w = ow·sw − pw + j·dw."""
    i = tap // kw
    oh = col // Wo
    h = oh * sh - ph + i * dh
    w = (col - oh * Wo) * sw - pw + (tap - i * kw) * dw
    if h < 0 or h >= H or w < 0 or w >= W:
        return -1
    return h * W + w


def col2im_column(tap, pixel, W, Ho, Wo, kw, sh, sw, ph, pw, dh, dw):
    """The inverse of :func:`im2col_pixel`: the column oh·Wo + ow that reads ``pixel`` = h·W + w
    at tap ``tap`` = i·kw + j, or −1 where no output pixel does (h + ph − i·dh must be a
    non-negative multiple of sh below sh·Ho, and likewise along the width)."""
    i = tap // kw
    h = pixel // W
    th = h + ph - i * dh
    tw = (pixel - h * W) + pw - (tap - i * kw) * dw
    if th < 0 or tw < 0:
        return -1
    oh = th // sh
    ow = tw // sw
    if oh * sh != th or ow * sw != tw or oh >= Ho or ow >= Wo:
        return -1
    return oh * Wo + ow
