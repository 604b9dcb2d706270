"""Modules: parameter names and shapes, state dicts, train/eval, dtype and backend moves,
zero_grad, initialisation statistics, and Linear/Conv2d/Router against PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import random_cotangent
from hypothesis import given
from hypothesis import strategies as st
from strategies import fixture_settings

import minicond as mc
from minicond.nn import CondConv2d, Conv2d, Dropout, Linear, Module, Parameter, Router


def inputs(shape, seed=0, dtype="float64", backend=None, requires_grad=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    return mc.tensor(a, dtype=dtype, backend=backend, requires_grad=requires_grad)


@st.composite
def condconv_configs(draw):
    g = draw(st.integers(1, 3))
    return dict(in_channels=g * draw(st.integers(1, 3)), out_channels=g * draw(st.integers(1, 3)),
                kernel_size=draw(st.integers(1, 3) | st.tuples(st.integers(1, 3),
                                                                 st.integers(1, 3))),
                groups=g, num_experts=draw(st.integers(1, 5)), bias=draw(st.booleans()),
                expert_bias=draw(st.booleans()))


# --- parameter names and shapes ---------------------------------------------------------------

@given(cfg=condconv_configs())
def test_condconv_named_parameters_follow_the_contract(cfg):
    layer = CondConv2d(**cfg)
    E, Cin, Cout, g = cfg["num_experts"], cfg["in_channels"], cfg["out_channels"], cfg["groups"]
    k = cfg["kernel_size"]
    kh, kw = (k, k) if isinstance(k, int) else k
    expected = {"weight": (E, Cout, Cin // g, kh, kw),
                "routing.fc.weight": (E, Cin), "routing.fc.bias": (E,)}
    if cfg["bias"]:
        expected["bias"] = (E, Cout) if cfg["expert_bias"] else (Cout,)
    got = {name: p.shape for name, p in layer.named_parameters()}
    assert got == expected
    assert all(isinstance(p, Parameter) and p.requires_grad for p in layer.parameters())
    assert [p for p in layer.parameters()] == [p for _, p in layer.named_parameters()]
    assert layer.num_parameters() == sum(int(np.prod(s)) for s in expected.values())
    assert set(layer.state_dict()) == set(expected)
    if not cfg["bias"]:
        assert layer.bias is None


class Block(Module):
    """A nested module with a buffer, to check name prefixes and what moves with ``to``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2d(2, 3, 3, padding=1)
        self.head = Linear(3, 2, bias=False)
        self.register_buffer("scale", mc.tensor(np.array([2.0, 3.0])))

    def forward(self, x):
        return self.head(mc.functional.global_avg_pool2d(self.conv(x))) * self.scale


def test_nested_module_names_buffers_and_repr():
    block = Block()
    assert [n for n, _ in block.named_parameters()] == ["conv.weight", "conv.bias",
                                                       "head.weight"]
    assert set(block.state_dict()) == {"conv.weight", "conv.bias", "head.weight", "scale"}
    assert [n for n, _ in block.named_modules()] == ["", "conv", "head"]
    assert "Conv2d(2, 3" in repr(block) and "Linear(in_features=3" in repr(block)
    block.double()
    assert block.scale.dtype == np.float64
    assert block(inputs((2, 2, 4, 4))).shape == (2, 2)


def test_module_without_super_init_is_an_error():
    class Broken(Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(RuntimeError, match="super"):
        Broken()


# --- state dicts ------------------------------------------------------------------------------

def test_state_dict_round_trip_reproduces_the_layer():
    cfg = dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, num_experts=3,
               expert_bias=True)
    mc.manual_seed(0)
    a = CondConv2d(**cfg).eval()
    mc.manual_seed(1)
    b = CondConv2d(**cfg).eval()
    x = inputs((2, 4, 5, 5), dtype="float32")
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    state = a.state_dict()
    b.load_state_dict(state)
    for key, value in b.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    # state_dict returns copies: editing one changes nothing in the module
    state["weight"][...] = 0.0
    assert np.any(a.weight.numpy() != 0.0)


def test_load_state_dict_keeps_the_module_dtype():
    layer = Linear(3, 2).double()
    layer.load_state_dict({"weight": np.ones((2, 3), np.float32),
                           "bias": np.zeros(2, np.float32)})
    assert layer.weight.dtype == np.float64
    np.testing.assert_array_equal(layer.weight.numpy(), np.ones((2, 3)))


