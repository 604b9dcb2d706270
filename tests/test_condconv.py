"""cond_conv2d and CondConv2d against a PyTorch reference written here with the original
per-example semantics: for each example, pool, flatten, dropout, fc, sigmoid (or softmax with
temperature), K = Σ_e r_e W_e, then one conv with a static (or mixed) bias; padding modes
other than zeros pad with F.pad first. Outputs and the gradients of the input, the experts,
the bias and the router's weight and bias are compared in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import compare_with_torch, random_cotangent
from hypothesis import given
from hypothesis import strategies as st
from strategies import ConvCase, conv_cases, fixture_settings, normal
from torch import nn

import minicond as mc
from minicond.functional import PAD_MODES

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

TORCH_MODE = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}

# The reference uses the original key names; minicond renames the router.
MINICOND_NAME = {"weight": "weight", "bias": "bias", "_routing_fn.fc.weight": "routing.fc.weight",
                 "_routing_fn.fc.bias": "routing.fc.bias"}


def torch_explicit_pads(padding, kernel, dilation) -> list[int]:
    """(left, right, top, bottom) for F.pad: the conv's padding reversed (width first) and
    repeated for both sides; "same" puts the odd element of d·(k−1) last."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":
        pads = []
        for k, d in zip(reversed(kernel), reversed(dilation), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return [pw, pw, ph, ph]


def pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class TorchRouting(nn.Module):
    """Routing of one example: flatten the pooled input, dropout, fc, sigmoid or softmax(·/τ)."""

    def __init__(self, in_channels, num_experts, dropout_rate, routing, temperature):
        super().__init__()
        self.dropout = nn.Dropout(dropout_rate)
        self.fc = nn.Linear(in_channels, num_experts, dtype=torch.float64)
        self.routing, self.temperature = routing, temperature

    def forward(self, pooled):
        z = self.fc(self.dropout(torch.flatten(pooled)))
        if self.routing == "sigmoid":
            return torch.sigmoid(z)
        return torch.softmax(z / self.temperature, dim=0)


class TorchCondConv2d(nn.Module):
    """The reference CondConv: one example at a time, one conv per example."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", num_experts=3, dropout_rate=0.2,
                 routing="sigmoid", temperature=1.0, expert_bias=False):
        super().__init__()
        kh, kw = pair(kernel_size)
        self.stride, self.padding = stride, padding
        self.dilation, self.groups = pair(dilation), groups
        self.padding_mode, self.expert_bias = padding_mode, expert_bias
        self.explicit_pads = torch_explicit_pads(padding, (kh, kw), self.dilation)
        self._routing_fn = TorchRouting(in_channels, num_experts, dropout_rate, routing,
                                        temperature)
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels,
                                               in_channels // groups, kh, kw,
                                               dtype=torch.float64))
        bias_shape = (num_experts, out_channels) if expert_bias else (out_channels,)
        self.bias = nn.Parameter(torch.empty(bias_shape, dtype=torch.float64)) if bias else None

    def conv(self, x, kernel, bias):
        if self.padding_mode != "zeros":
            x = TF.pad(x, self.explicit_pads, mode=TORCH_MODE[self.padding_mode])
            return TF.conv2d(x, kernel, bias, self.stride, 0, self.dilation, self.groups)
        return TF.conv2d(x, kernel, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, inputs, routing_weights=None):
        res = []
        for b, x in enumerate(inputs):
            x = x.unsqueeze(0)
            if routing_weights is None:
                r = self._routing_fn(TF.adaptive_avg_pool2d(x, (1, 1)))
            else:
                r = routing_weights[b]
            kernel = torch.sum(r[:, None, None, None, None] * self.weight, 0)
            bias = r @ self.bias if (self.expert_bias and self.bias is not None) else self.bias
            res.append(self.conv(x, kernel, bias))
        return torch.cat(res, dim=0)


def torch_cond_conv2d(x, r, weight, bias, stride, padding, dilation, groups):
    """Functional reference: per example, K_b = Σ_e r_be W_e, one conv, plus β_b (the static
    bias, or r_b·bias when mixed)."""
    out = []
    for b in range(x.shape[0]):
        kernel = torch.einsum("e,eoikl->oikl", r[b], weight)
        if bias is None or bias.ndim == 1:
            beta = bias
        else:
            beta = r[b] @ bias
        out.append(TF.conv2d(x[b:b + 1], kernel, beta, stride, padding, dilation, groups))
    return torch.cat(out, dim=0)


def build_pair(case: ConvCase, num_experts: int, backend: str, padding_mode: str = "zeros",
               routing: str = "sigmoid", temperature: float = 1.0, expert_bias: bool = False):
    """The reference with random weights, and a minicond CondConv2d (eval mode, float64) loaded
    with them through ``interop`` under the reference's key names."""
    options = dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding,
                   dilation=case.dilation, groups=case.groups, bias=case.bias,
                   padding_mode=padding_mode, num_experts=num_experts, dropout_rate=0.2,
                   routing=routing, temperature=temperature, expert_bias=expert_bias)
    ref = TorchCondConv2d(case.in_channels, case.out_channels, **options)
    values = normal(case.seed + 1, *(tuple(p.shape) for p in ref.parameters()))
    with torch.no_grad():
        for p, v in zip(ref.parameters(), values, strict=True):
            p.copy_(torch.from_numpy(v))
    ref.eval()
    mine = mc.nn.CondConv2d(case.in_channels, case.out_channels, dtype="float64",
                            backend=backend, **options)
    mc.interop.load_torch_state_dict(mine, ref.state_dict())
    mine.eval()
    return ref, mine


