"""Hypothesis strategies that build valid convolution, padding and CondConv configurations,
arrays, tensors and routing weights: the ones minicond's own tests draw from.

Every configuration is valid by construction: the strategy draws channels as multiples of the
group count, then kernel, dilation, stride and padding, then the output size, and derives the
input size from them. No example is thrown away with ``assume``. ``size_limit`` bounds every
spatial size and channel count, so a slow backend (the CUDA simulator) can ask for tiny
shapes.

Array values come from a drawn seed rather than from hypothesis itself: shapes and
configurations are what shrink usefully; a failing example prints its seed.

Needs hypothesis (minicond's ``test`` extra). docs/testing.md shows a property test of a new
op written with these strategies and :func:`minicond.testing.gradcheck`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("minicond.testing.strategies needs hypothesis: pip install hypothesis "
                      "(or minicond's 'test' extra: pip install \"minicond[test]\")") from err

from ..functional import PAD_MODES
from ..tensor import Tensor, tensor

__all__ = ["PADDING_KINDS", "ROUTING_KINDS", "CondConvCase", "ConvCase", "PadCase", "arrays",
           "condconv_cases", "conv_cases", "normal", "pad_cases", "routing_weights",
           "tensors"]

PADDING_KINDS = ("int", "pair", "same", "valid")
ROUTING_KINDS = ("sigmoid", "softmax", "one_hot")


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


def _drawn(draw: st.DrawFn, value: Any) -> Any:
    """``value`` itself, or a value drawn from it when it is a strategy."""
    return draw(value) if isinstance(value, st.SearchStrategy) else value


def _shape(draw: st.DrawFn, shape: Any, fn: str) -> tuple[int, ...]:
    shape = _drawn(draw, shape)
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0
            for n in shape):
        raise ValueError(f"{fn}: shape={shape!r} must be a tuple of sizes >= 0")
    return tuple(int(n) for n in shape)


@st.composite
def arrays(draw: st.DrawFn, shape: Any, dtype: str = "float64",
           scale: float = 1.0) -> np.ndarray:
    """A NumPy array of ``shape`` (a tuple, or a strategy of tuples such as
    ``hypothesis.extra.numpy.array_shapes()``) and ``dtype`` ("float32" or "float64"):
    standard normal values times ``scale``, from a drawn seed."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"arrays: dtype={dtype!r} is not supported; expected 'float32' or "
                         "'float64'")
    shape = _shape(draw, shape, "arrays")
    seed = draw(st.integers(0, 2**32 - 1))
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


@st.composite
def tensors(draw: st.DrawFn, shape: Any, dtype: str = "float64", backend: Any = None,
            requires_grad: bool = False, scale: float = 1.0) -> Tensor:
    """A minicond Tensor drawn as :func:`arrays` draws its values, on ``backend`` (default:
    the default backend)."""
    values = draw(arrays(shape, dtype, scale))
    return tensor(values, dtype=dtype, requires_grad=requires_grad, backend=backend)


@st.composite
def routing_weights(draw: st.DrawFn, batch: Any, num_experts: Any,
                    kinds: tuple[str, ...] = ROUTING_KINDS) -> np.ndarray:
    """Float64 routing weights r of shape [B, E] that a router can produce. ``batch`` and
    ``num_experts`` are ints or strategies of ints; the kind is drawn from ``kinds``:
    "sigmoid" (every weight in (0, 1)), "softmax" (each row sums to 1) or "one_hot" (each
    example uses one expert: CondConv reduces to an ordinary convolution)."""
    B, E = _drawn(draw, batch), _drawn(draw, num_experts)
    if not kinds or any(k not in ROUTING_KINDS for k in kinds):
        raise ValueError(f"routing_weights: kinds={kinds!r} must be drawn from {ROUTING_KINDS}")
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    z = 2.0 * rng.standard_normal((B, E))
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if kind == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return np.eye(E)[rng.integers(0, E, size=B)] if E else np.zeros((B, 0))


@dataclass(frozen=True)
class CondConvCase:
    """One valid CondConv layer: a :class:`ConvCase` for the geometry plus the experts, the
    routing and the kind of bias ("none", "static" [Cout] or "mixed" [E, Cout])."""

    conv: ConvCase
    num_experts: int
    routing: str          # "sigmoid" or "softmax"
    temperature: float
    bias: str
    padding_mode: str

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return self.conv.x_shape

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return self.conv.out_shape

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """[E, Cout, Cin/G, kh, kw]: the experts."""
        return (self.num_experts, *self.conv.weight_shape)

    @property
    def routing_shape(self) -> tuple[int, int]:
        """[B, E]: the routing weights."""
        return (self.conv.batch, self.num_experts)

    @property
    def bias_shape(self) -> tuple[int, ...] | None:
        return {"none": None, "static": (self.conv.out_channels,),
                "mixed": (self.num_experts, self.conv.out_channels)}[self.bias]

    def layer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``minicond.nn.CondConv2d`` for this case."""
        c = self.conv
        return dict(in_channels=c.in_channels, out_channels=c.out_channels,
                    kernel_size=c.kernel, stride=c.stride, padding=c.padding,
                    dilation=c.dilation, groups=c.groups, bias=self.bias != "none",
                    padding_mode=self.padding_mode, num_experts=self.num_experts,
                    routing=self.routing, temperature=self.temperature,
                    expert_bias=self.bias == "mixed")


@st.composite
def condconv_cases(draw: st.DrawFn, size_limit: int = 8, max_experts: int = 4,
                   padding_modes: tuple[str, ...] = ("zeros",),
                   padding_kinds: tuple[str, ...] = PADDING_KINDS, max_batch: int = 3,
                   max_groups: int = 3) -> CondConvCase:
    """A valid CondConv2d configuration: the geometry of :func:`conv_cases` (with an input
    large enough for the drawn ``padding_mode``), 1..``max_experts`` experts, sigmoid or
    softmax routing with a temperature, and no, static or mixed bias."""
    mode = draw(st.sampled_from(padding_modes))
    conv = draw(conv_cases(size_limit, padding_kinds, mode, max_batch, max_groups))
    routing = draw(st.sampled_from(("sigmoid", "softmax")))
    temperature = 1.0 if routing == "sigmoid" else draw(st.sampled_from((0.3, 1.0, 2.5)))
    return CondConvCase(conv, draw(st.integers(1, max_experts)), routing, temperature,
                        draw(st.sampled_from(("none", "static", "mixed"))), mode)
