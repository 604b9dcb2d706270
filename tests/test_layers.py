"""Training layers against PyTorch: SiLU, max/avg/adaptive pooling, batch norm (functional
and BatchNorm2d with running statistics), Sequential, Flatten, and the MBConv blocks (the
CondConv block's shared router, its static twin). Outputs and every gradient in float64,
full finite-difference gradient checks, and argument errors."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import compare_with_torch, gradcheck
from hypothesis import given
from hypothesis import strategies as st
from strategies import fixture_settings, normal

import minicond as mc

F = mc.functional


# --- activations -------------------------------------------------------------------------------

@fixture_settings
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.5, 5.0, 50.0]))
def test_silu_matches_torch(backend, seed, scale):
    (x,) = normal(seed, (3, 4, 2))
    compare_with_torch(F.silu, TF.silu, [x * scale], backend=backend)


def test_silu_gradcheck(backend):
    (x,) = normal(1, (2, 3, 3))
    gradcheck(F.silu, [x * 3], backend=backend)


@pytest.mark.parametrize("name", ["ReLU", "SiLU", "Sigmoid"])
def test_activation_modules_match_torch(backend, name):
    (x,) = normal(2, (2, 3, 4))
    layer = getattr(mc.nn, name)()
    compare_with_torch(layer, getattr(torch.nn, name)(), [x * 4], backend=backend)


# --- pooling -----------------------------------------------------------------------------------

@st.composite
def pool_cases(draw, size_limit: int, dilated: bool):
    """A valid pooling geometry by construction: per axis draw kernel k, padding p ≤ k//2,
    stride s, dilation d and the output size (at most 2 when ``size_limit`` asks for tiny
    shapes), then derive the input size. Inputs whose windows could lie wholly in the padding
    (dilation only) are grown by one until none does."""
    kernel, stride, pads, dil, size = [], [], [], [], []
    for _ in range(2):
        k = draw(st.integers(1, 3))
        p = draw(st.integers(0, k // 2))
        s = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2)) if dilated else 1
        out = draw(st.integers(1, 2 if size_limit <= 4 else 3))
        n = max(1, (out - 1) * s + d * (k - 1) + 1 - 2 * p + draw(st.integers(0, s - 1)))
        while not _every_window_touches_input(n, k, s, p, d):
            n += 1
        kernel.append(k)
        stride.append(s)
        pads.append(p)
        dil.append(d)
        size.append(n)
    b = draw(st.integers(1, 2))
    c = draw(st.integers(1, min(3, size_limit)))
    seed = draw(st.integers(0, 2**16))
    return (b, c, *size), tuple(kernel), tuple(stride), tuple(pads), tuple(dil), seed


def _every_window_touches_input(n: int, k: int, s: int, p: int, d: int) -> bool:
    out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    return all(any(0 <= o * s - p + i * d < n for i in range(k)) for o in range(out))


@fixture_settings
@given(data=st.data())
def test_max_pool2d_matches_torch(backend, size_limit, data):
    shape, k, s, p, d, seed = data.draw(pool_cases(size_limit, dilated=True), label="case")
    (x,) = normal(seed, shape)
    compare_with_torch(lambda x: F.max_pool2d(x, k, s, p, d),
                       lambda x: TF.max_pool2d(x, k, s, p, d), [x], backend=backend)


@fixture_settings
@given(data=st.data(), include_pad=st.booleans(),
       divisor=st.sampled_from([None, None, 1, 5]))
def test_avg_pool2d_matches_torch(backend, size_limit, data, include_pad, divisor):
    shape, k, s, p, _, seed = data.draw(pool_cases(size_limit, dilated=False), label="case")
    (x,) = normal(seed, shape)
    compare_with_torch(lambda x: F.avg_pool2d(x, k, s, p, include_pad, divisor),
                       lambda x: TF.avg_pool2d(x, k, s, p, count_include_pad=include_pad,
                                               divisor_override=divisor),
                       [x], backend=backend)


def test_max_pool2d_ties_go_to_the_first_maximum(backend):
    """On a constant input every window's maximum is tied; like PyTorch, each window sends its
    gradient to its first element (overlapping windows then add up)."""
    x = np.ones((1, 2, 5, 5))
    compare_with_torch(lambda x: F.max_pool2d(x, 3, 1, 1), lambda x: TF.max_pool2d(x, 3, 1, 1),
                       [x], backend=backend)


def test_max_pool2d_padding_never_wins(backend):
    """All-negative inputs: a zero-padded window would report 0; padding must count as −∞."""
    (x,) = normal(4, (1, 1, 4, 4))
    x = -np.abs(x) - 1.0
    y = F.max_pool2d(mc.tensor(x, dtype="float64", backend=backend), 3, 2, 1)
    assert np.all(y.numpy() < 0)
    np.testing.assert_array_equal(y.numpy(), TF.max_pool2d(torch.tensor(x), 3, 2, 1).numpy())


@pytest.mark.parametrize("args", [(3, 2, 1, 1), (2, 1, 0, 2), ((2, 3), (1, 2), (1, 1), 1)])
def test_pooling_gradcheck(backend, size_limit, args):
    k, s, p, d = args
    (x,) = normal(6, (1, 1, 4, 4) if size_limit <= 4 else (1, 2, 5, 5))
    gradcheck(lambda x: F.max_pool2d(x, k, s, p, d), [x], backend=backend)
    gradcheck(lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=False), [x], backend=backend)


def test_adaptive_avg_pool2d_matches_torch(backend):
    (x,) = normal(8, (2, 3, 4, 5))
    compare_with_torch(lambda x: F.adaptive_avg_pool2d(x, 1),
                       lambda x: TF.adaptive_avg_pool2d(x, 1), [x], backend=backend)
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, (1, 1)), [x[:1, :2]], backend=backend)


def test_pooling_modules_match_torch(backend):
    (x,) = normal(9, (2, 3, 6, 6))
    pairs = [(mc.nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)),
             (mc.nn.AvgPool2d(2), torch.nn.AvgPool2d(2)),
             (mc.nn.AvgPool2d(3, 1, 1, count_include_pad=False),
              torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)),
             (mc.nn.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(1))]
    for mine, theirs in pairs:
        compare_with_torch(mine, theirs, [x], backend=backend)


def test_max_pool2d_float32(backend):
    (x,) = normal(10, (2, 3, 6, 7))
    y = F.max_pool2d(mc.tensor(x.astype(np.float32), backend=backend), 3, 2, 1)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(
        y.numpy(), TF.max_pool2d(torch.tensor(x.astype(np.float32)), 3, 2, 1).numpy())


# --- batch norm --------------------------------------------------------------------------------

@fixture_settings
@given(data=st.data(), affine=st.booleans())
def test_batch_norm_training_matches_torch(backend, size_limit, data, affine):
    b = data.draw(st.integers(1, 3), label="B")
    c = data.draw(st.integers(1, size_limit), label="C")
    h = data.draw(st.integers(1, min(4, size_limit)), label="H")
    w = data.draw(st.integers(2 if b == 1 and h == 1 else 1, min(4, size_limit)), label="W")
    x, g, beta = normal(data.draw(st.integers(0, 2**16), label="seed"), (b, c, h, w), (c,),
                        (c,))
    inputs = [x * 3 + 1, g, beta] if affine else [x * 3 + 1]

    def mine(x, g=None, beta=None):
        return F.batch_norm(x, None, None, g, beta, training=True, eps=1e-3)

    def theirs(x, g=None, beta=None):
        return TF.batch_norm(x, None, None, g, beta, training=True, eps=1e-3)

    compare_with_torch(mine, theirs, inputs, backend=backend, rtol=1e-8, atol=1e-10)


def test_batch_norm_eval_matches_torch(backend):
    x, g, beta, rm = normal(11, (2, 3, 4, 4), (3,), (3,), (3,))
    rv = np.random.default_rng(0).random(3) + 0.5

    def mine(x, g, beta):
        stats = [mc.tensor(a, dtype="float64", backend=backend) for a in (rm, rv)]
        return F.batch_norm(x, *stats, g, beta, training=False)

    def theirs(x, g, beta):
        return TF.batch_norm(x, torch.tensor(rm), torch.tensor(rv), g, beta, training=False)

    compare_with_torch(mine, theirs, [x, g, beta], backend=backend)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(backend, training):
    x, g, beta = normal(12, (2, 2, 3, 3), (2,), (2,))
    stats = (None, None) if training else (np.array([0.3, -0.2]), np.array([0.7, 1.9]))

    def fn(x, g, beta):
        rs = [None if a is None else mc.tensor(a, dtype="float64", backend=backend)
              for a in stats]
        return F.batch_norm(x, *rs, g, beta, training=training)

    gradcheck(fn, [x, g, beta], backend=backend)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm2d_running_stats_match_torch(backend, momentum):
    """Several training steps update the buffers like PyTorch's; eval then uses them."""
    mine = mc.nn.BatchNorm2d(3, momentum=momentum, dtype="float64", backend=backend)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64)
    for step in range(4):
        (x,) = normal(20 + step, (2, 3, 3, 4))
        x = x * (step + 1) + step
        y = mine(mc.tensor(x, dtype="float64", backend=backend))
        ref = theirs(torch.tensor(x))
        np.testing.assert_allclose(y.numpy(), ref.detach().numpy(), rtol=1e-9, atol=1e-10)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            np.testing.assert_allclose(getattr(mine, name).numpy(),
                                       getattr(theirs, name).numpy(), rtol=1e-12,
                                       err_msg=f"{name} after step {step}")
    mine.eval()
    theirs.eval()
    (x,) = normal(30, (2, 3, 3, 4))
    compare_with_torch(mine, theirs, [x], backend=backend)


