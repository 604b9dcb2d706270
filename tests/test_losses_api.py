"""Losses against PyTorch in float64 on every backend: cross-entropy with class weights,
ignored labels and label smoothing, nll_loss, l1_loss and binary cross-entropy from logits
(weight, pos_weight, soft targets, a gradient for the target too); all-element gradient
checks, numerical stability, the loss modules, and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import compare_with_torch, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import fixture_settings

import minicond as mc

F = mc.functional
REDUCTIONS = ("mean", "sum", "none")


@st.composite
def labelled(draw, size_limit: int):
    """Logits [N, C], labels with some set to ignore_index, and optional class weights."""
    n = draw(st.integers(1, size_limit), label="N")
    c = draw(st.integers(1, size_limit), label="C")
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    scale = draw(st.sampled_from([0.5, 3.0, 30.0]), label="scale")
    # 1 is a class label when C > 1: its rows are then left out, as in PyTorch
    ignore_index = draw(st.sampled_from([-100, 1]), label="ignore_index")
    labels = rng.integers(0, c, size=n)
    if draw(st.booleans(), label="ignore some"):
        labels[rng.random(n) < 0.3] = ignore_index
    labels[0] = 0                                   # one row always counts: no 0/0 mean
    weight = rng.uniform(0.2, 2.0, size=c) if draw(st.booleans(), label="weight") else None
    return scale * rng.standard_normal((n, c)), labels, ignore_index, weight


def _torch_weight(weight):
    return None if weight is None else torch.from_numpy(weight)


@settings(fixture_settings, max_examples=20)
@given(data=st.data(), smoothing=st.sampled_from([0.0, 0.1, 1.0]),
       reduction=st.sampled_from(REDUCTIONS))
def test_cross_entropy_options_match_torch(backend, size_limit, data, smoothing, reduction):
    logits, labels, ignore_index, weight = data.draw(labelled(size_limit))
    compare_with_torch(
        lambda z: F.cross_entropy(z, labels, weight, ignore_index=ignore_index,
                                  reduction=reduction, label_smoothing=smoothing),
        lambda z: TF.cross_entropy(z, torch.from_numpy(labels), _torch_weight(weight),
                                   ignore_index=ignore_index, reduction=reduction,
                                   label_smoothing=smoothing),
        [logits], backend=backend)


@settings(fixture_settings, max_examples=20)
@given(data=st.data(), reduction=st.sampled_from(REDUCTIONS))
def test_nll_loss_matches_torch(backend, size_limit, data, reduction):
    logits, labels, ignore_index, weight = data.draw(labelled(size_limit))
    compare_with_torch(
        lambda x: F.nll_loss(F.log_softmax(x, 1), labels, weight, ignore_index=ignore_index,
                             reduction=reduction),
        lambda x: TF.nll_loss(TF.log_softmax(x, 1), torch.from_numpy(labels),
                              _torch_weight(weight), ignore_index=ignore_index,
                              reduction=reduction),
        [logits], backend=backend)


@settings(fixture_settings, max_examples=15)
@given(data=st.data(), reduction=st.sampled_from(REDUCTIONS), smoothing=st.sampled_from([0, 0.2]))
def test_cross_entropy_per_pixel_and_unbatched_match_torch(backend, size_limit, data,
                                                            reduction, smoothing):
    """[N, C, d1, …] with labels [N, d1, …] (per-pixel classification), and [C] with one label."""
    extra = tuple(data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2), label="d"))
    n, c = data.draw(st.integers(1, 3), label="N"), data.draw(st.integers(2, 4), label="C")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    unbatched = data.draw(st.booleans(), label="unbatched") and not extra
    shape, label_shape = ((c,), ()) if unbatched else ((n, c) + extra, (n,) + extra)
    labels = rng.integers(0, c, size=label_shape)
    if labels.ndim:
        labels.flat[-1] = -100                      # one ignored item
        labels.flat[0] = 0
    weight = rng.uniform(0.5, 2.0, c)
    for ours, theirs in [(F.cross_entropy, TF.cross_entropy), (F.nll_loss, TF.nll_loss)]:
        kwargs = {"label_smoothing": smoothing} if ours is F.cross_entropy else {}
        compare_with_torch(
            lambda z, ours=ours, kwargs=kwargs: ours(z, labels, weight, reduction=reduction,
                                                     **kwargs),
            lambda z, theirs=theirs, kwargs=kwargs: theirs(
                z, torch.from_numpy(labels), torch.from_numpy(weight), reduction=reduction,
                **kwargs),
            [rng.standard_normal(shape)], backend=backend)


@st.composite
def same_shape_pair(draw, size_limit: int, grid: bool):
    shape = tuple(draw(st.lists(st.integers(1, size_limit), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    return (np.round(a), np.round(b)) if grid else (a, b)


@settings(fixture_settings, max_examples=20)
@given(data=st.data(), reduction=st.sampled_from(REDUCTIONS))
def test_l1_loss_matches_torch(backend, size_limit, data, reduction):
    a, b = data.draw(same_shape_pair(size_limit, grid=True))   # ties: sign(0) = 0
    compare_with_torch(lambda a, b: F.l1_loss(a, b, reduction=reduction),
                       lambda a, b: TF.l1_loss(a, b, reduction=reduction), [a, b],
                       backend=backend)


@settings(fixture_settings, max_examples=20)
@given(data=st.data(), reduction=st.sampled_from(REDUCTIONS), scale=st.sampled_from([1, 40]),
       weighted=st.booleans(), pos_weighted=st.booleans())
def test_bce_with_logits_matches_torch(backend, size_limit, data, reduction, scale, weighted,
                                       pos_weighted):
    x, _ = data.draw(same_shape_pair(size_limit, grid=False))
    rng = np.random.default_rng(x.size)
    y = rng.uniform(0, 1, x.shape)                               # soft targets
    y.flat[::2] = np.round(y.flat[::2])                          # and hard ones
    weight = rng.uniform(0.2, 2.0, x.shape[-1:]) if weighted else None
    pos_weight = rng.uniform(0.2, 3.0, x.shape[-1:]) if pos_weighted else None
    compare_with_torch(
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, weight, reduction=reduction,
                                                        pos_weight=pos_weight),
        lambda x, y: TF.binary_cross_entropy_with_logits(
            x, y, _torch_weight(weight), reduction=reduction,
            pos_weight=_torch_weight(pos_weight)),
        [scale * x, y], backend=backend)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_gradchecks(reduction):
    """On the reference backend; the other backends are held to PyTorch above."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((3, 4))
    labels = np.array([3, -1, 0])
    weight = np.array([0.5, 1.0, 2.0, 1.5])
    gradcheck(lambda z: F.cross_entropy(z, labels, weight, ignore_index=-1,
                                        reduction=reduction, label_smoothing=0.2),
              [logits])
    gradcheck(lambda x: F.nll_loss(x, labels, weight, ignore_index=-1, reduction=reduction),
              [logits])
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    gradcheck(lambda a, b: F.l1_loss(a, b, reduction=reduction), [a, b])
    gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(
        x, y, np.array([1.0, 0.5, 2.0]), reduction=reduction, pos_weight=np.array([3.0])),
        [a, rng.uniform(0, 1, (2, 3))])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_with_logits_is_stable_for_huge_logits(backend, dtype):
    x = np.array([-1e4, -100.0, 100.0, 1e4])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    xt = mc.tensor(x, dtype=dtype, requires_grad=True, backend=backend)
    loss = F.binary_cross_entropy_with_logits(xt, y, reduction="none", pos_weight=2.0)
    loss.sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    ref = TF.binary_cross_entropy_with_logits(tx, torch.tensor(y), reduction="none",
                                              pos_weight=torch.tensor(2.0))
    ref.sum().backward()
    np.testing.assert_allclose(loss.numpy(), ref.detach().numpy(), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-30)


