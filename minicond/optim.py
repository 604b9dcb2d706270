"""Optimizers (SGD, Adam, AdamW), a cosine learning-rate schedule with linear warmup, and
gradient-norm clipping, with PyTorch's update rules.

Layer (docs/architecture.md): beside ``nn`` (it updates Parameters). Every update is computed with
the parameter's own backend kernels on backend arrays, so on the CUDA backend parameters, gradients
and optimizer state never leave the device; SGD's hyper-parameters enter as 0-d backend arrays,
and Adam/AdamW make one fused ``adam_update`` call per parameter. Kernels return new arrays, so an
update rebinds ``p.data`` (and each state entry) instead of writing in place. ``state_dict()``
holds NumPy copies, for checkpoints.

Notation: p a parameter, g its gradient, t the step count (from 1), λ the weight decay.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._validate import check_float, check_int
from .backends import get_backend
from .tensor import Tensor


def _scalar(be: Any, value: float, dtype: np.dtype) -> Any:
    return be.full((), value, dtype)


def _non_negative(fn: str, name: str, value: Any) -> float:
    return check_float(fn, name, value, 0.0, float("inf"), high_open=True)


class Optimizer:
    """Parameter groups, per-parameter state, ``zero_grad``, ``step`` and checkpoints.

    ``params`` is an iterable of Tensors, or of dicts ``{"params": [...], <hyper>: value}``
    whose missing hyper-parameters take the optimizer's defaults (as in ``torch.optim``).
    Subclasses define ``_check(group)`` and ``_update(p, grad, group, state)``.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors or dicts, not a "
                            "single Tensor; pass [tensor] or module.parameters()")
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}  # keyed by id(parameter)
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' entry, "
                            f"got {group!r}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameters must be Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{name}: can only optimise leaf tensors (parameters), not "
                                 "results of operations")
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter appears in more than one place")
            seen.add(id(p))
        unknown = sorted(set(group) - set(self.defaults) - {"params", "initial_lr"})
        if unknown:
            raise ValueError(f"{name}: unknown hyper-parameters {unknown}; expected "
                             f"{sorted(self.defaults)}")
        full = {**self.defaults, **group, "params": params}
        self._check(full)
        self.param_groups.append(full)

    def _check(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _update(self, p: Tensor, grad: Any, group: dict[str, Any],
                state: dict[str, Any]) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (or set it to zeros with ``set_to_none=False``)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = Tensor(p.backend.full(p.shape, 0.0, p.dtype), p.backend)

    def step(self) -> None:
        """One update of every parameter that has a gradient (others are skipped)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                if p.grad.backend is not p.backend or p.grad.dtype != p.dtype:
                    raise ValueError(f"{type(self).__name__}: a gradient is {p.grad.dtype} on "
                                     f"{p.grad.backend.name!r} but its parameter is {p.dtype} "
                                     f"on {p.backend.name!r}")
                self._update(p, grad, group, self.state.setdefault(id(p), {}))

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {key: value}}, "param_groups": [...]}`` with parameters named
        by their index in group order and arrays as NumPy copies (``torch.optim``'s layout)."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if self.state.get(id(p)):
                    state[index[id(p)]] = {
                        k: (p.backend.to_numpy(v) if not isinstance(v, numbers.Number) else v)
                        for k, v in self.state[id(p)].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by :meth:`state_dict` of an optimizer
        built over parameters of the same shapes, in the same order."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{name}.load_state_dict: expected a dict with keys 'state' and "
                             "'param_groups'")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the checkpoint has {len(groups)} "
                             f"parameter groups; this optimizer has {len(self.param_groups)}")
        by_index: dict[int, Tensor] = {}
        for saved, group in zip(groups, self.param_groups, strict=True):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: a checkpoint group has "
                                 f"{len(saved['params'])} parameters; this optimizer's has "
                                 f"{len(group['params'])}")
            by_index.update(zip(saved["params"], group["params"], strict=True))
        new_state: dict[int, dict[str, Any]] = {}
        for i, entries in state_dict["state"].items():
            if int(i) not in by_index:
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, which no "
                                 "group holds")
            p = by_index[int(i)]
            restored = {}
            for key, value in entries.items():
                if isinstance(value, numbers.Number):
                    restored[key] = value
                    continue
                arr = np.asarray(value)
                if arr.shape != p.shape:
                    raise ValueError(f"{name}.load_state_dict: state {key!r} of parameter {i} "
                                     f"has shape {arr.shape}; the parameter has {p.shape}")
                restored[key] = p.backend.from_numpy(arr, p.dtype)
            new_state[id(p)] = restored
        for saved, group in zip(groups, self.param_groups, strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent with momentum μ, dampening τ, Nesterov and weight decay
    (``torch.optim.SGD``):

        d ← g + λ·p
        b ← d  (first step),   b ← μ·b + (1 − τ)·d  (later steps)
        d ← d + μ·b  (Nesterov)   or   d ← b  (classical momentum)
        p ← p − lr·d
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def _check(self, group: dict[str, Any]) -> None:
        for key in ("lr", "momentum", "dampening", "weight_decay"):
            group[key] = _non_negative("SGD", key, group[key])
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening = 0; got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _update(self, p, grad, group, state):
        be, dt = p.backend, p.dtype
        d = grad
        if group["weight_decay"] != 0:
            d = be.add(d, be.mul(p.data, _scalar(be, group["weight_decay"], dt)))
        mu = group["momentum"]
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = d
            else:
                buf = be.add(be.mul(buf, _scalar(be, mu, dt)),
                             be.mul(d, _scalar(be, 1.0 - group["dampening"], dt)))
            state["momentum_buffer"] = buf
            d = be.add(d, be.mul(buf, _scalar(be, mu, dt))) if group["nesterov"] else buf
        p.data = be.sub(p.data, be.mul(d, _scalar(be, group["lr"], dt)))


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``, without amsgrad); weight decay is an L2 term in the
    gradient:

        d ← g + λ·p
        m ← m + (1 − β₁)(d − m)           (= β₁m + (1 − β₁)d, PyTorch's lerp form)
        v ← β₂v + (1 − β₂)·d²
        p ← p − (lr/(1 − β₁ᵗ)) · m / (√v/√(1 − β₂ᵗ) + ε)

    The two divisions by 1 − βᵗ undo the bias of m and v toward their zero start.
    """

    decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    def _check(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            group[key] = _non_negative(name, key, group[key])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas={betas!r} must be a pair (β₁, β₂)")
        group["betas"] = (check_float(name, "betas[0]", betas[0], 0.0, 1.0, high_open=True),
                          check_float(name, "betas[1]", betas[1], 0.0, 1.0, high_open=True))

    def _update(self, p, grad, group, state):
        be = p.backend
        if not state:
            state["step"] = 0
            state["exp_avg"] = be.full(p.shape, 0.0, p.dtype)
            state["exp_avg_sq"] = be.full(p.shape, 0.0, p.dtype)
        state["step"] += 1
        # one fused kernel per parameter: the update above in PyTorch's order of operations
        beta1, beta2 = group["betas"]
        p.data, state["exp_avg"], state["exp_avg_sq"] = be.adam_update(
            p.data, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group["lr"],
            beta1, beta2, group["eps"], group["weight_decay"], self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): first p ← p·(1 − lr·λ),
    then the Adam step on the plain gradient (d = g)."""

    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class CosineWarmup:
    """Learning rate lrₜ = base_lr · f(t) for the t-th optimizer step (t = 0, 1, …):

        f(t) = (t + 1)/(W + 1)                                   for t < W  (linear warmup)
        f(t) = r + (1 − r) · ½ (1 + cos(π · min(1, (t − W)/(T − W))))   for t ≥ W

    with W = ``warmup_steps``, T = ``total_steps`` and r = ``min_lr_ratio``: a ramp that
    never uses a zero rate, then a half cosine from base_lr down to r·base_lr at step T, held
    there after T. Call ``step()`` after each ``optimizer.step()``, as with PyTorch's
    schedulers; construction sets the rate of step 0.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                 min_lr_ratio: float = 0.0) -> None:
        fn = "CosineWarmup"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{fn}: optimizer must be a minicond Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.total_steps = check_int(fn, "total_steps", total_steps, 1)
        self.warmup_steps = check_int(fn, "warmup_steps", warmup_steps, 0)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"{fn}: warmup_steps={warmup_steps} must be smaller than "
                             f"total_steps={total_steps}")
        self.min_lr_ratio = check_float(fn, "min_lr_ratio", min_lr_ratio, 0.0, 1.0)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, t: int) -> float:
        """f(t), the multiple of the base rate used at step t."""
        W, T, r = self.warmup_steps, self.total_steps, self.min_lr_ratio
        if t < W:
            return (t + 1) / (W + 1)
        progress = min(1.0, (t - W) / (T - W))
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        f = self.factor(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * f

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs),
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "min_lr_ratio": self.min_lr_ratio}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        expected = {"last_step", "base_lrs", "total_steps", "warmup_steps", "min_lr_ratio"}
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            raise ValueError(f"CosineWarmup.load_state_dict: expected the keys "
                             f"{sorted(expected)}")
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError("CosineWarmup.load_state_dict: the checkpoint has "
                             f"{len(state_dict['base_lrs'])} base rates; the optimizer has "
                             f"{len(self.optimizer.param_groups)} groups")
        self.last_step = int(state_dict["last_step"])
        self.base_lrs = [float(v) for v in state_dict["base_lrs"]]
        self.total_steps = int(state_dict["total_steps"])
        self.warmup_steps = int(state_dict["warmup_steps"])
        self.min_lr_ratio = float(state_dict["min_lr_ratio"])
        self._apply()