def test_load_state_dict_strict_reports_missing_and_unexpected_keys():
    layer = CondConv2d(2, 2, 1, num_experts=2)
    state = layer.state_dict()
    missing = dict(state)
    del missing["routing.fc.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['routing\.fc\.bias'\]"):
        layer.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['routing\.fc\.extra'\]"):
        layer.load_state_dict({**state, "routing.fc.extra": np.zeros(2)})
    # not strict: the keys that exist are loaded, the rest left alone
    before = layer.routing.fc.bias.numpy()
    missing["weight"] = np.full_like(state["weight"], 0.25)
    layer.load_state_dict({**missing, "unused": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(layer.weight.numpy(), missing["weight"])
    np.testing.assert_array_equal(layer.routing.fc.bias.numpy(), before)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("key", ["weight", "bias", "routing.fc.weight", "routing.fc.bias"])
def test_load_state_dict_shape_mismatch_names_the_key(key, strict):
    layer = CondConv2d(2, 4, 3, num_experts=3)
    state = layer.state_dict()
    state[key] = np.zeros(state[key].shape + (1,))
    with pytest.raises(ValueError, match=rf"'{key}' has shape"):
        layer.load_state_dict(state, strict=strict)


# --- modes ------------------------------------------------------------------------------------

def test_train_and_eval_propagate_to_every_submodule():
    block = Block()
    layer = CondConv2d(2, 2, 1, num_experts=2)
    for m in (block, layer):
        assert m.eval() is m
        assert all(not sub.training for sub in m.modules())
        assert m.train() is m
        assert all(sub.training for sub in m.modules())
    assert not layer.train(False).routing.dropout.training


def test_routing_dropout_is_active_only_in_train_mode():
    layer = CondConv2d(8, 4, 3, num_experts=4, dropout_rate=0.5)
    x = inputs((3, 8, 5, 5), dtype="float32")

    def run(seed):
        mc.manual_seed(seed)
        return layer(x).numpy()

    layer.eval()
    reference = run(0)
    np.testing.assert_array_equal(run(1), reference)  # eval is deterministic
    layer.train()
    t0, t1 = run(0), run(1)
    assert not np.allclose(t0, t1), "train-mode outputs must vary with the dropout seed"
    assert not np.allclose(t0, reference), "train mode must differ from eval"
    np.testing.assert_array_equal(run(0), t0)  # and repeat for the same seed


def test_dropout_module_scales_kept_units_in_train_and_is_identity_in_eval():
    p = 0.25
    drop = Dropout(p)
    x = mc.tensor(np.ones((50, 40)))
    y = drop(x).numpy()
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / (1 - p)], rtol=1e-15)
    assert abs(np.mean(y == 0.0) - p) < 0.05
    np.testing.assert_array_equal(drop.eval()(x).numpy(), x.numpy())


# --- dtype and backend moves, zero_grad -------------------------------------------------------

def test_to_dtype_converts_in_place_and_keeps_parameter_objects():
    layer = CondConv2d(3, 4, 3, padding=1, num_experts=2)
    params = dict(layer.named_parameters())
    values = {k: p.numpy() for k, p in params.items()}
    layer(inputs((1, 3, 4, 4), dtype="float32")).sum().backward()
    for convert, dtype in ((layer.double, np.float64), (layer.float, np.float32),
                           (lambda: layer.to(dtype="float64"), np.float64),
                           (lambda: layer.to("float32"), np.float32)):
        assert convert() is layer
        for name, p in layer.named_parameters():
            assert p is params[name], f"{name} was replaced, not converted"
            assert p.dtype == dtype and p.grad is None
            np.testing.assert_allclose(p.numpy(), values[name], rtol=1e-7)
    layer.double()
    assert layer(inputs((1, 3, 4, 4))).dtype == np.float64


def test_to_backend_moves_parameters_in_place(backend):
    layer = CondConv2d(3, 4, 3, num_experts=2)
    params = dict(layer.named_parameters())
    values = layer.state_dict()
    layer.to(backend).double()
    for name, p in layer.named_parameters():
        assert p is params[name] and p.device == backend
        np.testing.assert_allclose(p.numpy(), values[name], rtol=1e-7)
    y = layer(inputs((2, 3, 4, 4), backend=backend))
    assert y.device == backend and y.dtype == np.float64


def test_zero_grad_clears_every_parameter_gradient():
    layer = CondConv2d(3, 4, 3, num_experts=2, expert_bias=True).eval()
    layer(inputs((2, 3, 5, 5), dtype="float32")).mean().backward()
    assert all(p.grad is not None for p in layer.parameters())
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


# --- initialisation ---------------------------------------------------------------------------

def test_each_expert_is_initialised_with_its_own_fan_in():
    """U(−b, b) with b = 1/√(Cin/g·kh·kw), as an ordinary conv weight. The seed's 5-D fan-in
    (Cout·Cin/g·kh·kw) would give a variance Cout = 64 times smaller."""
    Cin, Cout, g, k, E = 64, 64, 2, 3, 4
    layer = CondConv2d(Cin, Cout, k, groups=g, num_experts=E)
    fan_in = Cin // g * k * k
    bound = 1 / math.sqrt(fan_in)
    W = layer.weight.numpy().astype(np.float64)
    for e in range(E):
        w = W[e].ravel()  # 18432 draws: the variance estimate's relative sd is about 0.7%
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() >= 0.99 * bound
        np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.05, err_msg=f"expert {e}")
        assert abs(w.mean()) < 5 * bound / math.sqrt(3 * w.size)
        assert w.var() > 10 * (1 / math.sqrt(Cout * fan_in)) ** 2 / 3
    assert not np.allclose(W[0], W[1])
    assert np.abs(layer.bias.numpy()).max() <= bound * (1 + 1e-6)
    assert np.abs(layer.routing.fc.weight.numpy()).max() <= (1 / math.sqrt(Cin)) * (1 + 1e-6)