def test_losses_take_int64_tensor_targets(backend):
    z = mc.tensor(np.zeros((2, 3)), dtype="float64", backend=backend)
    target = mc.tensor(np.array([2, 0]), backend=backend)
    assert target.dtype == np.int64
    assert F.cross_entropy(z, target).item() == pytest.approx(np.log(3))
    assert F.nll_loss(z, target).item() == 0.0
    with pytest.raises(TypeError, match="cross_entropy: target must be integer class labels"):
        F.cross_entropy(z, mc.tensor(np.array([True, False]), backend=backend))


# --- loss modules ------------------------------------------------------------------------------

def test_loss_modules_match_torch(backend):
    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2])
    weight = np.array([1.0, 2.0, 0.5])
    pairs = [
        (lambda: mc.nn.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.1),
         torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), ignore_index=1,
                                   label_smoothing=0.1), labels),
        (lambda: mc.nn.NLLLoss(reduction="sum"), torch.nn.NLLLoss(reduction="sum"), labels),
        (lambda: mc.nn.MSELoss(reduction="none"), torch.nn.MSELoss(reduction="none"),
         rng.standard_normal((4, 3))),
        (lambda: mc.nn.L1Loss(), torch.nn.L1Loss(), rng.standard_normal((4, 3))),
        (lambda: mc.nn.BCEWithLogitsLoss(pos_weight=np.array([1.0, 2.0, 3.0])),
         torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 3.0],
                                                            dtype=torch.float64)),
         rng.uniform(0, 1, (4, 3))),
    ]
    for make, theirs, target in pairs:
        ours = make()
        t_target = torch.from_numpy(target)
        compare_with_torch(lambda z, ours=ours, target=target: ours(z, target),
                           lambda z, theirs=theirs, t_target=t_target: theirs(z, t_target),
                           [logits], backend=backend)
        assert ours.reduction == theirs.reduction


