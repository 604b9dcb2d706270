"""Optimizers, the cosine-with-warmup schedule and gradient clipping against torch.optim.

Each update rule runs step by step beside PyTorch on the same parameters and the same
gradients, and the parameters must agree after every step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minicond as mc
from minicond import optim

SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]


def _params(backend: str, dtype: str = "float64", seed: int = 0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    mine = [mc.nn.Parameter(mc.tensor(v, dtype=dtype, backend=backend)) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v, dtype=getattr(torch, dtype))) for v in values]
    return mine, theirs


def _set_grads(mine, theirs, step: int, skip: int | None = None) -> None:
    """The same random gradients on both sides; parameter ``skip`` gets none."""
    rng = np.random.default_rng(100 + step)
    for i, (p, q) in enumerate(zip(mine, theirs, strict=True)):
        if i == skip:
            p.grad, q.grad = None, None
            continue
        g = rng.standard_normal(p.shape)
        p.grad = mc.tensor(g, dtype=p.dtype, backend=p.backend)
        q.grad = torch.tensor(g, dtype=q.dtype)


def _assert_same(mine, theirs, step: int, rtol: float = 1e-12, atol: float = 1e-14) -> None:
    for i, (p, q) in enumerate(zip(mine, theirs, strict=True)):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"parameter {i} differs after step {step}")


def _run_both(make_mine, make_theirs, backend: str, steps: int = 6, dtype: str = "float64",
              rtol: float = 1e-12, atol: float = 1e-14) -> None:
    mine, theirs = _params(backend, dtype)
    opt, ref = make_mine(mine), make_theirs(theirs)
    for step in range(steps):
        # parameter 1 sits out step 2: both libraries must skip a parameter without gradient
        _set_grads(mine, theirs, step, skip=1 if step == 2 else None)
        opt.step()
        ref.step()
        _assert_same(mine, theirs, step, rtol, atol)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.05, weight_decay=0.01),
    dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4),
]


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=lambda c: ",".join(map(str, c.items())))
def test_sgd_matches_torch(backend, config):
    _run_both(lambda p: optim.SGD(p, **config), lambda p: torch.optim.SGD(p, **config),
              backend)


ADAM_CONFIGS = [
    dict(lr=1e-2),
    dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
]


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=lambda c: ",".join(map(str, c.items())))
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_family_matches_torch(backend, name, config):
    _run_both(lambda p: getattr(optim, name)(p, **config),
              lambda p: getattr(torch.optim, name)(p, **config), backend)


def test_adam_bias_correction_first_step(backend):
    """At t = 1 the corrected moments are g and g², so the step is lr·g/(|g| + ε) ≈ lr·sign g:
    without bias correction it would be about 0.1/√0.001 ≈ 3.2 times larger."""
    p = mc.nn.Parameter(mc.tensor(np.zeros(4), dtype="float64", backend=backend))
    g = np.array([2.0, -0.5, 1e-3, -7.0])
    p.grad = mc.tensor(g, dtype="float64", backend=backend)
    optim.Adam([p], lr=0.01, eps=1e-8).step()
    np.testing.assert_allclose(p.numpy(), -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)


def test_adamw_decay_is_decoupled(backend):
    """With a zero gradient AdamW still shrinks p by (1 − lr·λ); Adam's L2 term instead
    enters the moments and moves p by about lr."""
    start = np.array([1.0, -2.0, 3.0])
    pw = mc.nn.Parameter(mc.tensor(start, dtype="float64", backend=backend))
    pa = mc.nn.Parameter(mc.tensor(start, dtype="float64", backend=backend))
    for p in (pw, pa):
        p.grad = mc.tensor(np.zeros(3), dtype="float64", backend=backend)
    optim.AdamW([pw], lr=0.1, weight_decay=0.5).step()
    optim.Adam([pa], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(pw.numpy(), start * (1 - 0.1 * 0.5), rtol=1e-14)
    np.testing.assert_allclose(pa.numpy(), start - 0.1 * np.sign(start), rtol=1e-7)


@given(lr=st.floats(1e-4, 0.5), momentum=st.floats(0.0, 0.99),
       weight_decay=st.floats(0.0, 0.1), nesterov=st.booleans(),
       beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999), eps=st.floats(1e-10, 1e-3))
def test_drawn_hyperparameters_match_torch(lr, momentum, weight_decay, nesterov, beta1, beta2,
                                           eps):
    sgd = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
               nesterov=nesterov and momentum > 0)
    _run_both(lambda p: optim.SGD(p, **sgd), lambda p: torch.optim.SGD(p, **sgd), "numpy",
              steps=4, rtol=1e-11)
    adam = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    for name in ("Adam", "AdamW"):
        _run_both(lambda p, n=name: getattr(optim, n)(p, **adam),
                  lambda p, n=name: getattr(torch.optim, n)(p, **adam), "numpy", steps=4,
                  rtol=1e-10, atol=1e-13)


def test_float32_matches_torch(backend):
    _run_both(lambda p: optim.AdamW(p, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2),
              backend, dtype="float32", rtol=1e-5, atol=1e-6)
    _run_both(lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
              lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
              backend, dtype="float32", rtol=1e-5, atol=1e-6)


def test_param_groups_use_their_own_hyperparameters(backend):
    mine, theirs = _params(backend)
    opt = optim.SGD([{"params": mine[:2]}, {"params": mine[2:], "lr": 0.5, "momentum": 0.5}],
                    lr=0.1)
    ref = torch.optim.SGD([{"params": theirs[:2]},
                           {"params": theirs[2:], "lr": 0.5, "momentum": 0.5}], lr=0.1)
    for step in range(3):
        _set_grads(mine, theirs, step)
        opt.step()
        ref.step()
        _assert_same(mine, theirs, step)


def test_zero_grad():
    p = mc.nn.Parameter(mc.tensor(np.ones(3), backend="numpy"))
    p.grad = mc.tensor(np.ones(3), backend="numpy")
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


# --- checkpoints -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_state_dict_resume_is_exact(backend, name):
    """3 steps, save, rebuild on copies, load, 3 more steps == 6 uninterrupted steps."""
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=True) if name == "SGD" else dict(lr=0.01)
    straight, _ = _params(backend)
    opt = getattr(optim, name)(straight, **kwargs)
    resumed, _ = _params(backend)
    first = getattr(optim, name)(resumed, **kwargs)
    for step in range(3):
        for ps in (straight, resumed):
            rng = np.random.default_rng(step)
            for p in ps:
                p.grad = mc.tensor(rng.standard_normal(p.shape), dtype=p.dtype, backend=backend)
        opt.step()
        first.step()
    saved = first.state_dict()
    values = [p.numpy() for p in resumed]
    copies = [mc.nn.Parameter(mc.tensor(v, dtype="float64", backend=backend)) for v in values]
    second = getattr(optim, name)(copies, lr=123.0)  # the checkpoint restores the rate
    second.load_state_dict(saved)
    for step in range(3, 6):
        for ps in (straight, copies):
            rng = np.random.default_rng(step)
            for p in ps:
                p.grad = mc.tensor(rng.standard_normal(p.shape), dtype=p.dtype, backend=backend)
        opt.step()
        second.step()
    for p, q in zip(straight, copies, strict=True):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_state_dict_holds_numpy_and_torch_layout():
    mine, _ = _params("numpy")
    opt = optim.Adam(mine, lr=0.1)
    for p in mine:
        p.grad = mc.tensor(np.ones(p.shape), dtype="float64", backend="numpy")
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    assert sd["state"][0]["step"] == 1
    assert isinstance(sd["state"][2]["exp_avg"], np.ndarray)
    assert sd["state"][2]["exp_avg"].shape == SHAPES[2]


def test_load_state_dict_rejects_mismatches():
    mine, _ = _params("numpy")
    opt = optim.Adam(mine, lr=0.1)
    for p in mine:
        p.grad = mc.tensor(np.ones(p.shape), dtype="float64", backend="numpy")
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="parameters"):
        optim.Adam(mine[:2], lr=0.1).load_state_dict(sd)
    swapped = [mine[1], mine[0], mine[2]]
    with pytest.raises(ValueError, match="shape"):
        optim.Adam(swapped, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


# --- schedule ----------------------------------------------------------------------------------

def _reference_factor(t: int, warmup: int, total: int, ratio: float) -> float:
    if t < warmup:
        return (t + 1) / (warmup + 1)
    progress = min(1.0, (t - warmup) / (total - warmup))
    return ratio + (1 - ratio) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize("warmup,total,ratio", [(0, 10, 0.0), (3, 12, 0.0), (5, 9, 0.1),
                                                (1, 2, 0.5)])
def test_schedule_matches_torch_lambda_lr(warmup, total, ratio):
    p = mc.nn.Parameter(mc.tensor(np.zeros(2), backend="numpy"))
    q = torch.nn.Parameter(torch.zeros(2))
    opt = optim.SGD([p], lr=0.3)
    sched = optim.CosineWarmup(opt, total, warmup, ratio)
    ref_opt = torch.optim.SGD([q], lr=0.3)
    ref = torch.optim.lr_scheduler.LambdaLR(
        ref_opt, lambda t: _reference_factor(t, warmup, total, ratio))
    for t in range(total + 3):
        assert sched.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-12), t
        ref_opt.step()
        sched.step()
        ref.step()


def test_schedule_without_warmup_is_torch_cosine_annealing():
    p = mc.nn.Parameter(mc.tensor(np.zeros(2), backend="numpy"))
    q = torch.nn.Parameter(torch.zeros(2))
    opt = optim.SGD([p], lr=0.2)
    sched = optim.CosineWarmup(opt, total_steps=15, min_lr_ratio=0.05)
    ref_opt = torch.optim.SGD([q], lr=0.2)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=15, eta_min=0.2 * 0.05)
    for t in range(16):
        assert sched.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9), t
        ref_opt.step()
        sched.step()
        ref.step()


def test_scheduled_sgd_matches_torch(backend):
    """The rates reach the update: SGD + schedule step by step against SGD + LambdaLR."""
    def mine(p):
        opt = optim.SGD(p, lr=0.1, momentum=0.9)
        mine.sched = optim.CosineWarmup(opt, total_steps=6, warmup_steps=2)
        return opt

    def theirs(p):
        opt = torch.optim.SGD(p, lr=0.1, momentum=0.9)
        theirs.sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: _reference_factor(t, 2, 6, 0.0))
        return opt

    params, refs = _params(backend)
    opt, ref = mine(params), theirs(refs)
    for step in range(6):
        _set_grads(params, refs, step)
        opt.step()
        ref.step()
        mine.sched.step()
        theirs.sched.step()
        _assert_same(params, refs, step)


def test_schedule_state_dict_round_trip():
    opt = optim.SGD([mc.nn.Parameter(mc.tensor(np.zeros(1), backend="numpy"))], lr=1.0)
    sched = optim.CosineWarmup(opt, 20, 4)
    for _ in range(7):
        sched.step()
    other_opt = optim.SGD([mc.nn.Parameter(mc.tensor(np.zeros(1), backend="numpy"))], lr=1.0)
    other = optim.CosineWarmup(other_opt, 20, 4)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == sched.get_last_lr()
    sched.step()
    other.step()
    assert other.get_last_lr() == sched.get_last_lr()


# --- clipping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_clip_grad_norm_matches_torch(backend, max_norm, norm_type):
    mine, theirs = _params(backend)
    _set_grads(mine, theirs, 0, skip=1)
    total = optim.clip_grad_norm_(mine, max_norm, norm_type)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total.item() == pytest.approx(ref.item(), rel=1e-12)
    for p, q in zip(mine, theirs, strict=True):
        if q.grad is None:
            assert p.grad is None
            continue
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_actually_clips():
    mine, _ = _params("numpy")
    for p in mine:
        p.grad = mc.tensor(np.full(p.shape, 10.0), dtype="float64", backend="numpy")
    before = optim.clip_grad_norm_(mine, 1.0).item()
    after = math.sqrt(sum(float(np.sum(p.grad.numpy() ** 2)) for p in mine))
    assert before > 10
    assert after == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_nonfinite():
    p = mc.nn.Parameter(mc.tensor(np.ones(3), dtype="float64", backend="numpy"))
    p.grad = mc.tensor(np.array([1.0, np.nan, 2.0]), dtype="float64", backend="numpy")
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert math.isnan(optim.clip_grad_norm_([p], 1.0).item())


# --- argument errors ---------------------------------------------------------------------------

def _one_param():
    return [mc.nn.Parameter(mc.tensor(np.zeros(2), backend="numpy"))]


@pytest.mark.parametrize("make,error,match", [
    (lambda: optim.SGD(_one_param(), lr=-1.0), ValueError, "lr=-1.0"),
    (lambda: optim.SGD(_one_param(), lr=float("nan")), ValueError, "lr=nan"),
    (lambda: optim.SGD(_one_param(), lr="0.1"), TypeError, "lr='0.1'"),
    (lambda: optim.SGD(_one_param(), momentum=-0.5), ValueError, "momentum"),
    (lambda: optim.SGD(_one_param(), nesterov=True), ValueError, "nesterov"),
    (lambda: optim.SGD(_one_param(), momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "dampening"),
    (lambda: optim.SGD([], lr=0.1), ValueError, "empty"),
    (lambda: optim.SGD(_one_param()[0], lr=0.1), TypeError, "single Tensor"),
    (lambda: optim.SGD([np.zeros(2)], lr=0.1), TypeError, "Tensors"),
    (lambda: optim.SGD(_one_param() * 2, lr=0.1), ValueError, "more than one place"),
    (lambda: optim.SGD([{"params": _one_param(), "betas": (0.9, 0.9)}]), ValueError,
     "unknown hyper-parameters"),
    (lambda: optim.Adam(_one_param(), betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (lambda: optim.Adam(_one_param(), betas=0.9), ValueError, "pair"),
    (lambda: optim.AdamW(_one_param(), eps=-1e-8), ValueError, "eps"),
    (lambda: optim.CosineWarmup(optim.SGD(_one_param()), 5, 5), ValueError, "warmup_steps"),
    (lambda: optim.CosineWarmup(optim.SGD(_one_param()), 0), ValueError, "total_steps"),
    (lambda: optim.CosineWarmup("sgd", 5), TypeError, "Optimizer"),
    (lambda: optim.clip_grad_norm_(_one_param(), -1.0), ValueError, "max_norm"),
    (lambda: optim.clip_grad_norm_(_one_param(), 1.0, norm_type=1.0), ValueError,
     "norm_type"),
])
def test_invalid_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_step_rejects_gradient_of_another_dtype():
    p = mc.nn.Parameter(mc.tensor(np.zeros(2), dtype="float64", backend="numpy"))
    p.grad = mc.tensor(np.ones(2), dtype="float32", backend="numpy")
    with pytest.raises(ValueError, match="gradient is float32"):
        optim.SGD([p], lr=0.1).step()
