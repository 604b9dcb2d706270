"""The model registry and the EfficientNet building blocks, without timm: names, parameter
counts, preprocessing configs, the toy networks under their registry names, squeeze-and-
excitation, drop path and classifier dropout, and argument errors. (Parity with timm itself is
in test_timm.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import gradcheck

import minicond as mc
from minicond.models import create_model, list_models

EFFICIENTNETS = ["efficientnet_b0", "efficientnet_b1", "efficientnet_cc_b0_4e",
                 "efficientnet_cc_b0_8e", "efficientnet_cc_b1_8e", "tf_efficientnet_b0",
                 "tf_efficientnet_b1", "tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b0_8e",
                 "tf_efficientnet_cc_b1_8e"]


def test_list_models_names_every_network():
    assert list_models() == sorted(EFFICIENTNETS + ["toy_condconv", "toy_static"])
    assert list_models("tf_*cc*") == ["tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b0_8e",
                                      "tf_efficientnet_cc_b1_8e"]
    assert mc.models.list_models is list_models  # reachable as mc.models


def test_b0_structure_and_parameter_count():
    """EfficientNet-B0: 16 blocks in 7 stages, 5,288,548 parameters (timm's count); the
    CondConv-B0 with 4 experts: the last 6 blocks CondConv, 13,314,116 parameters."""
    b0 = create_model("efficientnet_b0")
    assert [len(stage) for stage in b0.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert b0.num_parameters() == 5_288_548
    cc = create_model("efficientnet_cc_b0_4e")
    kinds = [type(block).__name__ for stage in cc.blocks for block in stage]
    assert kinds == (["DepthwiseSeparable"] + ["InvertedResidual"] * 7
                     + ["CondConvInvertedResidual"] * 8)
    assert cc.num_parameters() == 13_314_116
    block = cc.blocks[4][0]
    assert block.conv_pw.weight.shape == (4, 480, 80, 1, 1)
    assert block.routing_fn.weight.shape == (4, 80)
    assert block.se.conv_reduce.weight.shape == (20, 480, 1, 1)  # a quarter of the block input


def test_b1_depth_multiplier():
    b1 = create_model("efficientnet_cc_b1_8e")
    assert [len(stage) for stage in b1.blocks] == [2, 3, 3, 4, 4, 5, 2]
    assert b1.blocks[6][0].conv_dw.weight.shape == (8, 1152, 1, 3, 3)


@pytest.mark.parametrize("name,size,crop,mean", [
    ("tf_efficientnet_cc_b0_4e", 224, 0.875, (0.5, 0.5, 0.5)),
    ("tf_efficientnet_cc_b1_8e", 240, 0.882, (0.5, 0.5, 0.5)),
    ("efficientnet_b0", 224, 0.875, (0.485, 0.456, 0.406)),
])
def test_pretrained_cfg_is_timms_preprocessing(name, size, crop, mean):
    cfg = create_model(name, num_classes=10).pretrained_cfg
    assert cfg["input_size"] == (3, size, size) and cfg["crop_pct"] == crop
    assert cfg["interpolation"] == "bicubic" and cfg["mean"] == mean
    assert cfg["num_classes"] == 10


def test_tf_variants_use_tensorflow_padding_and_eps():
    tf = create_model("tf_efficientnet_b0", backend="numpy")
    pt = create_model("efficientnet_b0", backend="numpy")
    assert tf.bn1.eps == 1e-3 and pt.bn1.eps == 1e-5
    assert tf.conv_stem.options.padding == "tf_same" and pt.conv_stem.options.padding == (1, 1)
    # stride 1: TensorFlow's SAME is the symmetric k//2, so no run-time padding there
    assert tf.blocks[4][1].conv_dw.options.padding == (2, 2)
    x = mc.tensor(np.zeros((1, 3, 33, 33), np.float32), backend="numpy")
    assert tf.eval()(x).shape == (1, 1000)


def test_toy_networks_under_registry_names():
    cond = create_model("toy_condconv", num_classes=5, in_chans=1, experts=3, width=8,
                        backend="numpy")
    static = create_model("toy_static", num_classes=5, in_chans=1, width=8, backend="numpy")
    assert "blocks.0.routing_fn.weight" in cond.state_dict()
    assert "blocks.0.conv_pw.weight" in static.state_dict()
    x = mc.tensor(np.zeros((2, 1, 8, 8), np.float32), backend="numpy")
    assert cond(x).shape == static(x).shape == (2, 5)


def test_toy_checkpoint_with_the_old_block_names_is_refused_clearly():
    model = create_model("toy_condconv", num_classes=4, width=4)
    old = {k.replace("conv_pw", "expand_conv"): v for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="earlier minicond.*train the model again"):
        model.load_state_dict(old)


@pytest.mark.parametrize("call,error,match", [
    (lambda: create_model("efficientnet_b7"), ValueError, "'efficientnet_b7' is not a regist"),
    (lambda: create_model("efficientnet_b0", width=3), TypeError, "'width'"),
    (lambda: create_model("efficientnet_b0", num_classes=0), ValueError, "num_classes=0"),
    (lambda: create_model("efficientnet_b0", drop_rate=1.0), ValueError, "drop_rate=1.0"),
    (lambda: create_model("efficientnet_b0", in_chans=2.5), TypeError, "in_chans=2.5"),
    (lambda: create_model("toy_static", drop_path_rate=0.1), ValueError, "no dropout"),
    (lambda: list_models(3), TypeError, "pattern=3"),
    (lambda: mc.nn.InvertedResidual(4, 4, expand_ratio=0), ValueError, "expand_ratio=0"),
    (lambda: mc.nn.InvertedResidual(4, 4, padding="same"), ValueError, "padding='same'"),
    (lambda: mc.nn.CondConvInvertedResidual(4, 4, num_experts=0), ValueError, "num_experts=0"),
    (lambda: mc.nn.DepthwiseSeparable(4, 4, kernel_size=2), ValueError, "must be odd"),
    (lambda: mc.nn.DropPath(1.0), ValueError, "p=1.0"),
    (lambda: mc.nn.SqueezeExcite(4, 0), ValueError, "reduced_channels=0"),
])
def test_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- layers ----------------------------------------------------------------------------------

def test_squeeze_excite_gates_each_channel_and_gradchecks():
    mc.manual_seed(1)
    se = mc.nn.SqueezeExcite(4, 2, dtype="float64", backend="numpy")
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 5))
    y = se(mc.tensor(x, backend="numpy")).numpy()
    gate = y / x
    assert np.allclose(gate, gate[:, :, :1, :1]) and ((gate > 0) & (gate < 1)).all()
    gradcheck(se, [x])


def test_drop_path_drops_whole_examples_in_training_only():
    mc.manual_seed(2)
    layer = mc.nn.DropPath(0.5)
    x = mc.tensor(np.ones((64, 2, 3, 3)), backend="numpy", requires_grad=True)
    y = layer(x)
    per_example = y.numpy().reshape(64, -1)
    kept = per_example[:, 0] > 0
    assert set(np.unique(per_example)) <= {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    assert (per_example == per_example[:, :1]).all() and 10 < kept.sum() < 54
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.numpy())
    assert layer.eval()(x) is x


def test_drop_path_rate_grows_linearly_and_dropout_acts_in_training():
    model = create_model("efficientnet_b0", num_classes=3, drop_rate=0.5, drop_path_rate=0.2,
                         dtype="float64", backend="numpy")
    rates = [block.drop_path.p for stage in model.blocks for block in stage
             if block.drop_path is not None]
    # block i of 16 gets 0.2·i/16; the last block with a skip is blocks.5.3, i = 14
    assert rates[-1] == pytest.approx(0.2 * 14 / 16) and rates == sorted(rates)
    x = mc.tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)), backend="numpy")
    mc.manual_seed(0)
    train = [model(x).numpy() for _ in range(2)]
    assert not np.allclose(train[0], train[1])
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


def test_condconv_inverted_residual_gradchecks():
    """Input gradient through routing, three CondConv2d layers, SE and batch statistics."""
    mc.manual_seed(4)
    block = mc.nn.CondConvInvertedResidual(2, 2, 3, expand_ratio=2, num_experts=3,
                                           se_channels=1, dtype="float64", backend="numpy")
    x = np.random.default_rng(3).standard_normal((2, 2, 3, 3))
    gradcheck(block, [x], rtol=1e-5, atol=1e-6)


# --- costs against the paper -------------------------------------------------------------------

@pytest.mark.parametrize("name,macs,params", [
    ("efficientnet_b0", 391e6, 5.3e6),
    ("efficientnet_cc_b0_4e", 402e6, 13.3e6),
    ("efficientnet_cc_b0_8e", 413e6, 24.0e6),
    ("efficientnet_cc_b1_8e", 614e6, 39.7e6),   # the paper's "B0-depth", 8 experts
])
def test_multiply_adds_and_parameters_match_the_papers_table(name, macs, params):
    """The TensorFlow CondConv README's table, at 224×224: within 2% (the counts include
    BatchNorm and the average pools, not activations, gates or residual additions)."""
    from minicond.profile import count_macs

    model = create_model(name, backend="numpy")
    total = count_macs(model, (3, 224, 224)).total
    assert abs(total - macs) <= 0.02 * macs, f"{total / 1e6:.1f}M MACs"
    assert abs(model.num_parameters() - params) <= 0.005 * params


def test_models_and_weights_work_without_torch_or_timm(tmp_path):
    """Every minicond module imports, a model is built and runs, and its weights go out to a
    safetensors file and back, in a process where importing torch or timm fails."""
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import pkgutil, sys
import numpy as np
sys.modules["torch"] = None; sys.modules["timm"] = None   # any import of them now fails
import minicond as mc
for info in pkgutil.walk_packages(mc.__path__, "minicond."):
    if info.name not in ("minicond.__main__", "minicond.backends.numba_cuda"):
        __import__(info.name)
model = mc.models.create_model("tf_efficientnet_cc_b0_4e", num_classes=3, backend="numpy")
y = model.eval()(mc.tensor(np.zeros((1, 3, 33, 33), np.float32), backend="numpy"))
path = mc.interop.save_safetensors(model, {str(tmp_path / "w.safetensors")!r})
mc.interop.load_safetensors(model, path)
assert y.shape == (1, 3) and not any(m in sys.modules and sys.modules[m] is not None
                                     for m in ("torch", "timm"))
print("ok")
"""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