def test_loss_module_weights_follow_the_module():
    """Class weights are buffers: saved in state_dict, converted by .to(dtype)."""
    loss = mc.nn.CrossEntropyLoss(weight=np.array([1.0, 2.0]))
    assert set(loss.state_dict()) == {"weight"}
    loss.double()
    assert loss.weight.dtype == np.float64
    assert set(mc.nn.BCEWithLogitsLoss().state_dict()) == set()


# --- argument errors ---------------------------------------------------------------------------

def _z(n=3, c=4):
    return mc.tensor(np.zeros((n, c)), backend="numpy")


@pytest.mark.parametrize("call,error,match", [
    (lambda: F.cross_entropy(_z(), [0, 1, 2], np.ones(3)), ValueError,
     r"cross_entropy: weight must be 4 real numbers.*\(3,\)"),
    (lambda: F.cross_entropy(_z(), [0, 1, 2], np.array([1, np.nan, 1, 1])), ValueError,
     "weight must be finite"),
    (lambda: F.cross_entropy(_z(), [0, 1, 2], ignore_index=1.5), TypeError,
     "cross_entropy: ignore_index=1.5 must be an int"),
    (lambda: F.cross_entropy(_z(), [0, -5, 2], ignore_index=-1), ValueError,
     r"\[0, 4\) or equal ignore_index=-1"),
    (lambda: F.cross_entropy(_z(), [0, 1, 2], reduction="avg"), ValueError, "reduction='avg'"),
    (lambda: F.nll_loss(_z(), [0, 1]), ValueError, r"nll_loss: target has shape \(2,\)"),
    (lambda: F.nll_loss(np.zeros((3, 4)), [0, 1, 2]), TypeError, "nll_loss: input must be"),
    (lambda: F.nll_loss(_z(), [0, 1, 9]), ValueError, r"nll_loss: target labels must be in"),
    (lambda: F.l1_loss(_z(), _z(3, 5)), ValueError, r"l1_loss: target has shape \(3, 5\)"),
    (lambda: F.l1_loss(_z(), _z(), reduction="max"), ValueError, "l1_loss: reduction='max'"),
    (lambda: F.binary_cross_entropy_with_logits(_z(), _z(2, 4)), ValueError,
     "binary_cross_entropy_with_logits: target has shape"),
    (lambda: F.binary_cross_entropy_with_logits(_z(), _z(), np.ones(3)), ValueError,
     r"weight of shape \(3,\) does not broadcast to the input's shape \(3, 4\)"),
    (lambda: F.binary_cross_entropy_with_logits(_z(), _z(), pos_weight=np.ones((2, 3, 4))),
     ValueError, "pos_weight of shape"),
    (lambda: F.binary_cross_entropy_with_logits(_z(), _z(), pos_weight=np.array(["a"])),
     TypeError, "pos_weight must hold real numbers"),
    (lambda: mc.nn.CrossEntropyLoss(reduction="avg"), ValueError,
     "CrossEntropyLoss: reduction='avg'"),
    (lambda: mc.nn.BCEWithLogitsLoss(pos_weight="x"), TypeError,
     "BCEWithLogitsLoss: pos_weight"),
])
def test_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@given(reduction=st.one_of(st.sampled_from(REDUCTIONS), st.text(max_size=5), st.none()),
       smoothing=st.one_of(st.floats(-1, 2), st.sampled_from([float("nan"), float("inf")]),
                           st.none()),
       ignore_index=st.one_of(st.integers(-200, 5), st.floats(-2, 2), st.none()),
       weight=st.one_of(st.none(), st.lists(st.floats(0, 3), min_size=2, max_size=4)))
def test_drawn_loss_arguments_are_accepted_or_named(reduction, smoothing, ignore_index,
                                                    weight):
    """Each drawn argument either works or raises a ValueError/TypeError naming the function
    and the argument; a loss that is computed is finite or (all rows ignored, or zero total
    weight, with the mean) NaN as in PyTorch."""
    z = mc.tensor(np.array([[0.5, -1.0, 2.0], [0.0, 1.0, -0.5]]), dtype="float64",
                  backend="numpy")
    labels = np.array([2, 0])
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = F.cross_entropy(z, labels, None if weight is None else np.array(weight),
                                   ignore_index=ignore_index, reduction=reduction,
                                   label_smoothing=smoothing)
    except (TypeError, ValueError) as err:
        message = str(err)
        assert message.startswith("cross_entropy: "), message
        assert any(name in message for name in ("reduction", "label_smoothing",
                                                "ignore_index", "weight")), message
        return
    ref = TF.cross_entropy(torch.from_numpy(z.numpy()), torch.from_numpy(labels),
                           None if weight is None else torch.tensor(weight, dtype=torch.float64),
                           ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=smoothing)
    np.testing.assert_allclose(loss.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