def test_batchnorm2d_state_dict_keys_are_torchs():
    mine = mc.nn.BatchNorm2d(4, backend="numpy")
    theirs = torch.nn.BatchNorm2d(4)
    assert sorted(mine.state_dict()) == sorted(theirs.state_dict())
    theirs.running_mean += 1.5
    mc.interop.load_torch_state_dict(mine, theirs.state_dict())
    np.testing.assert_allclose(mine.running_mean.numpy(), np.full(4, 1.5))


def test_batchnorm2d_without_affine_or_running_stats(backend):
    (x,) = normal(13, (3, 2, 2, 2))
    mine = mc.nn.BatchNorm2d(2, affine=False, track_running_stats=False, dtype="float64",
                             backend=backend)
    theirs = torch.nn.BatchNorm2d(2, affine=False, track_running_stats=False,
                                  dtype=torch.float64)
    assert list(mine.parameters()) == [] and mine.state_dict() == {}
    mine.eval()
    theirs.eval()  # without running statistics, eval still normalises with the batch's
    compare_with_torch(mine, theirs, [x], backend=backend)


# --- containers --------------------------------------------------------------------------------

def test_sequential_and_flatten_match_torch(backend):
    mc.manual_seed(3)
    mine = mc.nn.Sequential(mc.nn.Conv2d(2, 3, 3, padding=1, dtype="float64", backend=backend),
                            mc.nn.BatchNorm2d(3, dtype="float64", backend=backend),
                            mc.nn.ReLU(), mc.nn.MaxPool2d(2), mc.nn.Flatten(),
                            mc.nn.Linear(12, 4, dtype="float64", backend=backend))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(3),
                                 torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(12, 4)).double()
    assert sorted(mine.state_dict()) == sorted(theirs.state_dict())
    theirs.load_state_dict({k: torch.tensor(v) for k, v in mine.state_dict().items()})
    (x,) = normal(14, (2, 2, 4, 4))
    compare_with_torch(mine, theirs, [x], backend=backend)
    for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters(),
                                 strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    assert len(mine) == 6 and isinstance(mine[-1], mc.nn.Linear)
    assert len(mine[1:3]) == 2


