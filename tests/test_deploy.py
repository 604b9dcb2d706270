"""fold_batchnorm: folded logits equal the original's in float64, no batch norm is left after
a convolution, the original is untouched, and pairs that must not be folded are kept."""

from __future__ import annotations

import numpy as np
import pytest

import minicond as mc
from minicond import nn
from minicond.deploy import FoldedBatchNorm, fold_batchnorm
from minicond.models import build_model


def _randomise_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from their identity defaults, so that
    a wrong fold cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            C = m.num_features
            m.load_state_dict({"weight": rng.uniform(0.5, 1.5, C),
                               "bias": rng.normal(0.0, 0.3, C),
                               "running_mean": rng.normal(0.0, 0.5, C),
                               "running_var": rng.uniform(0.5, 2.0, C),
                               "num_batches_tracked": np.array(3.0)})


def _check_equal(model: nn.Module, folded: nn.Module, x: np.ndarray, backend: str) -> None:
    with mc.no_grad():
        y = model(mc.tensor(x, dtype="float64", backend=backend)).numpy()
        y_folded = folded(mc.tensor(x, dtype="float64", backend=backend)).numpy()
    assert np.abs(y).max() > 0.1
    assert np.abs(y_folded - y).max() <= 1e-10 * np.abs(y).max()


@pytest.mark.parametrize("kind", ["condconv", "static"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fold_toy_networks(kind, backend):
    from tests.conftest import require_backend

    require_backend(backend)
    mc.manual_seed(0)
    model = build_model(kind, (1, 12, 12), 6, experts=3, width=4, backend=backend,
                        dtype="float64")
    _randomise_batchnorms(model)
    model.eval()
    before = model.state_dict()
    x = np.random.default_rng(1).standard_normal((3, 1, 12, 12))
    folded = fold_batchnorm(model, example_input=(1, 1, 12, 12))
    _check_equal(model, folded, x, backend)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, FoldedBatchNorm) for m in folded.modules()) == 10
    # The original keeps its batch norms and every value.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 10
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


class _Pair(nn.Module):
    """A CondConv2d (own router) and a BatchNorm2d, and optionally a second use of the
    convolution's output, which makes the pair unfoldable."""

    def __init__(self, expert_bias: bool, bias: bool = True, reuse: bool = False) -> None:
        super().__init__()
        self.conv = nn.CondConv2d(3, 5, 3, padding=1, num_experts=4, bias=bias,
                                  expert_bias=expert_bias, dropout_rate=0.0, dtype="float64",
                                  backend="numpy")
        self.bn = nn.BatchNorm2d(5, dtype="float64", backend="numpy")
        self.reuse = reuse

    def forward(self, x: mc.Tensor) -> mc.Tensor:
        z = self.conv(x)
        y = self.bn(z)
        return y * z if self.reuse else y


@pytest.mark.parametrize("expert_bias, bias", [(True, True), (False, True), (False, False)])
def test_fold_condconv_biases(expert_bias, bias):
    mc.manual_seed(2)
    model = _Pair(expert_bias, bias)
    _randomise_batchnorms(model, seed=3)
    model.eval()
    folded = fold_batchnorm(model, example_input=(1, 3, 6, 6))
    _check_equal(model, folded, np.random.default_rng(4).standard_normal((2, 3, 6, 6)),
                 "numpy")
    assert isinstance(folded.bn, FoldedBatchNorm)
    # Per-expert biases stay per expert (scaled); the static shift lives beside them.
    assert folded.conv.expert_bias is expert_bias
    assert (folded.bn.shift is not None) is expert_bias
    assert folded.conv.bias is not None and folded.conv.bias.shape == \
        ((4, 5) if expert_bias else (5,))


def test_fold_keeps_a_batch_norm_whose_input_is_used_elsewhere():
    mc.manual_seed(5)
    model = _Pair(expert_bias=False, reuse=True)
    _randomise_batchnorms(model, seed=6)
    model.eval()
    folded = fold_batchnorm(model, example_input=(1, 3, 6, 6))
    assert isinstance(folded.bn, nn.BatchNorm2d)
    _check_equal(model, folded, np.random.default_rng(7).standard_normal((2, 3, 6, 6)),
                 "numpy")


def test_fold_batchnorm_errors():
    with pytest.raises(TypeError, match="fold_batchnorm: model"):
        fold_batchnorm("not a model")
    model = build_model("static", (1, 8, 8), 3, width=2, backend="numpy")
    with pytest.raises(ValueError, match="example_input"):
        fold_batchnorm(model)


def test_fold_condconv_efficientnet():
    """A CondConv-EfficientNet with timm's architecture (squeeze-and-excitation, shared
    routing, TensorFlow padding): every batch norm folds and the logits stay."""
    from minicond.models import create_model

    mc.manual_seed(8)
    model = create_model("tf_efficientnet_cc_b0_4e", num_classes=10, backend="numpy",
                         dtype="float64")
    _randomise_batchnorms(model, seed=9)
    model.eval()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model, example_input=(1, 3, 32, 32))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, FoldedBatchNorm) for m in folded.modules()) == n_bn
    _check_equal(model, folded, np.random.default_rng(10).standard_normal((2, 3, 33, 33)),
                 "numpy")


def test_fold_on_every_backend(backend):
    """The copy, the trace and the folded parameters stay on the model's backend."""
    mc.manual_seed(11)
    opts = {"dtype": "float64", "backend": backend}
    model = nn.Sequential(
        nn.CondConv2d(2, 3, 3, padding=1, num_experts=2, expert_bias=True, **opts),
        nn.BatchNorm2d(3, **opts), nn.Conv2d(3, 2, 1, **opts), nn.BatchNorm2d(2, **opts))
    _randomise_batchnorms(model, seed=12)
    model.eval()
    folded = fold_batchnorm(model, example_input=(1, 2, 4, 4))
    assert [type(m).__name__ for m in folded] == ["CondConv2d", "FoldedBatchNorm", "Conv2d",
                                                  "FoldedBatchNorm"]
    assert all(p.backend.name == backend for p in folded.parameters())
    _check_equal(model, folded, np.random.default_rng(13).standard_normal((2, 2, 4, 4)),
                 backend)
