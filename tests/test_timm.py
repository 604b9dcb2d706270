"""minicond's EfficientNets against timm's: same state dict, same logits, same training steps,
and weights that go back and forth (timm state dicts, safetensors files).

timm's weights here are random (``pretrained=False``), with the BatchNorm statistics and affine
parameters randomised mildly, the routing pushed away from 0.5 and the classifier scaled so
that logits are O(1)–O(10) (asserted ≤ 100). Inputs are small and of odd sizes. Models are
built once per module and shared; PyTorch runs on one thread (on a loaded two-core machine
more threads make its float64 grouped convolutions many times slower).
"""

from __future__ import annotations

import numpy as np
import pytest

import minicond as mc
from conftest import require_backend
from minicond.interop import (
    load_safetensors,
    load_torch_state_dict,
    save_safetensors,
    to_torch_state_dict,
)

timm = pytest.importorskip("timm", reason="timm is not installed (the test extra has it)")
torch = pytest.importorskip("torch", reason="PyTorch is not installed (the test extra has it)")

NAMES = ["efficientnet_cc_b0_4e", "efficientnet_cc_b0_8e", "efficientnet_cc_b1_8e",
         "tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b0_8e", "tf_efficientnet_cc_b1_8e",
         "efficientnet_b0", "efficientnet_b1", "tf_efficientnet_b0", "tf_efficientnet_b1"]
# (batch 3 input, batch 1 input) per model: odd and even sizes, square and not, up to 65 px.
INPUTS = {name: ((3, 3, 33 + 2 * i, 35 - 2 * (i % 3)), (1, 3, 65 - 3 * i, 48 + i))
          for i, name in enumerate(NAMES)}
