"""Losses: cross-entropy from logits (class weights, ignored labels, label smoothing),
negative log-likelihood, mean squared and absolute error, and binary cross-entropy from
logits.

Layer (docs/architecture.md): ``functional``. Derivations in the Function docstrings and in
``docs/math/losses.md``. Class weights, ignored labels and ``pos_weight`` are constants:
no gradient flows to them (as in PyTorch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_choice, check_float, check_int, check_tensor
from ..autograd import Function
from ..tensor import Tensor
from .basic import permute, reshape

REDUCTIONS = ("mean", "sum", "none")


def _reduce(be, per_item, reduction: str, divisor: float | None = None):
    """Mean (over all items, or divided by ``divisor``), sum, or the items themselves."""
    if reduction == "none":
        return per_item
    total = be.sum(per_item, tuple(range(per_item.ndim)), False)
    if reduction == "sum":
        return total
    count = int(np.prod(per_item.shape)) if divisor is None else divisor
    return be.div(total, be.full((), count, per_item.dtype))


def _reduced_grad(be, g, shape: tuple[int, ...], reduction: str, divisor: float | None = None):
    """∂L/∂(per-item loss) from the gradient of the reduced loss, broadcast to ``shape``."""
    if reduction == "none":
        return g
    if reduction == "mean":
        count = int(np.prod(shape)) if divisor is None else divisor
        g = be.div(g, be.full((), count, g.dtype))
    return be.broadcast_to(be.reshape(g, (1,) * len(shape)), shape)


def _class_targets(be, labels: np.ndarray, C: int, weight: np.ndarray | None,
                   ignore_index: int, eps: float, dtype) -> tuple[Any, np.ndarray, float]:
    """The target weights q [N, C] of ℓ_n = −Σ_c q_nc·x_nc, their row sums [N, 1] and the
    mean's divisor D = Σ_n v_n·w_{t_n}.

    With v_n = [t_n ≠ ignore_index] and class weights w (ones by default):
    q_nc = v_n·((1 − ε)·w_{t_n}·[c = t_n] + (ε/C)·w_c). The one-hot part is built on the
    backend from the label column and the class row; only [N, 1] and [1, C] vectors travel.
    """
    N = labels.shape[0]
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    w = np.ones(C) if weight is None else weight.astype(np.float64)
    target_weight = valid * w[safe]                                      # v_n·w_{t_n}
    column = be.from_numpy(safe.reshape(N, 1), dtype)
    classes = be.from_numpy(np.arange(C).reshape(1, C), dtype)
    scale = be.from_numpy(((1.0 - eps) * target_weight).reshape(N, 1), dtype)
    q = be.mul(be.eq(column, classes), scale)
    row_sum = (1.0 - eps) * target_weight
    if eps > 0.0:
        smooth = be.mul(be.from_numpy((valid * (eps / C)).reshape(N, 1), dtype),
                        be.from_numpy(w.reshape(1, C), dtype))
        q = be.add(q, smooth)
        row_sum = row_sum + valid * (eps / C) * w.sum()
    return q, row_sum.reshape(N, 1), float(target_weight.sum())


class CrossEntropy(Function):
    """ℓ_n = −Σ_c q_nc · log softmax(z_n)_c  for logits z [N, C] and labels t [N].

    The target weights are q_nc = v_n((1 − ε)·w_{t_n}·[c = t_n] + (ε/C)·w_c), with class
    weights w (ones by default), label smoothing ε and v_n = 0 for an ignored label. With
    p_n = softmax(z_n) and ∂ log p_c/∂z_k = [c = k] − p_k,

        ∂ℓ_n/∂z_nk = −Σ_c q_nc ([c = k] − p_nk) = p_nk · Σ_c q_nc − q_nk,

    which is p_nk − q_nk without weights (then Σ_c q_nc = 1). log softmax is computed as
    (z − max z) − log Σ exp(z − max z), so no exp overflows and the log never sees 0;
    backward reuses p = exp(log p). The mean divides by D = Σ_n v_n·w_{t_n} (N without
    weights or ignored labels), as PyTorch does; sum by 1; none keeps g_n per row.
    """

    @staticmethod
    def forward(ctx, z, labels, weight, ignore_index, label_smoothing, reduction):
        be = ctx.backend
        C = z.shape[1]
        log_p = be.log_softmax(z, 1)
        q, row_sum, divisor = _class_targets(be, labels, C, weight, ignore_index,
                                             label_smoothing, z.dtype)
        per_item = be.neg(be.sum(be.mul(q, log_p), (1,), False))     # [N]
        ctx.save_for_backward(log_p, q, be.from_numpy(row_sum, z.dtype))
        ctx.reduction, ctx.divisor = reduction, divisor
        return _reduce(be, per_item, reduction, divisor)

    @staticmethod
    def backward(ctx, g):
        log_p, q, row_sum = ctx.saved
        be = ctx.backend
        N = log_p.shape[0]
        g_item = _reduced_grad(be, g, (N,), ctx.reduction, ctx.divisor)
        gz = be.sub(be.mul(be.exp(log_p), row_sum), q)
        return (be.mul(gz, be.reshape(g_item, (N, 1))),)


class NLLLoss(Function):
    """ℓ_n = −w_{t_n}·x_{n,t_n} for log-probabilities x [N, C] (0 for an ignored label).

    Written as ℓ_n = −Σ_c q_nc x_nc with q_nc = v_n·w_{t_n}·[c = t_n], it is linear in x:
    ∂ℓ_n/∂x_nk = −q_nk. The mean divides by D = Σ_n v_n·w_{t_n}.
    """

    @staticmethod
    def forward(ctx, x, labels, weight, ignore_index, reduction):
        be = ctx.backend
        q, _, divisor = _class_targets(be, labels, x.shape[1], weight, ignore_index, 0.0,
                                       x.dtype)
        ctx.save_for_backward(q)
        ctx.reduction, ctx.divisor = reduction, divisor
        return _reduce(be, be.neg(be.sum(be.mul(q, x), (1,), False)), reduction, divisor)

    @staticmethod
    def backward(ctx, g):
        (q,) = ctx.saved
        be = ctx.backend
        N = q.shape[0]
        g_item = _reduced_grad(be, g, (N,), ctx.reduction, ctx.divisor)
        return (be.neg(be.mul(q, be.reshape(g_item, (N, 1)))),)


class MSELoss(Function):
    """ℓ_i = (a_i − b_i)²;  ∂ℓ_i/∂a_i = 2(a_i − b_i) = −∂ℓ_i/∂b_i (then the reduction's
    1/n, 1 or g_i)."""

    @staticmethod
    def forward(ctx, a, b, reduction):
        be = ctx.backend
        diff = be.sub(a, b)
        ctx.save_for_backward(diff)
        ctx.reduction = reduction
        return _reduce(be, be.mul(diff, diff), reduction)

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved
        be = ctx.backend
        g_item = _reduced_grad(be, g, diff.shape, ctx.reduction)
        ga = be.mul(be.mul(diff, be.full((), 2.0, diff.dtype)), g_item)
        gb = be.neg(ga) if ctx.needs_input_grad[1] else None
        return ga, gb


class L1Loss(Function):
    """ℓ_i = |a_i − b_i|;  ∂ℓ_i/∂a_i = sign(a_i − b_i) = −∂ℓ_i/∂b_i, with sign(0) = 0 (the
    subgradient PyTorch takes), written as [d > 0] − [d < 0]."""

    @staticmethod
    def forward(ctx, a, b, reduction):
        be = ctx.backend
        diff = be.sub(a, b)
        ctx.save_for_backward(diff)
        ctx.reduction = reduction
        return _reduce(be, be.maximum(diff, be.neg(diff)), reduction)

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved
        be = ctx.backend
        zero = be.full((), 0.0, diff.dtype)
        sign = be.sub(be.gt(diff, zero), be.gt(zero, diff))
        ga = be.mul(sign, _reduced_grad(be, g, diff.shape, ctx.reduction))
        gb = be.neg(ga) if ctx.needs_input_grad[1] else None
        return ga, gb


class BCEWithLogits(Function):
    """ℓ = −w·[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] for logits x, targets y, weight w and
    positive-class weight p (both constants, broadcast against x).

    With sp(u) = log(1 + eᵘ), log σ(x) = −sp(−x) and log(1 − σ(x)) = −sp(x) = −x − sp(−x),
    so with l = 1 + (p − 1)·y

        ℓ = w·[(1 − y)·x + l·sp(−x)],   sp(−x) = max(−x, 0) + log1p(e^{−|x|})

    (no exp overflows, no log of 0). Differentiating, with sp'(u) = σ(u) and σ(−x) = 1 − σ(x):

        ∂ℓ/∂x = w·[(1 − y) − l·(1 − σ(x))],   ∂ℓ/∂y = w·[(p − 1)·sp(−x) − x].
    """

    @staticmethod
    def forward(ctx, x, y, weight, pos_weight, reduction):
        be = ctx.backend
        one = be.full((), 1.0, x.dtype)
        neg_x = be.neg(x)
        sp = be.add(be.relu(neg_x), be.log1p(be.exp(be.neg(be.maximum(x, neg_x)))))
        pm1 = None if pos_weight is None else be.sub(pos_weight, one)        # p − 1
        l_w = one if pm1 is None else be.add(one, be.mul(pm1, y))
        per_item = be.add(be.mul(be.sub(one, y), x), be.mul(l_w, sp))
        if weight is not None:
            per_item = be.mul(per_item, weight)
        ctx.save_for_backward(x, y, sp, weight, pm1, l_w)
        ctx.reduction = reduction
        return _reduce(be, per_item, reduction)

    @staticmethod
    def backward(ctx, g):
        x, y, sp, weight, pm1, l_w = ctx.saved
        be = ctx.backend
        one = be.full((), 1.0, x.dtype)
        g_item = _reduced_grad(be, g, x.shape, ctx.reduction)
        if weight is not None:
            g_item = be.mul(g_item, weight)
        gx = be.mul(g_item, be.sub(be.sub(one, y), be.mul(l_w, be.sub(one, be.sigmoid(x)))))
        gy = None
        if ctx.needs_input_grad[1]:
            dy = be.neg(x) if pm1 is None else be.sub(be.mul(pm1, sp), x)
            gy = be.mul(g_item, dy)
        return gx, gy, None, None


def _labels(fn: str, target: Any, item_shape: tuple[int, ...], C: int,
            ignore_index: int) -> np.ndarray:
    """Integer class labels (an int64 Tensor, a NumPy int array or a list of ints), one per
    item of the input, flattened to [M]; values in 0..C−1 or ``ignore_index``."""
    if isinstance(target, Tensor):
        if np.dtype(target.dtype).kind not in "iu":
            raise TypeError(f"{fn}: target must be integer class labels (an int64 Tensor, a "
                            f"NumPy int array or a list), not a {target.dtype} Tensor")
        target = target.numpy()
    labels = np.asarray(target)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must be integer class labels; got dtype "
                        f"{labels.dtype} and shape {labels.shape}")
    if labels.shape != item_shape:
        raise ValueError(f"{fn}: target has shape {labels.shape}; expected {item_shape}, one "
                         "label per item of the input")
    used = labels[labels != ignore_index]
    if used.size and (used.min() < 0 or used.max() >= C):
        raise ValueError(f"{fn}: target labels must be in [0, {C}) or equal "
                         f"ignore_index={ignore_index}; got values from {used.min()} to "
                         f"{used.max()}")
    return labels.astype(np.int64).reshape(-1)


def _class_weight(fn: str, weight: Any, C: int) -> np.ndarray | None:
    """Per-class weights [C] as a NumPy float64 array (constants: no gradient)."""
    if weight is None:
        return None
    w = weight.numpy() if isinstance(weight, Tensor) else np.asarray(weight)
    if w.dtype.kind not in "biuf" or w.shape != (C,):
        raise ValueError(f"{fn}: weight must be {C} real numbers, one per class; got dtype "
                         f"{w.dtype} and shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{fn}: weight must be finite; got {w}")
    return w.astype(np.float64)


def _class_rows(fn: str, input: Any) -> tuple[Tensor, tuple[int, ...]]:  # noqa: A002
    """The input as rows [M, C] and the shape of its per-item losses.

    As in PyTorch the class axis is axis 1 of [N, C, d1, …] (one item per (n, d1, …), e.g.
    per pixel), or the only axis of an unbatched [C]. Moving it last and flattening are a
    Permute and a Reshape, whose backward autograd already has.
    """
    z = check_tensor(fn, "input", input)
    if z.ndim == 0:
        raise ValueError(f"{fn}: input must be [C], [N, C] or [N, C, d1, ...]; got a 0-D "
                         "tensor")
    C = z.shape[1] if z.ndim > 1 else z.shape[0]
    items = (z.shape[0],) + z.shape[2:] if z.ndim > 1 else ()
    if C == 0 or 0 in items:
        raise ValueError(f"{fn}: input has shape {z.shape}; expected at least one row and "
                         "one class")
    if z.ndim == 1:
        return reshape(z, (1, C)), items
    if z.ndim > 2:
        z = reshape(permute(z, (0, *range(2, z.ndim), 1)), (-1, C))
    return z, items


def _per_item(loss: Tensor, items: tuple[int, ...], reduction: str) -> Tensor:
    """Per-item losses back in the input's item shape (reductions are already scalars)."""
    return reshape(loss, items) if reduction == "none" else loss