def test_sequential_named_children_and_flatten_ranges():
    seq = mc.nn.Sequential(OrderedDict(act=mc.nn.SiLU(), flat=mc.nn.Flatten(0, 1)))
    assert [name for name, _ in seq.named_modules()] == ["", "act", "flat"]
    x = mc.tensor(np.zeros((2, 3, 4, 5)), backend="numpy")
    assert seq(x).shape == (6, 4, 5)
    assert mc.nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    assert mc.nn.Flatten(-2)(x).shape == (2, 3, 20)


# --- blocks ------------------------------------------------------------------------------------

def _torch_mbconv(block: mc.nn.MBConvBlock) -> torch.nn.Module:
    """The same block written with torch.nn, holding copies of the block's parameters."""
    mid, k = block.mid_channels, block.kernel_size
    layers = [torch.nn.Conv2d(block.in_channels, mid, 1, bias=False),
              torch.nn.BatchNorm2d(mid), torch.nn.SiLU(),
              torch.nn.Conv2d(mid, mid, k, block.stride, k // 2, groups=mid, bias=False),
              torch.nn.BatchNorm2d(mid), torch.nn.SiLU(),
              torch.nn.Conv2d(mid, block.out_channels, 1, bias=False),
              torch.nn.BatchNorm2d(block.out_channels)]
    body = torch.nn.Sequential(*layers).double()
    ours = [p for _, p in block.named_parameters()]
    for p, q in zip(ours, body.parameters(), strict=True):
        q.data = torch.tensor(p.numpy())
    return body


@pytest.mark.parametrize("cin,cout,stride,expand", [(3, 3, 1, 2), (2, 4, 2, 3), (4, 4, 1, 1)])
def test_static_block_matches_torch(backend, cin, cout, stride, expand):
    block = mc.nn.MBConvBlock(cin, cout, 3, stride, expand, dtype="float64", backend=backend)
    body = _torch_mbconv(block)

    def theirs(x):
        y = body(x)
        return y + x if stride == 1 and cin == cout else y

    (x,) = normal(15, (2, cin, 5, 5))
    compare_with_torch(block, theirs, [x], backend=backend)
    for (name, p), q in zip(block.named_parameters(), body.parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-8, atol=1e-10,
                                   err_msg=name)


def test_condconv_block_routes_once_and_shares(monkeypatch):
    """One router call per forward, and the same routing weights reach all three layers."""
    backend = "numpy"
    block = mc.nn.CondConvBlock(3, 3, 3, 1, 2, num_experts=4, backend=backend)
    names = [n for n, _ in block.named_parameters()]
    assert [n for n in names if "routing" in n] == ["routing_fn.weight", "routing_fn.bias"]
    assert block.conv_pw.weight.shape == (4, 6, 3, 1, 1)
    assert block.conv_dw.weight.shape == (4, 6, 1, 3, 3)
    router_calls, seen = [], []
    route = block.routing_weights
    monkeypatch.setattr(block, "routing_weights",
                        lambda x: router_calls.append(x) or route(x))
    for conv in (block.conv_pw, block.conv_dw, block.conv_pwl):
        original = conv.forward
        monkeypatch.setattr(conv, "forward", lambda x, routing_weights=None, f=original:
                            seen.append(routing_weights) or f(x, routing_weights))
    (x,) = normal(16, (2, 3, 5, 5))
    xt = mc.tensor(x.astype(np.float32), backend=backend)
    block(xt)
    assert len(router_calls) == 1 and router_calls[0] is xt
    assert len(seen) == 3 and all(r is seen[0] for r in seen)
    np.testing.assert_array_equal(block.last_routing_weights.numpy(), seen[0].numpy())


def test_condconv_block_with_saturated_single_expert_is_its_static_twin(backend):
    """E = 1 and routing weight σ(40) = 1 in float64: the CondConv block computes exactly its
    static twin with the same weights (output and input gradient)."""
    cond = mc.nn.CondConvBlock(3, 3, 3, 1, 2, num_experts=1, dropout_rate=0.0,
                               dtype="float64", backend=backend)
    static = mc.nn.MBConvBlock(3, 3, 3, 1, 2, dtype="float64", backend=backend)
    state = {k: v[0] if k.startswith("conv_") else v
             for k, v in cond.state_dict().items() if not k.startswith("routing")}
    static.load_state_dict(state)
    cond.routing_fn.weight.data = cond.routing_fn.weight.backend.full((1, 3), 0.0, "float64")
    cond.routing_fn.bias.data = cond.routing_fn.bias.backend.full((1,), 40.0, "float64")
    (x,) = normal(17, (2, 3, 4, 4))
    outs = []
    for block in (cond, static):
        xt = mc.tensor(x, dtype="float64", requires_grad=True, backend=backend)
        y = block(xt)
        (y * normal(1, y.shape)[0]).sum().backward()
        outs.append((y.numpy(), xt.grad.numpy()))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-12)


