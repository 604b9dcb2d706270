"""Hypothesis strategies that build valid convolution and padding configurations.

Every configuration is valid by construction: the strategy draws channels as multiples of the
group count, then kernel, dilation, stride and padding, then the output size, and derives the
input size from them. No example is thrown away with ``assume``. ``size_limit`` bounds every
spatial size and channel count, so the CUDA simulator can ask for tiny shapes.

Array values come from a drawn seed rather than from hypothesis itself: shapes and
configurations are what shrink usefully; a failing example prints its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from minicond.functional import PAD_MODES

PADDING_KINDS = ("int", "pair", "same", "valid")

# The backend/size_limit fixtures are plain values that are safe to share across examples;
# hypothesis objects to function-scoped fixtures unless told so. Inherits the loaded profile.
fixture_settings = settings(suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


def normal(seed: int, *shapes: tuple[int, ...] | None) -> list[np.ndarray | None]:
    """Standard normal float64 arrays of the given shapes (None stays None), from one seed."""
    rng = np.random.default_rng(seed)
    return [None if s is None else rng.standard_normal(s) for s in shapes]


@dataclass(frozen=True)
class ConvCase:
    """One valid convolution: the arguments to pass and the geometry they imply."""

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    kernel: tuple[int, int]
    stride: Any        # as passed: an int or a pair
    dilation: Any      # as passed: an int or a pair
    padding: Any       # as passed: an int, a pair, "same" or "valid"
    pads: tuple[int, int, int, int]   # what ``padding`` resolves to: (top, bottom, left, right)
    bias: bool
    seed: int

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, *self.in_size)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """[Cout, Cin/g, kh, kw]: one conv weight, or one expert."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, *self.out_size)

    def conv_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by minicond's and PyTorch's conv2d."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)


def _int_or_pair(draw: st.DrawFn, pair: tuple[int, int]) -> Any:
    """Pass a pair with equal entries as an int half of the time, to cover both spellings."""
    if pair[0] == pair[1] and draw(st.booleans()):
        return pair[0]
    return pair


def _axis_sizes(draw: st.DrawFn, size_limit: int, kernel: int, stride: int, dilation: int,
                before: int, after: int, same: bool, min_in: int) -> tuple[int, int]:
    """(input size, output size) along one axis, drawing the output size first.

    A padded length of (Ho−1)·s + d·(k−1) + 1 + r with 0 <= r < s gives exactly Ho outputs,
    so the input size is that minus the padding. The candidates are every (Ho, r) whose input
    size lies in [min_in, size_limit]; there is always one (the input of size ``size_limit``).
    """
    if same:
        out = draw(st.integers(min_in, size_limit))
        return out, out
    span = dilation * (kernel - 1) + 1
    # with padding the output may be longer than the input: up to size_limit + padding
    candidates = [(ho, r) for ho in range(1, size_limit + before + after + 1)
                  for r in range(stride)
                  if min_in <= (ho - 1) * stride + span + r - before - after <= size_limit]
    ho, r = draw(st.sampled_from(candidates))
    return (ho - 1) * stride + span + r - before - after, ho


@st.composite
def conv_cases(draw: st.DrawFn, size_limit: int = 8, padding_kinds: tuple[str, ...] =
               PADDING_KINDS, padding_mode: str = "zeros", max_batch: int = 3,
               max_groups: int = 3, max_pad: int = 2) -> ConvCase:
    """A valid conv2d configuration whose sizes and channel counts are <= ``size_limit``.

    ``padding_mode`` constrains the input size to what that mode can pad: reflect needs
    pad < size, circular pad <= size (the conv itself always zero-pads).
    """
    groups = draw(st.integers(1, min(max_groups, size_limit)))
    in_channels = groups * draw(st.integers(1, size_limit // groups))
    out_channels = groups * draw(st.integers(1, size_limit // groups))
    kind = draw(st.sampled_from(padding_kinds))
    stride = (1, 1) if kind == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # the dilated kernel fits in size_limit, so an unpadded input of size_limit always works
    kernel = tuple(draw(st.integers(1, min(4, (size_limit - 1) // d + 1))) for d in dilation)
    if kind == "valid":
        padding: Any = "valid"
        pads = (0, 0, 0, 0)
    elif kind == "same":
        padding = "same"
        pads = ()
        for k, d in zip(kernel, dilation, strict=True):
            total = d * (k - 1)
            pads += (total // 2, total - total // 2)   # the odd element goes last, as PyTorch
    else:
        ph = draw(st.integers(0, max_pad))
        pw = ph if kind == "int" else draw(st.integers(0, max_pad))
        padding = ph if kind == "int" else (ph, pw)
        pads = (ph, ph, pw, pw)
    in_size, out_size = [], []
    for axis in range(2):
        before, after = pads[2 * axis], pads[2 * axis + 1]
        largest = max(before, after)
        min_in = {"reflect": largest + 1, "circular": max(largest, 1)}.get(padding_mode, 1)
        n_in, n_out = _axis_sizes(draw, max(size_limit, min_in), kernel[axis], stride[axis],
                                  dilation[axis], before, after, kind == "same", min_in)
        in_size.append(n_in)
        out_size.append(n_out)
    return ConvCase(
        batch=draw(st.integers(1, max_batch)), in_channels=in_channels,
        out_channels=out_channels, groups=groups, in_size=tuple(in_size),
        out_size=tuple(out_size), kernel=kernel, stride=_int_or_pair(draw, stride),
        dilation=_int_or_pair(draw, dilation), padding=padding, pads=pads,
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


@dataclass(frozen=True)
class PadCase:
    """One valid padding: input shape, torch-ordered ``pad`` = (left, right, top, bottom)."""

    x_shape: tuple[int, int, int, int]
    pad: tuple[int, int, int, int]
    mode: str
    seed: int

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        B, C, H, W = self.x_shape
        left, right, top, bottom = self.pad
        return (B, C, H + top + bottom, W + left + right)


@st.composite
def pad_cases(draw: st.DrawFn, size_limit: int = 8, modes: tuple[str, ...] = PAD_MODES,
              max_pad: int = 3) -> PadCase:
    """A padding each mode can make: pads first, then an input large enough for them
    (reflect: pad < size; circular: pad <= size; zeros, replicate: any size >= 1)."""
    mode = draw(st.sampled_from(modes))
    left, right, top, bottom = (draw(st.integers(0, max_pad)) for _ in range(4))
    sizes = []
    for before, after in ((top, bottom), (left, right)):
        largest = max(before, after)
        min_in = {"reflect": largest + 1, "circular": max(largest, 1)}.get(mode, 1)
        sizes.append(draw(st.integers(min_in, max(size_limit, min_in))))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *sizes)
    return PadCase(shape, (left, right, top, bottom), mode, draw(st.integers(0, 2**32 - 1)))
