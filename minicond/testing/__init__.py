"""Checking tools for anyone writing an op or a layer: gradient checks and array comparisons.

Layer: beside the public API (see docs/architecture.md), built on ``tensor`` and ``autograd``
only. :func:`gradcheck` compares the gradients a backward computes with central finite
differences on **every** element of every input, in float64; :func:`assert_close` compares
two arrays and names the worst element. Both raise :class:`AssertionError` subclasses, so a
failure reads as a test failure under pytest or a plain ``assert``.

``minicond.testing.strategies`` (needs hypothesis) holds the valid-by-construction
hypothesis strategies minicond's own tests draw from: convolution, padding and CondConv
configurations, arrays and tensors of a shape and dtype, routing weights.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .._validate import check_float
from ..autograd import enable_grad, no_grad
from ..backends import get_backend
from ..tensor import Tensor, tensor

__all__ = ["GradcheckError", "GradcheckReport", "InputCheck", "assert_close", "gradcheck",
           "numerical_gradient"]


class GradcheckError(AssertionError):
    """A backward's gradient differs from central finite differences (see :func:`gradcheck`).

    ``report`` is the full :class:`GradcheckReport`.
    """

    def __init__(self, message: str, report: GradcheckReport) -> None:
        super().__init__(message)
        self.report = report


def _index_text(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


@dataclass(frozen=True)
class InputCheck:
    """The comparison for one checked input: the analytic gradient (from backward) and the
    numerical one (central differences), element by element.

    An element passes when |analytic − numerical| <= atol + rtol·|numerical|.
    """

    position: int            # the input's position among gradcheck's ``*inputs``
    analytic: np.ndarray
    numerical: np.ndarray
    atol: float
    rtol: float
    has_gradient: bool       # False when backward left the input without a gradient (read as 0)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.numerical.shape)

    def _excess(self) -> np.ndarray:
        """|difference| / allowed difference per element; > 1 fails, NaN counts as failing."""
        diff = np.abs(self.analytic - self.numerical)
        allowed = self.atol + self.rtol * np.abs(self.numerical)
        with np.errstate(divide="ignore", invalid="ignore"):
            excess = np.where(diff == 0, 0.0, diff / allowed)
        return np.where(np.isnan(excess), np.inf, excess)

    @property
    def failures(self) -> int:
        """How many elements fail."""
        return int(np.count_nonzero(self._excess() > 1.0))

    @property
    def ok(self) -> bool:
        return self.failures == 0

    @property
    def worst(self) -> tuple[int, ...]:
        """Index of the element furthest outside its tolerance (the first, when all pass
        exactly)."""
        if self.numerical.size == 0:
            return ()
        return tuple(int(i) for i in np.unravel_index(np.argmax(self._excess()), self.shape))

    @property
    def max_abs_error(self) -> float:
        if self.numerical.size == 0:
            return 0.0
        return float(np.max(np.abs(self.analytic - self.numerical)))

    def describe(self) -> str:
        head = f"input {self.position} (shape {self.shape})"
        if self.numerical.size == 0:
            return f"{head}: no elements, nothing to check"
        idx = self.worst
        a, n = float(self.analytic[idx]), float(self.numerical[idx])
        if self.ok:
            return (f"{head}: all {self.numerical.size} elements agree, max |difference| "
                    f"{self.max_abs_error:.1e}")
        missing = "" if self.has_gradient else " (backward gave this input no gradient: read as 0)"
        return (f"{head}{missing}: {self.failures} of {self.numerical.size} elements differ; "
                f"worst at {_index_text(idx)}: analytic {a:.8g}, numerical {n:.8g}, "
                f"|difference| {abs(a - n):.2e} > atol + rtol·|numerical| = "
                f"{self.atol + self.rtol * abs(n):.2e}")


@dataclass(frozen=True)
class GradcheckReport:
    """What :func:`gradcheck` found: one :class:`InputCheck` per checked input.

    ``ok`` (also the report's truth value) says whether every element of every input passed.
    """

    function: str
    inputs: tuple[InputCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.inputs)

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        lines = [f"gradcheck({self.function}) {verdict}:"]
        lines += [f"  {c.describe()}" for c in self.inputs]
        return "\n".join(lines)


def numerical_gradient(f: Callable[[np.ndarray], float], point: Any, eps: float = 1e-6,
                       indices: Sequence[int] | None = None) -> np.ndarray:
    """Central differences of a scalar function of one array, in float64.

    Element i of the result is (f(point + eps·eᵢ) − f(point − eps·eᵢ)) / (2·eps): two calls
    of ``f`` per element, on a float64 copy of ``point`` (``point`` itself is never changed).
    With ``indices`` (flat indices into ``point``), only those elements, as a 1-D array;
    otherwise every element, in ``point``'s shape.
    """
    x = np.array(point, dtype=np.float64)
    flat = x.reshape(-1)
    chosen = range(flat.size) if indices is None else indices
    out = np.empty(len(chosen))
    for n, i in enumerate(chosen):
        original = flat[i]
        flat[i] = original + eps
        plus = f(x)
        flat[i] = original - eps
        minus = f(x)
        flat[i] = original
        out[n] = (plus - minus) / (2 * eps)
    return out.reshape(x.shape) if indices is None else out


def _checked(value: Any) -> bool:
    """Whether gradcheck differentiates with respect to this input."""
    if isinstance(value, Tensor):
        return value.requires_grad
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def gradcheck(fn: Callable[..., Any], *inputs: Any, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, raise_exception: bool = True, backend: str | ModuleType |
              None = None, seed: int = 0) -> bool | GradcheckReport:
    """Check ``fn``'s gradients against central finite differences on every element.

    ``fn`` takes minicond Tensors and returns a Tensor (or a tuple of Tensors). The inputs it
    is differentiated with respect to are the Tensors with ``requires_grad=True`` and the
    floating-point NumPy arrays; each becomes a float64 leaf. Other Tensors are passed as
    float64 constants, anything else (ints, strings, None) unchanged. ``backend`` defaults to
    that of the first Tensor input, else the default backend.

    With a fixed random cotangent c (seeded by ``seed``) the loss is L = Σ fn(x)·c, so no
    gradient is accidentally uniform. For each checked input x and each element i, the
    analytic ∂L/∂xᵢ from ``backward`` must equal (L(x + eps·eᵢ) − L(x − eps·eᵢ)) / (2·eps)
    within ``atol + rtol·|numerical|``.

    Returns True when every element passes; otherwise raises :class:`GradcheckError` (an
    ``AssertionError``) naming the input, its worst element and both values. With
    ``raise_exception=False`` it returns the :class:`GradcheckReport` instead, whose ``ok``
    says whether everything passed.
    """
    if not callable(fn):
        raise TypeError(f"gradcheck: fn must be callable, got {type(fn).__name__}")
    eps = check_float("gradcheck", "eps", eps, 0.0, float("inf"), low_open=True, high_open=True)
    atol = check_float("gradcheck", "atol", atol, 0.0, float("inf"), high_open=True)
    rtol = check_float("gradcheck", "rtol", rtol, 0.0, float("inf"), high_open=True)
    if backend is None:
        backend = next((a.backend for a in inputs if isinstance(a, Tensor)), None)
    be = get_backend(backend)
    checked = [k for k, a in enumerate(inputs) if _checked(a)]
    if not checked:
        raise ValueError("gradcheck: no input to check; pass floating-point NumPy arrays or "
                         "Tensors with requires_grad=True (got "
                         f"{', '.join(type(a).__name__ for a in inputs) or 'no inputs'})")
    values = [np.array(a.numpy() if isinstance(a, Tensor) else a, dtype=np.float64)
              if k in checked else a for k, a in enumerate(inputs)]
    constants = {k: a.to(be, "float64") for k, a in enumerate(inputs)
                 if isinstance(a, Tensor) and k not in checked and a.dtype.kind == "f"}
    owner = getattr(fn, "__self__", None)        # Function.apply is bound to its subclass
    name = (f"{owner.__name__}.{fn.__name__}" if isinstance(owner, type)
            else getattr(fn, "__qualname__", None) or type(fn).__name__)

    def call(requires_grad: bool) -> tuple[list[Tensor], list[Any]]:
        args = [tensor(v, dtype="float64", requires_grad=requires_grad, backend=be)
                if k in checked else constants.get(k, v) for k, v in enumerate(values)]
        out = fn(*args)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        for o in outs:
            if not isinstance(o, Tensor):
                raise TypeError(f"gradcheck: {name} must return a Tensor or a tuple of "
                                f"Tensors, got {type(o).__name__}")
        return outs, args

    rng = np.random.default_rng(seed)
    with enable_grad():          # record even when called inside no_grad
        outs, leaves = call(True)
        cotangents = [rng.standard_normal(o.shape) for o in outs]
        loss = None
        for o, c in zip(outs, cotangents, strict=True):
            if o.requires_grad:
                term = (o * tensor(c, dtype=o.dtype, backend=be)).sum()
                loss = term if loss is None else loss + term
        if loss is not None:
            loss.backward()

    def numeric_loss() -> float:
        with no_grad():
            outs = call(False)[0]
        return float(sum(np.sum(o.numpy().astype(np.float64) * c)
                         for o, c in zip(outs, cotangents, strict=True)))

    reports = []
    for k in checked:
        grad = leaves[k].grad
        analytic = (np.zeros_like(values[k]) if grad is None
                    else grad.numpy().astype(np.float64))

        def loss_of_input(v: np.ndarray, k: int = k) -> float:
            values[k] = v
            return numeric_loss()

        original = values[k]
        numerical = numerical_gradient(loss_of_input, original, eps)
        values[k] = original
        reports.append(InputCheck(k, analytic, numerical, atol, rtol, grad is not None))
    report = GradcheckReport(name, tuple(reports))
    if not raise_exception:
        return report
    if not report.ok:
        failing = "\n".join(f"  {c.describe()}" for c in report.inputs if not c.ok)
        raise GradcheckError(f"gradcheck({name}): the backward's gradient differs from "
                             f"central differences (eps={eps:g}):\n{failing}", report)
    return True


# Default tolerances by dtype, as PyTorch's assert_close: (rtol, atol).
_TOLERANCES = {np.dtype(np.float16): (1e-3, 1e-5), np.dtype(np.float32): (1.3e-6, 1e-5),
               np.dtype(np.float64): (1e-7, 1e-7)}


def _as_array(value: Any, argument: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"assert_close: {argument} must be a Tensor, an array or a number, "
                        f"got {type(value).__name__} ({err})") from None


def assert_close(actual: Any, expected: Any, rtol: float | None = None,
                 atol: float | None = None, equal_nan: bool = False, msg: str = "") -> None:
    """Assert |actual − expected| <= atol + rtol·|expected| for every element.

    ``actual`` and ``expected`` are minicond Tensors, NumPy arrays or numbers, of the same
    shape. Without ``rtol``/``atol`` the tolerances follow the less precise dtype of the two
    (float64: 1e-7, 1e-7; float32: 1.3e-6, 1e-5; integers: exact). NaN equals NaN only with
    ``equal_nan``. On failure raises ``AssertionError`` naming the worst element, both values
    and how many elements differ, after ``msg``.
    """
    a = _as_array(actual, "actual")
    b = _as_array(expected, "expected")
    prefix = f"{msg}: " if msg else ""
    if a.shape != b.shape:
        raise AssertionError(f"{prefix}shapes differ: actual {a.shape}, expected {b.shape}")
    if rtol is None or atol is None:
        defaults = [_TOLERANCES.get(np.dtype(d), (0.0, 0.0)) for d in (a.dtype, b.dtype)]
        default_rtol, default_atol = max(t[0] for t in defaults), max(t[1] for t in defaults)
        rtol = default_rtol if rtol is None else rtol
        atol = default_atol if atol is None else atol
    rtol = check_float("assert_close", "rtol", rtol, 0.0, float("inf"), high_open=True)
    atol = check_float("assert_close", "atol", atol, 0.0, float("inf"), high_open=True)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a64 - b64)
        allowed = atol + rtol * np.abs(b64)
        bad = ~(diff <= allowed)
        both_nan = np.isnan(a64) & np.isnan(b64)
        if equal_nan:
            bad &= ~both_nan
        # equal infinities differ by NaN, yet are equal
        bad &= ~((a64 == b64) & ~both_nan)
    if not bad.any():
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(bad, np.nan_to_num(diff / allowed, nan=np.inf, posinf=np.inf), -1.0)
    idx = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
    where = f" at {_index_text(tuple(int(i) for i in idx))}" if a.ndim else ""
    x, y = float(a64[idx]), float(b64[idx])
    raise AssertionError(
        f"{prefix}{int(bad.sum())} of {a.size} elements differ; worst{where}: actual {x:.10g}, "
        f"expected {y:.10g}, |difference| {abs(x - y):.3e} > atol + rtol·|expected| = "
        f"{atol + rtol * abs(y):.3e} (rtol={rtol:g}, atol={atol:g})")


def __getattr__(name: str) -> ModuleType:
    # ``mc.testing.strategies`` without an explicit import; it needs hypothesis.
    if name == "strategies":
        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