def test_condconv_block_gradcheck():
    """Every element of the input, through the router, the three CondConv layers, batch norm
    (batch statistics) and SiLU."""
    mc.manual_seed(5)
    block = mc.nn.CondConvBlock(2, 2, 3, 1, 2, num_experts=3, dropout_rate=0.0,
                                dtype="float64", backend="numpy")
    (x,) = normal(18, (2, 2, 3, 3))
    gradcheck(block, [x], backend="numpy", rtol=1e-5, atol=1e-6)


def test_blocks_train_on_their_backend_in_float32(backend, size_limit):
    """A forward and backward in float32: every parameter gets a gradient; shapes agree."""
    n = 3 if size_limit <= 4 else 5
    for block in (mc.nn.CondConvBlock(2, 4, 3, 2, 2, num_experts=2, backend=backend),
                  mc.nn.MBConvBlock(2, 4, 3, 2, 2, backend=backend)):
        x = mc.tensor(np.random.default_rng(0).random((2, 2, n, n)).astype(np.float32),
                      backend=backend)
        y = block(x)
        assert y.shape == (2, 4, (n + 1) // 2, (n + 1) // 2) and y.dtype == np.float32
        y.mean().backward()
        assert all(p.grad is not None for p in block.parameters())


# --- argument errors ---------------------------------------------------------------------------

def _x(shape=(1, 2, 4, 4)):
    return mc.tensor(np.zeros(shape), backend="numpy")


@pytest.mark.parametrize("call,error,match", [
    (lambda: F.max_pool2d(_x(), 3, padding=2), ValueError, "at most half"),
    (lambda: F.max_pool2d(_x(), 5), ValueError, "smaller than the dilated kernel"),
    (lambda: F.max_pool2d(_x(), 0), ValueError, "kernel_size=0"),
    (lambda: F.max_pool2d(_x(), 2, stride=0), ValueError, "stride=0"),
    (lambda: F.max_pool2d(_x(), 2.5), TypeError, "kernel_size=2.5"),
    (lambda: F.max_pool2d(_x((2, 4, 4)), 2), ValueError, "4-D"),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4)), 2), TypeError, "minicond Tensor"),
    (lambda: F.avg_pool2d(_x(), 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: F.adaptive_avg_pool2d(_x(), 2), ValueError, "output_size=2"),
    (lambda: mc.nn.MaxPool2d(2, padding=3), ValueError, "MaxPool2d: padding"),
    (lambda: mc.nn.AdaptiveAvgPool2d((1, 2)), ValueError, "output_size"),
    (lambda: F.batch_norm(_x(), None, None, _x((3,)), None, True), ValueError,
     "weight has shape"),
    (lambda: F.batch_norm(_x((1, 2, 1, 1)), None, None, training=True), ValueError,
     "more than one value per channel"),
    (lambda: F.batch_norm(_x(), _x((2,)), None), ValueError, "given together"),
    (lambda: F.batch_norm(_x(), None, None, eps=0.0), ValueError, "eps=0.0"),
    (lambda: F.batch_norm(_x(), None, None, momentum=1.5), ValueError, "momentum=1.5"),
    (lambda: F.batch_norm(_x((4,)), None, None), ValueError, "at least 2-D"),
    (lambda: mc.nn.BatchNorm2d(0), ValueError, "num_features=0"),
    (lambda: mc.nn.BatchNorm2d(3, backend="numpy")(_x()), ValueError, "num_features=3"),
    (lambda: mc.nn.Sequential(mc.nn.ReLU(), "relu"), TypeError, "expected a Module"),
    (lambda: mc.nn.Sequential(mc.nn.ReLU())[1], IndexError, "out of range"),
    (lambda: mc.nn.Flatten(2, 1)(_x()), ValueError, "comes after"),
    (lambda: mc.nn.Flatten(5)(_x()), ValueError, "out of range"),
    (lambda: mc.nn.CondConvBlock(2, 2, kernel_size=2), ValueError, "must be odd"),
    (lambda: mc.nn.CondConvBlock(2, 2, num_experts=0), ValueError, "num_experts=0"),
    (lambda: mc.nn.MBConvBlock(2, 2, activation="gelu"), ValueError, "activation='gelu'"),
    (lambda: mc.nn.MBConvBlock(2, 2, expand_ratio=0), ValueError, "expand_ratio=0"),
])
def test_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@given(k=st.integers(1, 4), p=st.integers(0, 4), n=st.integers(1, 6))
def test_drawn_pool_geometries_are_accepted_or_named(k, p, n):
    """Any kernel/padding/size either pools like PyTorch or raises a ValueError that names
    max_pool2d, and PyTorch rejects it as well."""
    (x,) = normal(0, (1, 1, n, n))
    try:
        expected = TF.max_pool2d(torch.tensor(x), k, 1, p).numpy()
    except RuntimeError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError, match="max_pool2d: "):
            F.max_pool2d(mc.tensor(x, backend="numpy"), k, 1, p)
    else:
        y = F.max_pool2d(mc.tensor(x, dtype="float64", backend="numpy"), k, 1, p)
        np.testing.assert_array_equal(y.numpy(), expected)