def compare_modules(ref, mine, case: ConvCase, backend: str, routing_weights=None) -> None:
    """Forward both, backward a random cotangent, compare y and every gradient."""
    (x,) = normal(case.seed, case.x_shape)
    xt = torch.tensor(x, requires_grad=True)
    xm = mc.tensor(x, dtype="float64", requires_grad=True, backend=backend)
    rt = rm = None
    if routing_weights is not None:
        rt = torch.tensor(routing_weights, requires_grad=True)
        rm = mc.tensor(routing_weights, dtype="float64", requires_grad=True, backend=backend)
    yt, ym = ref(xt, rt), mine(xm, rm)
    assert ym.shape == case.out_shape
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-9, atol=1e-9,
                               err_msg="output differs from the reference")
    c = random_cotangent(tuple(yt.shape))
    (yt * torch.from_numpy(c)).sum().backward()
    (ym * c).sum().backward()
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-9,
                               err_msg="gradient of the input differs")
    if routing_weights is not None:
        np.testing.assert_allclose(rm.grad.numpy(), rt.grad.numpy(), rtol=1e-9, atol=1e-9,
                                   err_msg="gradient of the routing weights differs")
    params = dict(mine.named_parameters())
    assert set(params) == {MINICOND_NAME[name] for name, _ in ref.named_parameters()}
    for name, p in ref.named_parameters():
        got = params[MINICOND_NAME[name]].grad
        if routing_weights is not None and name.startswith("_routing_fn"):
            assert got is None and p.grad is None, f"{name}: unused router got a gradient"
            continue
        assert got is not None, f"{name}: minicond produced no gradient"
        np.testing.assert_allclose(got.numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-9,
                                   err_msg=f"gradient of {name} differs")


# --- functional ----------------------------------------------------------------------------