@pytest.mark.parametrize("make, fan_in", [(lambda: Conv2d(32, 48, (3, 5), groups=4), 8 * 15),
                                          (lambda: Linear(300, 200), 300)])
def test_conv_and_linear_init_match_torch_default_bound(make, fan_in):
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.numpy().astype(np.float64).ravel()
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.06)
    assert np.abs(layer.bias.numpy()).max() <= bound * (1 + 1e-6)


def test_init_is_repeatable_under_manual_seed():
    mc.manual_seed(3)
    a = CondConv2d(4, 4, 3).state_dict()
    mc.manual_seed(3)
    b = CondConv2d(4, 4, 3).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --- layers against PyTorch -------------------------------------------------------------------

def compare_module(mc_layer, th_layer, x_np, backend):
    """Copy the torch weights, then compare the output and the gradients of x and of every
    parameter under a random cotangent."""
    mc_layer.to(backend).double()
    mc_layer.load_state_dict({k: v.detach().numpy() for k, v in th_layer.state_dict().items()})
    x = mc.tensor(x_np, dtype="float64", requires_grad=True, backend=backend)
    xt = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
    y, yt = mc_layer(x), th_layer(xt)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    c = random_cotangent(yt.shape)
    (y * c).sum().backward()
    (yt * torch.tensor(c)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    th_params = dict(th_layer.named_parameters())
    names = [n for n, _ in mc_layer.named_parameters()]
    assert names == list(th_params)
    for name, p in mc_layer.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), th_params[name].grad.numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=f"gradient of {name}")


@fixture_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_linear_module_matches_torch(backend, size_limit, data, seed):
    n_in, n_out = data.draw(st.integers(1, size_limit)), data.draw(st.integers(1, size_limit))
    lead = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    bias = data.draw(st.booleans())
    th = torch.nn.Linear(n_in, n_out, bias=bias, dtype=torch.float64)
    compare_module(Linear(n_in, n_out, bias=bias), th,
                   np.random.default_rng(seed).standard_normal(lead + (n_in,)), backend)


@fixture_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_conv2d_module_matches_torch(backend, size_limit, data, seed):
    g = data.draw(st.integers(1, 2))
    per_group = max(1, size_limit // 4)  # the CUDA simulator gets one channel per group
    cin, cout = (g * data.draw(st.integers(1, per_group)) for _ in range(2))
    k = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    d = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    mode = data.draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    padding = data.draw(st.sampled_from(["same", "valid", "int", "pair"]))
    stride = 1 if padding == "same" else (data.draw(st.integers(1, 2)),
                                          data.draw(st.integers(1, 2)))
    if padding == "int":
        padding = data.draw(st.integers(0, 2))
    elif padding == "pair":
        padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    # build the input size from the configuration: the dilated kernel must fit the padded
    # input, and reflect padding must be smaller than the input
    size = []
    for a in (0, 1):
        span = d[a] * (k[a] - 1)
        if padding == "same":
            before, after = span // 2, span - span // 2
        elif padding == "valid":
            before = after = 0
        else:
            before = after = padding if isinstance(padding, int) else padding[a]
        need = max(span + 1 - before - after, after + 1)
        size.append(need + data.draw(st.integers(0, 2)))
    bias = data.draw(st.booleans())
    th = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=d, groups=g,
                         bias=bias, padding_mode=mode, dtype=torch.float64)
    layer = Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=d, groups=g,
                   bias=bias, padding_mode=mode)
    x = np.random.default_rng(seed).standard_normal((2, cin, *size))
    compare_module(layer, th, x, backend)


@pytest.mark.parametrize("routing, temperature", [("sigmoid", 1.0), ("softmax", 1.0),
                                                  ("softmax", 0.3)])
def test_router_in_eval_matches_torch(backend, routing, temperature):
    router = Router(5, 3, dropout_rate=0.5, routing=routing, temperature=temperature).eval()
    router.to(backend).double()
    x_np = np.random.default_rng(0).standard_normal((4, 5, 3, 2))
    x = mc.tensor(x_np, requires_grad=True, backend=backend)
    xt = torch.tensor(x_np, requires_grad=True)
    R = torch.tensor(router.fc.weight.numpy(), requires_grad=True)
    c = torch.tensor(router.fc.bias.numpy(), requires_grad=True)
    z = torch.nn.functional.linear(xt.mean(dim=(2, 3)), R, c)
    rt = torch.sigmoid(z) if routing == "sigmoid" else torch.softmax(z / temperature, dim=1)
    r = router(x)
    np.testing.assert_allclose(r.numpy(), rt.detach().numpy(), rtol=1e-12, atol=1e-14)
    cot = random_cotangent(rt.shape)
    (r * cot).sum().backward()
    (rt * torch.tensor(cot)).sum().backward()
    for mine, theirs in ((x, xt), (router.fc.weight, R), (router.fc.bias, c)):
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-10,
                                   atol=1e-13)