RTOL = 1e-8  # max|Δ| ≤ RTOL·max|y_timm| in float64


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(model, seed: int = 0, classifier_scale: float | None = 30.0):
    """Mild random BatchNorm statistics and affine parameters, routing away from 0.5, and a
    classifier scaled so that the logits are not tiny (timm initialises it near zero)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                C = m.num_features
                m.running_mean.copy_(0.2 * rand(C) - 0.1)
                m.running_var.copy_(0.5 + rand(C))
                m.weight.copy_(0.5 + 0.5 * rand(C))
                m.bias.copy_(0.2 * rand(C) - 0.1)
                m.num_batches_tracked.fill_(int(seed) + 7)
            if name.endswith("routing_fn"):
                m.weight.mul_(20.0)
                m.bias.copy_(4.0 * rand(m.bias.shape) - 2.0)
        if classifier_scale is not None:
            model.classifier.weight.mul_(classifier_scale)
    return model


def timm_model(name: str, classifier_scale: float = 30.0, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).double().eval()
    return randomise(model, classifier_scale=classifier_scale)


def minicond_like(tm, name: str, dtype: str = "float64", backend: str = "numpy", **kwargs):
    model = mc.models.create_model(name, dtype=dtype, backend=backend, **kwargs).eval()
    load_torch_state_dict(model, tm.state_dict())
    return model


# Models that several tests use stay built for the whole module; the others are built for
# their one test and dropped (ten float64 pairs at once would hold ~5 GB).
SHARED = {"efficientnet_cc_b0_4e", "efficientnet_cc_b0_8e", "tf_efficientnet_cc_b0_4e",
          "tf_efficientnet_cc_b0_8e", "tf_efficientnet_b0"}
_PAIRS: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def pair():
    """name -> (timm model, minicond model with its weights)."""
    def get(name: str):
        if name in _PAIRS:
            return _PAIRS[name]
        tm = timm_model(name)
        built = (tm, minicond_like(tm, name))
        if name in SHARED:
            _PAIRS[name] = built
        return built
    yield get
    _PAIRS.clear()


def images(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def timm_logits(tm, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tm(torch.from_numpy(x)).numpy()


def logits(model, x: np.ndarray, backend: str = "numpy") -> np.ndarray:
    with mc.no_grad():
        return model(mc.tensor(x, dtype=model.classifier.weight.dtype, backend=backend)).numpy()


def assert_logits_close(y: np.ndarray, y_timm: np.ndarray, rtol: float = RTOL) -> None:
    scale = np.abs(y_timm).max()
    assert 0.5 < scale <= 100, f"logits of magnitude {scale}: the test would be weak"
    err = np.abs(y - y_timm).max()
    assert err <= rtol * scale, f"max|Δ| = {err:.3g} > {rtol:g}·max|y| = {rtol * scale:.3g}"


# --- architecture and logits ---------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_architecture_and_float64_logits_equal_timms(pair, name):
    """timm's keys, shapes, parameter count and preprocessing; then the logits at two input
    sizes, batch 3 and batch 1."""
    tm, model = pair(name)
    theirs = {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    ours = {k: v.shape for k, v in to_torch_state_dict(model).items()}
    assert ours == theirs
    assert model.num_parameters() == sum(p.numel() for p in tm.parameters())
    for key in ("input_size", "crop_pct", "interpolation", "mean", "std"):
        assert model.pretrained_cfg[key] == tm.pretrained_cfg[key], key
    for shape in INPUTS[name]:
        x = images(shape, seed=shape[2])
        assert_logits_close(logits(model, x), timm_logits(tm, x))
    routing = np.concatenate([r.ravel() for r in model.routing_weights().values()] or [[]])
    if "_cc_" in name:  # the routing really selects: weights spread over (0, 1)
        assert routing.min() < 0.1 and routing.max() > 0.9


@pytest.mark.parametrize("name", ["efficientnet_cc_b0_4e", "tf_efficientnet_cc_b0_4e",
                                  "tf_efficientnet_b0"])
def test_numba_backend_logits_equal_timms(pair, name):
    require_backend("numba")
    tm, model = pair(name)
    try:
        model.to("numba")
        for shape in INPUTS[name]:
            x = images(shape, seed=1)
            assert_logits_close(logits(model, x, "numba"), timm_logits(tm, x))
    finally:
        model.to("numpy")


def test_full_size_input_on_numba(pair):
    """One model at its real input size, 224×224."""
    require_backend("numba")
    tm, model = pair("tf_efficientnet_cc_b0_4e")
    x = images((1, 3, 224, 224), seed=2)
    try:
        model.to("numba")
        assert_logits_close(logits(model, x, "numba"), timm_logits(tm, x))
    finally:
        model.to("numpy")


def test_float32_logits_within_float32_tolerance(pair):
    """float32 against timm's float64. Every layer rounds its output to float32 (relative
    6e-8) after sums of up to Cin·kh·kw = 1152 products, through ~80 convolutions whose batch
    norms rescale by γ/√(σ²+ε); measured: 3e-7 to 2e-6 of max|y| at these sizes, 2e-5 for
    the deepest model (cc_b1_8e) at 224×224. 1e-4·max|y| keeps a margin of 5 over the worst
    case while any wrong operation gives errors of order max|y|."""
    name = "tf_efficientnet_cc_b0_4e"
    tm, _ = pair(name)
    model32 = minicond_like(tm, name, dtype="float32")
    x = images(INPUTS[name][0], seed=3)
    y = logits(model32, x.astype(np.float32))
    assert y.dtype == np.float32
    assert_logits_close(y.astype(np.float64), timm_logits(tm, x), rtol=1e-4)


@pytest.mark.parametrize("name,num_classes,in_chans", [("efficientnet_b0", 7, 1),
                                                       ("tf_efficientnet_cc_b0_4e", 10, 4)])
def test_other_num_classes_and_in_chans(name, num_classes, in_chans):
    tm = timm_model(name, num_classes=num_classes, in_chans=in_chans)
    model = minicond_like(tm, name, num_classes=num_classes, in_chans=in_chans)
    assert model.conv_stem.weight.shape[1] == in_chans
    assert model.pretrained_cfg["num_classes"] == num_classes
    x = images((2, in_chans, 37, 31), seed=4)
    y = logits(model, x)
    assert y.shape == (2, num_classes)
    assert_logits_close(y, timm_logits(tm, x))


# --- training follows timm -------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_training_steps_follow_timm(optimizer):
    """Same weights, train mode (batch statistics, running-stat updates with timm's momentum
    0.1), a few optimizer steps on cross-entropy: same parameters, running statistics and
    logits in float64. Dropout and drop path are 0 (their masks come from different random
    generators)."""
    name = "efficientnet_cc_b0_4e"
    tm = timm_model(name, classifier_scale=3.0).train()
    model = minicond_like(tm, name).train()
    before = to_torch_state_dict(model)
    if optimizer == "sgd":
        opt_t = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        opt_m = mc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    else:
        opt_t = torch.optim.AdamW(tm.parameters(), lr=1e-3, weight_decay=0.05)
        opt_m = mc.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    rng = np.random.default_rng(5)
    for _ in range(2):
        x = rng.standard_normal((2, 3, 35, 33))
        labels = rng.integers(0, 1000, 2)
        opt_t.zero_grad()
        loss_t = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)),
                                                   torch.from_numpy(labels))
        loss_t.backward()
        opt_t.step()
        model.zero_grad()
        loss = mc.functional.cross_entropy(model(mc.tensor(x, dtype="float64",
                                                           backend="numpy")), labels)
        loss.backward()
        opt_m.step()
        assert abs(loss.item() - loss_t.item()) <= 1e-10 * abs(loss_t.item())
    theirs = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    ours = to_torch_state_dict(model)
    assert set(ours) == set(theirs)
    # Some gradients are exactly 0 in exact arithmetic (a bias whose shift the next
    # batch-statistics BatchNorm removes) and are rounding noise of ~1e-17 in practice; Adam
    # divides by √v + ε, turning noise g into steps lr·g/ε: the absolute term allows those
    # (lr·g/ε ≤ 1e-8 for |g| ≤ 1e-13), the relative term bounds everything else.
    noise = 1e-8 if optimizer == "adamw" else 0.0
    for key, value in theirs.items():
        err = np.abs(ours[key] - value).max()
        assert err <= 1e-9 * np.abs(value).max() + noise, (key, err)
    for kind in ("running_mean", "running_var", "conv_pw.weight", "routing_fn.weight"):
        moved = max(np.abs(ours[k] - before[k]).max() for k in ours if k.endswith(kind))
        assert moved > 1e-4, f"{kind} must have changed in training"
    # Logits of the trained models in train mode (batch statistics, as training sees them).
    x = rng.standard_normal((2, 3, 33, 33))
    assert_logits_close(logits(model, x), timm_logits(tm, x))


# --- round trips ---------------------------------------------------------------------------

def test_timm_to_minicond_to_timm_is_exact(pair):
    tm, model = pair("tf_efficientnet_cc_b0_8e")
    back = timm.create_model("tf_efficientnet_cc_b0_8e", pretrained=False).double().eval()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(model).items()},
                         strict=True)
    returned = back.state_dict()
    for key, value in tm.state_dict().items():
        assert torch.equal(returned[key], value), key
    assert returned["bn1.num_batches_tracked"].dtype == torch.int64


def test_minicond_weights_give_timm_the_same_logits():
    """A model initialised (and trained one step) in minicond, exported to timm."""
    name = "efficientnet_cc_b0_4e"
    mc.manual_seed(3)
    model = mc.models.create_model(name, dtype="float64", backend="numpy")
    x = images((2, 3, 33, 33), seed=6)
    opt = mc.optim.SGD(model.parameters(), lr=0.1)
    mc.functional.cross_entropy(model(mc.tensor(x, backend="numpy")), [1, 2]).backward()
    opt.step()
    model.eval()
    tm = timm.create_model(name, pretrained=False).double().eval()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(model).items()},
                       strict=True)
    y_timm = timm_logits(tm, x)
    err = np.abs(logits(model, x) - y_timm).max()
    assert err <= RTOL * np.abs(y_timm).max()


def test_safetensors_round_trip_and_timm_written_file(pair, tmp_path):
    from safetensors.torch import save_file

    name = "tf_efficientnet_cc_b0_4e"
    tm, model = pair(name)
    path = save_safetensors(model, tmp_path / "model.safetensors")
    again = mc.models.create_model(name, dtype="float64", backend="numpy").eval()
    load_safetensors(again, path)
    loaded = again.state_dict()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    # A file as timm's tooling writes it (safetensors.torch from the model's state dict).
    theirs = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, str(theirs))
    from_timm = mc.models.create_model(name, dtype="float64", backend="numpy").eval()
    load_safetensors(from_timm, theirs)
    x = images(INPUTS[name][0], seed=7)
    assert_logits_close(logits(from_timm, x), timm_logits(tm, x))
    # and timm loads minicond's file strictly
    from safetensors.torch import load_file
    tm2 = timm.create_model(name, pretrained=False).double()
    tm2.load_state_dict(load_file(str(path)), strict=True)


def test_state_dict_for_another_model_is_refused_naming_the_key(pair):
    tm, _ = pair("efficientnet_cc_b0_8e")
    model = mc.models.create_model("efficientnet_cc_b0_4e", backend="numpy")
    with pytest.raises(ValueError, match=r"blocks\.4\.0\.conv_pw\.weight"):
        load_torch_state_dict(model, tm.state_dict())


# --- the blocks alone: forward and every gradient -----------------------------------------------

@pytest.mark.parametrize("kind", ["DepthwiseSeparable", "InvertedResidual",
                                  "CondConvInvertedResidual"])
@pytest.mark.parametrize("tf_port", [False, True])
def test_blocks_match_timms_output_and_every_gradient(kind, tf_port):
    """Each block against timm's, float64, train mode (batch statistics): the output, the
    input gradient and every parameter gradient under a random cotangent, and the running
    statistics; then the eval-mode output. The input is 10×8: for the strided k=5 blocks
    TensorFlow's SAME padding is then asymmetric (1 top/left, 2 bottom/right)."""
    from functools import partial

    from timm.models import _efficientnet_blocks as blocks

    eps = 1e-3 if tf_port else 1e-5
    common = {"act_layer": torch.nn.SiLU, "pad_type": "same" if tf_port else "",
              "norm_layer": partial(torch.nn.BatchNorm2d, eps=eps)}
    ours_common = {"padding": "tf_same" if tf_port else "symmetric", "bn_eps": eps,
                   "dtype": "float64", "backend": "numpy"}
    if kind == "DepthwiseSeparable":
        theirs = blocks.DepthwiseSeparableConv(
            8, 8, 3, se_layer=partial(blocks.SqueezeExcite, rd_ratio=0.25), **common)
        ours = mc.nn.DepthwiseSeparable(8, 8, 3, se_channels=2, **ours_common)
    else:
        se = partial(blocks.SqueezeExcite, rd_ratio=0.25 / 3)
        if kind == "InvertedResidual":
            theirs = blocks.InvertedResidual(8, 16, 5, stride=2, exp_ratio=3.0, se_layer=se,
                                             **common)
            ours = mc.nn.InvertedResidual(8, 16, 5, stride=2, expand_ratio=3, se_channels=2,
                                          channel_divisor=8, **ours_common)
        else:
            theirs = blocks.CondConvResidual(8, 16, 5, stride=2, exp_ratio=3.0, se_layer=se,
                                             num_experts=3, **common)
            ours = mc.nn.CondConvInvertedResidual(8, 16, 5, stride=2, expand_ratio=3,
                                                  num_experts=3, se_channels=2,
                                                  channel_divisor=8, **ours_common)
    theirs = randomise(theirs.double(), classifier_scale=None).train()
    load_torch_state_dict(ours, theirs.state_dict())
    x = images((3, 8, 10, 8), seed=8)
    xt = torch.from_numpy(x).requires_grad_(True)
    y_timm = theirs(xt)
    cotangent = images(tuple(y_timm.shape), seed=9)
    (y_timm * torch.from_numpy(cotangent)).sum().backward()
    xm = mc.tensor(x, requires_grad=True, backend="numpy")
    y = ours(xm)
    (y * mc.tensor(cotangent, backend="numpy")).sum().backward()

    def close(a, b, what):
        b = np.asarray(b).reshape(np.shape(a))
        assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max() + 1e-14, what

    close(y.numpy(), y_timm.detach().numpy(), "output")
    close(xm.grad.numpy(), xt.grad.numpy(), "input gradient")
    grads = dict(theirs.named_parameters())
    assert set(grads) == {name for name, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        close(p.grad.numpy(), grads[name].grad.numpy(), f"gradient of {name}")
    states = to_torch_state_dict(ours)
    for name, value in theirs.state_dict().items():
        close(states[name], value.numpy(), name)
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        close(ours(mc.tensor(x, backend="numpy")).numpy(), theirs(torch.from_numpy(x)).numpy(),
              "eval output")
