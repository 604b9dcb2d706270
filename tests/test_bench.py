"""The CPU benchmark times like against like: every CondConv variant of a grid row computes
the same layer output from the same data (else its ratios would mean nothing)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_condconv as bench  # noqa: E402

ROWS = ["2,4,6,3,1,1,3,train", "2,4:6,7,2,2,1,3,inference", "2,4,6,3,1,4,3,train",
        "1,3:6,5,2,1,1,1,train", "2,4,8,2,1,2,3,inference"]


@pytest.mark.parametrize("text", ROWS)
def test_variants_compute_the_same_layer(text):
    (cfg,) = bench.parse_config(text)
    outputs = {v: np.asarray(bench.build(v, cfg)().detach().numpy())
               for v in ("numpy", "numba", "torch_seed", "torch_grouped")}
    expected_shape = (cfg.B, cfg.Cout, cfg.out_hw, cfg.out_hw)
    for v, y in outputs.items():
        assert y.shape == expected_shape, v
        np.testing.assert_allclose(y, outputs["torch_seed"], rtol=1e-4, atol=1e-5, err_msg=v)


def test_grid_has_the_rows_it_promises():
    labels = {c.label() for c in bench.GRID}
    for row in ("16,96,28,4,1,96,3,train", "1,144,28,8,1,144,3,inference",
                "32,24:144,28,4,1,1,1,train", "1,64,56,4,1,1,3,inference",
                "32,48,32,4,2,1,3,train", "32,32,32,16,1,1,3,train"):
        assert row in labels, row
    assert len(bench.parse_config("8,16,16,4")) == 2          # the short form: both modes


@pytest.mark.parametrize("bad", ["8,16,16", "8,16,16,4,1,3,3,train", "8,16,16,4,1,1,3,fast",
                                 "0,16,16,4"])
def test_bad_configs_are_refused_with_the_reason(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="config"):
        bench.parse_config(bad)


def test_train_step_twin_is_the_same_network():
    """The PyTorch twin of the default training model: same loss and, after backward, the
    same gradient for every parameter (routing dropout off on both, as it draws different
    random numbers)."""
    import torch
    import torch.nn.functional as tF
    from bench_train_step import build_twin

    import minicond.functional as F
    from minicond import random as mc_random
    from minicond.models import build_model
    from minicond.tensor import tensor

    mc_random.manual_seed(0)
    model = build_model("condconv", (3, 8, 8), 4, experts=3, width=4, backend="numba")
    twin = build_twin(model)
    for block, t_block in zip(model.blocks, twin.blocks, strict=True):
        block.routing_dropout.p = t_block.routing_p = 0.0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1])
    loss = F.cross_entropy(model(tensor(x, backend="numba")), labels)
    loss.backward()
    t_loss = tF.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels))
    t_loss.backward()
    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-5)
    t_params = dict(twin.named_parameters())
    params = dict(model.named_parameters())
    assert sorted(params) == sorted(t_params)
    for name, p in params.items():
        np.testing.assert_allclose(np.asarray(p.grad.numpy()), t_params[name].grad.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)