@fixture_settings
@given(data=st.data())
def test_cond_conv2d_matches_torch(backend, size_limit, data):
    case = data.draw(conv_cases(size_limit), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    bias_kind = data.draw(st.sampled_from(["none", "static", "mixed"]), label="bias")
    bias_shape = {"none": None, "static": (case.out_channels,),
                  "mixed": (E, case.out_channels)}[bias_kind]
    x, r, W, bias = normal(case.seed, case.x_shape, (case.batch, E), (E, *case.weight_shape),
                           bias_shape)
    kw = case.conv_kwargs()
    compare_with_torch(
        lambda x, r, W, b: mc.functional.cond_conv2d(x, r, W, b, **kw),
        lambda x, r, W, b: torch_cond_conv2d(x, r, W, b, kw["stride"], kw["padding"],
                                             kw["dilation"], kw["groups"]),
        [x, r, W, bias], backend=backend)


@pytest.mark.parametrize("bias", ["static", "mixed"])
@pytest.mark.parametrize("kw", [dict(padding="same"), dict(padding="same", dilation=(1, 3)),
                                dict(stride=(2, 1), padding=(0, 2), dilation=(2, 1), groups=2)],
                         ids=["same-even", "same-dilated-even", "strided-grouped"])
def test_cond_conv2d_fixed_configurations_match_torch(backend, kw, bias):
    """Cases a draw may miss: "same" with an even kernel (one more pad at the bottom/right)
    and every argument at once."""
    E, groups = 3, kw.get("groups", 1)
    x, r, W, b = normal(41, (2, 4, 4, 4), (2, E), (E, 2, 4 // groups, 2, 4),
                        (2,) if bias == "static" else (E, 2))
    compare_with_torch(
        lambda x, r, W, b: mc.functional.cond_conv2d(x, r, W, b, **kw),
        lambda x, r, W, b: torch_cond_conv2d(x, r, W, b, kw.get("stride", 1), kw["padding"],
                                             kw.get("dilation", 1), groups),
        [x, r, W, b], backend=backend)


# --- the module ------------------------------------------------------------------------------


@fixture_settings
@given(data=st.data())
def test_condconv_module_matches_reference(backend, size_limit, data):
    mode = data.draw(st.sampled_from(PAD_MODES), label="padding_mode")
    case = data.draw(conv_cases(size_limit, padding_mode=mode), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    ref, mine = build_pair(case, E, backend, padding_mode=mode)
    compare_modules(ref, mine, case, backend)


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("padding, kernel, stride, pads, out_size", [
    (1, (3, 3), 2, (1, 1, 1, 1), (2, 2)),
    ((2, 1), (3, 3), 2, (2, 2, 1, 1), (3, 2)),
    ("same", (2, 3), 1, (0, 1, 1, 1), (4, 4)),
], ids=["int", "pair", "same-even"])
def test_condconv_module_padding_modes(backend, mode, padding, kernel, stride, pads,
                                       out_size):
    """Every padding mode with symmetric, per-axis and "same" (asymmetric, even kernel)
    padding; stride 2 where "same" allows it."""
    case = ConvCase(batch=2, in_channels=4, out_channels=2, groups=2, in_size=(4, 4),
                    out_size=out_size, kernel=kernel, stride=stride, dilation=1,
                    padding=padding, pads=pads, bias=True, seed=21)
    ref, mine = build_pair(case, 3, backend, padding_mode=mode)
    compare_modules(ref, mine, case, backend)


@fixture_settings
@given(data=st.data())
def test_condconv_softmax_routing_matches_reference(backend, size_limit, data):
    mode = data.draw(st.sampled_from(PAD_MODES), label="padding_mode")
    case = data.draw(conv_cases(size_limit, padding_mode=mode), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    tau = data.draw(st.sampled_from([0.3, 1.0, 2.5]), label="temperature")
    ref, mine = build_pair(case, E, backend, padding_mode=mode, routing="softmax",
                           temperature=tau)
    compare_modules(ref, mine, case, backend)


@fixture_settings
@given(data=st.data())
def test_condconv_expert_bias_matches_reference(backend, size_limit, data):
    """bias [E, Cout] mixed per example as β_b = r_b · bias, with either routing."""
    mode = data.draw(st.sampled_from(PAD_MODES), label="padding_mode")
    case = data.draw(conv_cases(size_limit, padding_mode=mode), label="case")
    E = data.draw(st.integers(1, 4), label="E")
    routing = data.draw(st.sampled_from(["sigmoid", "softmax"]), label="routing")
    ref, mine = build_pair(case, E, backend, padding_mode=mode, routing=routing,
                           temperature=0.7, expert_bias=True)
    if case.bias:
        assert mine.bias.shape == (E, case.out_channels)
    compare_modules(ref, mine, case, backend)


@pytest.mark.parametrize("expert_bias", [False, True])
def test_condconv_module_with_given_routing_weights(backend, expert_bias):
    """forward(x, routing_weights=r) uses r and leaves the router out of the graph."""
    case = ConvCase(batch=2, in_channels=3, out_channels=2, groups=1, in_size=(5, 4),
                    out_size=(3, 3), kernel=(3, 2), stride=1, dilation=(2, 1), padding=(1, 0),
                    pads=(1, 1, 0, 0), bias=True, seed=33)
    ref, mine = build_pair(case, 4, backend, padding_mode="reflect", expert_bias=expert_bias)
    (r,) = normal(34, (2, 4))
    compare_modules(ref, mine, case, backend, routing_weights=r)
