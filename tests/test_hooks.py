"""Forward hooks and forward pre-hooks on modules, with removable handles (PyTorch's rules)."""

from __future__ import annotations

import numpy as np
import pytest

import minicond as mc


def _layer_and_input():
    mc.manual_seed(0)
    layer = mc.nn.Linear(3, 2, backend="numpy")
    x = mc.tensor(np.arange(6.0).reshape(2, 3), dtype="float32", backend="numpy")
    return layer, x


def test_forward_hook_sees_module_inputs_and_output_and_can_be_removed():
    layer, x = _layer_and_input()
    seen = []
    handle = layer.register_forward_hook(lambda m, args, y: seen.append((m, args, y)))
    y = layer(x)
    assert len(seen) == 1
    module, args, output = seen[0]
    assert module is layer and args[0] is x and output is y
    handle.remove()
    layer(x)
    assert len(seen) == 1
    handle.remove()  # removing twice is harmless


def test_forward_hook_return_value_replaces_the_output():
    layer, x = _layer_and_input()
    plain = layer(x).numpy()
    with layer.register_forward_hook(lambda m, args, y: y * 2.0):
        np.testing.assert_allclose(layer(x).numpy(), 2.0 * plain)
    np.testing.assert_allclose(layer(x).numpy(), plain)  # the with block removed it


def test_pre_hook_can_replace_the_inputs_with_a_tuple_or_a_single_value():
    layer, x = _layer_and_input()
    zeros = mc.tensor(np.zeros((2, 3)), dtype="float32", backend="numpy")
    h1 = layer.register_forward_pre_hook(lambda m, args: zeros)
    np.testing.assert_allclose(layer(x).numpy(), np.tile(layer.bias.numpy(), (2, 1)))
    h1.remove()
    h2 = layer.register_forward_pre_hook(lambda m, args: (args[0] * 0.0,))
    np.testing.assert_allclose(layer(x).numpy(), np.tile(layer.bias.numpy(), (2, 1)))
    h2.remove()


def test_hooks_run_in_registration_order_and_keyword_arguments_pass_through():
    mc.manual_seed(0)
    layer = mc.nn.CondConv2d(2, 2, 1, num_experts=2, backend="numpy")
    x = mc.tensor(np.ones((1, 2, 3, 3)), dtype="float32", backend="numpy")
    r = mc.tensor(np.array([[1.0, 0.0]]), dtype="float32", backend="numpy")
    order = []
    layer.register_forward_pre_hook(lambda m, args: order.append("pre"))
    layer.register_forward_hook(lambda m, args, y: order.append("first"))
    layer.register_forward_hook(lambda m, args, y: order.append(("second", len(args))))
    layer(x, routing_weights=r)
    assert order == ["pre", "first", ("second", 1)]


def test_hook_recording_routing_weights_of_a_block():
    """The use the hooks are for: read what a layer computed without changing the model."""
    mc.manual_seed(0)
    layer = mc.nn.CondConv2d(2, 4, 3, padding=1, num_experts=3, backend="numpy")
    recorded = []
    layer.routing.register_forward_hook(lambda m, args, r: recorded.append(r.numpy()))
    x = mc.tensor(np.random.default_rng(0).normal(size=(2, 2, 5, 5)), dtype="float32",
                  backend="numpy")
    layer.eval()
    layer(x)
    assert recorded[0].shape == (2, 3)
    np.testing.assert_allclose(recorded[0], layer.routing(x).numpy())


def test_a_hook_must_be_callable():
    layer, _ = _layer_and_input()
    with pytest.raises(TypeError, match="register_forward_hook: hook must be callable"):
        layer.register_forward_hook(3)
    with pytest.raises(TypeError, match="register_forward_pre_hook: hook must be callable"):
        layer.register_forward_pre_hook(None)


def test_count_macs_leaves_no_hooks_and_no_instance_forward_behind():
    from minicond.models import build_model
    from minicond.profile import count_macs

    model = build_model("condconv", (1, 16, 16), 6, backend="numpy")
    count_macs(model, (1, 16, 16))
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in m.__dict__
