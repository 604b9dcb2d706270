"""Loading PyTorch weights: torch tensors or NumPy arrays, the seed's key names or minicond's,
and clear errors for shapes, keys and inputs that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minicond as mc
from minicond.interop import (
    load_safetensors,
    load_torch_state_dict,
    save_safetensors,
    to_torch_state_dict,
)
from minicond.nn import CondConv2d, Conv2d, Linear


class SeedNamedRouting(torch.nn.Module):
    def __init__(self, in_channels: int, num_experts: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(in_channels, num_experts)


class SeedNamedCondConv(torch.nn.Module):
    """A PyTorch CondConv with the seed's parameter names and its eval-mode semantics:
    r = sigmoid(fc(mean_hw x)), then one convolution per example with Σ_e r_be W_e."""

    def __init__(self, cin: int, cout: int, k: int, num_experts: int, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.padding, self.groups = padding, groups
        self.weight = torch.nn.Parameter(torch.randn(num_experts, cout, cin // groups, k, k))
        self.bias = torch.nn.Parameter(torch.randn(cout))
        self._routing_fn = SeedNamedRouting(cin, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(self._routing_fn.fc(x.mean(dim=(2, 3))))
        out = []
        for b in range(x.shape[0]):
            kernel = (r[b].reshape(-1, 1, 1, 1, 1) * self.weight).sum(0)
            out.append(torch.nn.functional.conv2d(x[b:b + 1], kernel, self.bias,
                                                  padding=self.padding, groups=self.groups))
        return torch.cat(out)


def assert_loaded(module, expected: dict[str, np.ndarray]) -> None:
    got = module.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=key)


def seed_to_minicond(key: str) -> str:
    return key.replace("_routing_fn.", "routing.")


# --- loading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tdtype", [torch.float32, torch.float64])
def test_torch_conv2d_and_linear_state_dicts_load(tdtype):
    for th, mine in ((torch.nn.Conv2d(4, 6, 3, groups=2, dtype=tdtype), Conv2d(4, 6, 3, groups=2)),
                     (torch.nn.Linear(5, 3, dtype=tdtype), Linear(5, 3))):
        load_torch_state_dict(mine, th.state_dict())
        assert_loaded(mine, {k: v.numpy() for k, v in th.state_dict().items()})
        assert all(p.dtype == np.float32 for p in mine.parameters())  # the module keeps its dtype


def test_torch_parameters_that_require_grad_load():
    th = torch.nn.Linear(3, 2)
    mine = Linear(3, 2)
    load_torch_state_dict(mine, dict(th.named_parameters()))
    assert_loaded(mine, {k: v.detach().numpy() for k, v in th.named_parameters()})


@given(g=st.integers(1, 2), cin=st.integers(1, 3), cout=st.integers(1, 3), k=st.integers(1, 3),
       E=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_seed_named_condconv_loads_and_reproduces_the_seed(g, cin, cout, k, E, seed):
    """Each loaded tensor lands in its role: the layer computes the seed's eval output."""
    torch.manual_seed(seed)
    cin, cout = g * cin, g * cout
    th = SeedNamedCondConv(cin, cout, k, E, padding=k // 2, groups=g).double()
    mine = CondConv2d(cin, cout, k, padding=k // 2, groups=g, num_experts=E).double().eval()
    load_torch_state_dict(mine, th.state_dict())
    assert_loaded(mine, {seed_to_minicond(k): v.numpy() for k, v in th.state_dict().items()})
    x = np.random.default_rng(seed).standard_normal((3, cin, 4, 4))
    y = mine(mc.tensor(x)).numpy()
    np.testing.assert_allclose(y, th(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("names", ["seed", "minicond"])
@pytest.mark.parametrize("expert_bias", [False, True])
def test_numpy_arrays_with_either_key_names_load(backend, names, expert_bias):
    E, cin, cout = 3, 4, 5
    rng = np.random.default_rng(0)
    prefix = "_routing_fn." if names == "seed" else "routing."
    state = {"weight": rng.standard_normal((E, cout, cin, 3, 3)),
             "bias": rng.standard_normal((E, cout) if expert_bias else (cout,)),
             prefix + "fc.weight": rng.standard_normal((E, cin)),
             prefix + "fc.bias": rng.standard_normal(E)}
    mine = CondConv2d(cin, cout, 3, num_experts=E, expert_bias=expert_bias,
                      backend=backend).double()
    load_torch_state_dict(mine, state)
    assert_loaded(mine, {seed_to_minicond(k): v for k, v in state.items()})
    assert all(p.device == backend for p in mine.parameters())


def test_minicond_state_dict_loads_into_torch_and_back():
    mine = Conv2d(3, 4, (3, 2), stride=2, padding=1)
    th = torch.nn.Conv2d(3, 4, (3, 2), stride=2, padding=1)
    th.load_state_dict({k: torch.from_numpy(v) for k, v in mine.state_dict().items()})
    other = Conv2d(3, 4, (3, 2), stride=2, padding=1)
    load_torch_state_dict(other, th.state_dict())
    assert_loaded(other, mine.state_dict())


def test_not_strict_loads_a_subset():
    mine = CondConv2d(2, 2, 1, num_experts=2)
    before = mine.state_dict()
    load_torch_state_dict(mine, {"_routing_fn.fc.bias": np.array([1.0, -1.0])}, strict=False)
    np.testing.assert_array_equal(mine.routing.fc.bias.numpy(), [1.0, -1.0])
    np.testing.assert_array_equal(mine.weight.numpy(), before["weight"])


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["weight", "bias", "_routing_fn.fc.weight", "_routing_fn.fc.bias",
                                 "routing.fc.weight", "routing.fc.bias"])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_shape_mismatch_is_a_value_error_naming_the_key(key, kind):
    mine = CondConv2d(4, 6, 3, num_experts=3)
    state = {k: torch.from_numpy(v) if kind == "torch" else v
             for k, v in mine.state_dict().items()}
    if key.startswith("_routing_fn."):
        state = {k.replace("routing.", "_routing_fn."): v for k, v in state.items()}
    wrong = np.zeros(tuple(state[key].shape)[:-1] + (state[key].shape[-1] + 1,))
    state[key] = torch.from_numpy(wrong) if kind == "torch" else wrong
    with pytest.raises(ValueError, match=seed_to_minicond(key).replace(".", r"\.")) as err:
        load_torch_state_dict(mine, state)
    assert repr(key) in str(err.value), "the error must name the key as the caller spelled it"


def test_missing_and_unexpected_keys_are_named():
    mine = Linear(3, 2)
    with pytest.raises(ValueError, match="'bias'"):
        load_torch_state_dict(mine, {"weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="'extra'"):
        load_torch_state_dict(mine, {"weight": np.zeros((2, 3)), "bias": np.zeros(2),
                                     "extra": np.zeros(1)})


def test_two_keys_for_one_parameter_are_an_error():
    mine = CondConv2d(2, 2, 1, num_experts=2)
    state = mine.state_dict()
    state["_routing_fn.fc.bias"] = state["routing.fc.bias"]
    with pytest.raises(ValueError, match="routing.fc.bias"):
        load_torch_state_dict(mine, state)


@given(state=st.one_of(st.none(), st.integers(), st.text(max_size=5),
                       st.lists(st.tuples(st.just("weight"), st.just(0.0)), max_size=2),
                       st.just(np.zeros((2, 3))), st.just(torch.zeros(2, 3))))
def test_state_dict_that_is_not_a_mapping_is_a_type_error(state):
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        load_torch_state_dict(Linear(3, 2), state)


@pytest.mark.parametrize("module", [torch.nn.Linear(3, 2), None, {"weight": 1}])
def test_module_that_is_not_a_minicond_module_is_a_type_error(module):
    with pytest.raises(TypeError, match="module must be a minicond Module"):
        load_torch_state_dict(module, {})


def test_non_numeric_values_are_a_type_error_naming_the_key():
    with pytest.raises(TypeError, match="'bias'"):
        load_torch_state_dict(Linear(1, 2), {"weight": np.zeros((2, 1)),
                                             "bias": np.array(["a", "b"])})


# --- timm's flat CondConv layout, the seed layout out, safetensors ------------------------------

def test_flat_condconv_weight_loads_and_goes_back_out():
    mine = CondConv2d(4, 6, 3, groups=2, num_experts=3, bias=False).double()
    flat = np.random.default_rng(0).standard_normal((3, 6 * 2 * 3 * 3))
    state = {"weight": flat, "routing.fc.weight": np.zeros((3, 4)),
             "routing.fc.bias": np.zeros(3)}
    load_torch_state_dict(mine, state)
    np.testing.assert_array_equal(mine.weight.numpy(), flat.reshape(3, 6, 2, 3, 3))
    out = to_torch_state_dict(mine, layout="timm")
    np.testing.assert_array_equal(out["weight"], flat)
    seed = to_torch_state_dict(mine, layout="seed")
    assert set(seed) == {"weight", "_routing_fn.fc.weight", "_routing_fn.fc.bias"}
    assert seed["weight"].shape == (3, 6, 2, 3, 3)


def test_seed_layout_loads_into_the_seed_module():
    th = SeedNamedCondConv(4, 6, 3, 3, padding=1)
    mine = CondConv2d(4, 6, 3, padding=1, num_experts=3)
    th.load_state_dict({k: torch.from_numpy(v)
                        for k, v in to_torch_state_dict(mine, layout="seed").items()})
    np.testing.assert_array_equal(th._routing_fn.fc.weight.detach().numpy(),
                                  mine.routing.fc.weight.numpy())


def test_flat_weight_of_the_wrong_size_names_the_key():
    mine = CondConv2d(4, 6, 3, num_experts=3)
    state = dict(mine.state_dict(), weight=np.zeros((3, 7)))
    with pytest.raises(ValueError, match=r"'weight' has shape \(3, 7\).*\(3, 216\)"):
        load_torch_state_dict(mine, state)


def test_num_batches_tracked_goes_out_as_int64():
    bn = mc.nn.BatchNorm2d(3)
    out = to_torch_state_dict(bn)
    assert out["num_batches_tracked"].dtype == np.int64 and out["num_batches_tracked"].shape == ()


@pytest.mark.parametrize("call,error,match", [
    (lambda: to_torch_state_dict(Linear(2, 2), layout="tf"), ValueError, "layout='tf'"),
    (lambda: to_torch_state_dict({"weight": 1}), TypeError, "must be a minicond Module"),
])
def test_to_torch_state_dict_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_safetensors_round_trip_is_atomic_and_exact(tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    mine = CondConv2d(3, 4, 3, num_experts=2, expert_bias=True).double()
    path = tmp_path / "w.safetensors"
    save_safetensors(mine, path)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left
    other = CondConv2d(3, 4, 3, num_experts=2, expert_bias=True).double()
    load_safetensors(other, path)
    for key, value in mine.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)


def test_bad_safetensors_files_are_named(tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_safetensors(Linear(2, 2), tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors.*not a readable safetensors"):
        load_safetensors(Linear(2, 2), junk)
    other = tmp_path / "other.safetensors"
    save_safetensors(Linear(3, 2), other)
    with pytest.raises(ValueError, match="other.safetensors.*does not fit.*'weight'"):
        load_safetensors(Linear(2, 2), other)