def cross_entropy(input: Tensor, target: Any, weight: Any = None, *,  # noqa: A002
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """``torch.nn.functional.cross_entropy`` for logits [N, C] and integer labels [N] (also
    [N, C, d1, …] with labels [N, d1, …], e.g. per pixel, or an unbatched [C] with one
    label): class ``weight`` [C], labels equal to ``ignore_index`` left out (of the mean's
    divisor too), ``label_smoothing`` ε mixing the one-hot target with ε/C everywhere."""
    fn = "cross_entropy"
    z, items = _class_rows(fn, input)
    C = z.shape[1]
    ignore_index = check_int(fn, "ignore_index", ignore_index, -(2**63))
    labels = _labels(fn, target, items, C, ignore_index)
    w = _class_weight(fn, weight, C)
    eps = check_float(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    reduction = check_choice(fn, "reduction", reduction, REDUCTIONS)
    return _per_item(CrossEntropy.apply(z, labels, w, ignore_index, eps, reduction), items,
                     reduction)


def nll_loss(input: Tensor, target: Any, weight: Any = None, *,  # noqa: A002
             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """``torch.nn.functional.nll_loss`` for log-probabilities [N, C] (e.g. from
    ``log_softmax``) and integer labels [N]; shapes as :func:`cross_entropy`."""
    fn = "nll_loss"
    x, items = _class_rows(fn, input)
    C = x.shape[1]
    ignore_index = check_int(fn, "ignore_index", ignore_index, -(2**63))
    labels = _labels(fn, target, items, C, ignore_index)
    w = _class_weight(fn, weight, C)
    reduction = check_choice(fn, "reduction", reduction, REDUCTIONS)
    return _per_item(NLLLoss.apply(x, labels, w, ignore_index, reduction), items, reduction)


def _pair(fn: str, input: Any, target: Any, reduction: str) -> tuple[Tensor, Tensor, str]:
    """The input, the target lifted onto its backend with the same shape, the reduction."""
    a = check_tensor(fn, "input", input)
    b = target if isinstance(target, Tensor) else a._lift(np.asarray(target, dtype=a.dtype))
    if b.shape != a.shape:
        raise ValueError(f"{fn}: target has shape {b.shape}; expected the input's shape "
                         f"{a.shape}")
    if a.numel() == 0:
        raise ValueError(f"{fn}: input is empty (shape {a.shape})")
    return a, b, check_choice(fn, "reduction", reduction, REDUCTIONS)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """``torch.nn.functional.mse_loss``; ``target`` (a Tensor, array or number) must have the
    input's shape."""
    return MSELoss.apply(*_pair("mse_loss", input, target, reduction))


def l1_loss(input: Tensor, target: Any, *, reduction: str = "mean") -> Tensor:  # noqa: A002
    """``torch.nn.functional.l1_loss``: |input − target|, reduced; shapes as ``mse_loss``."""
    return L1Loss.apply(*_pair("l1_loss", input, target, reduction))


def _constant(fn: str, name: str, value: Any, x: Tensor) -> Tensor | None:
    """A weight broadcast against x's shape, as a constant tensor (no gradient)."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must hold real numbers; got dtype {arr.dtype}")
    try:
        shape = np.broadcast_shapes(arr.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"{fn}: {name} of shape {arr.shape} does not broadcast to the input's "
                         f"shape {x.shape}")
    return x._lift(arr.astype(x.dtype)).detach()


def binary_cross_entropy_with_logits(input: Tensor, target: Any,  # noqa: A002
                                     weight: Any = None, *, reduction: str = "mean",
                                     pos_weight: Any = None) -> Tensor:
    """``torch.nn.functional.binary_cross_entropy_with_logits``: sigmoid and binary
    cross-entropy in one numerically stable step. ``target`` has the input's shape (values
    in [0, 1], soft labels allowed); ``weight`` rescales each element and ``pos_weight`` the
    positive term, both broadcast against the input (``pos_weight`` [C] for input [N, C])."""
    fn = "binary_cross_entropy_with_logits"
    x, y, reduction = _pair(fn, input, target, reduction)
    w = _constant(fn, "weight", weight, x)
    p = _constant(fn, "pos_weight", pos_weight, x)
    return BCEWithLogits.apply(x, y, w, p, reduction)