def _maximum(be: Any, a: Any, b: Any) -> Any:
    """max(a, b) exactly, from 0/1 masks: a·(1 − [b > a]) + b·[b > a]."""
    take_b = be.gt(b, a)
    one = _scalar(be, 1.0, a.dtype)
    return be.add(be.mul(a, be.sub(one, take_b)), be.mul(b, take_b))


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so their joint norm is at most ``max_norm``
    (``torch.nn.utils.clip_grad_norm_``).

    With N = ‖(‖g₁‖, ‖g₂‖, …)‖ (the 2-norm or the max-norm of every gradient element), each
    g becomes g·min(1, max_norm/(N + 10⁻⁶)). Returns N as a 0-d Tensor on the gradients'
    backend; it is read back to the host only with ``error_if_nonfinite``.
    """
    fn = "clip_grad_norm_"
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    max_norm = _non_negative(fn, "max_norm", max_norm)
    if norm_type not in (2, 2.0, float("inf")):
        raise ValueError(f"{fn}: norm_type={norm_type!r} is not supported; expected 2.0 or "
                         "float('inf')")
    if any(not isinstance(p, Tensor) for p in params):
        raise TypeError(f"{fn}: parameters must be Tensors")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        be = params[0].backend if params else get_backend("numpy")
        return Tensor(be.full((), 0.0, np.dtype(np.float32)), be)
    be, dt = grads[0].backend, grads[0].dtype
    if any(g.backend is not be or g.dtype != dt for g in grads):
        raise ValueError(f"{fn}: all gradients must share one backend and dtype")
    total = None
    for g in grads:
        every = tuple(range(g.ndim))
        if norm_type == 2:
            part = be.sum(be.mul(g.data, g.data), every, False)
            total = part if total is None else be.add(total, part)
        else:
            part = _maximum(be, be.max(g.data, every, False), be.max(be.neg(g.data), every,
                                                                         False))
            total = part if total is None else _maximum(be, total, part)
    if norm_type == 2:
        total = be.sqrt(total)
    norm = Tensor(total, be)
    if error_if_nonfinite and not math.isfinite(norm.item()):
        raise RuntimeError(f"{fn}: the total norm of order {norm_type} is non-finite, so the "
                           "gradients cannot be clipped; pass error_if_nonfinite=False to "
                           "scale them anyway")
    if math.isinf(max_norm):
        return norm
    coef = be.div(_scalar(be, max_norm, dt), be.add(total, _scalar(be, 1e-6, dt)))
    one = _scalar(be, 1.0, dt)
    over = be.gt(coef, one)
    coef = be.add(be.mul(coef, be.sub(one, over)), over)  # min(coef, 1), exactly
    for g in grads:
        g.data = be.mul(g.data, coef)
    return norm

