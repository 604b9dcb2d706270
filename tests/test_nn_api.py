"""The PyTorch-style building blocks for one's own model: ModuleList, ModuleDict, Identity,
activation layers, Module.apply and requires_grad_ (freezing part of a model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minicond as mc

nn = mc.nn


class TwoHeads(nn.Module):
    """A user-defined module: a trunk of blocks in a ModuleList, heads in a ModuleDict."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8)])
        self.heads = nn.ModuleDict({"cls": nn.Linear(8, 3), "reg": nn.Linear(8, 1)})
        self.skip = nn.Identity(54, unused="argument")

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        x = self.skip(x)
        return self.heads["cls"](x), self.heads["reg"](x)


def test_containers_register_their_entries():
    model = TwoHeads()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["blocks.0.weight", "blocks.0.bias", "blocks.2.weight", "blocks.2.bias",
                     "heads.cls.weight", "heads.cls.bias", "heads.reg.weight", "heads.reg.bias"]
    assert set(model.state_dict()) == set(names)
    logits, value = model(mc.tensor(np.ones((2, 4), dtype=np.float32)))
    assert logits.shape == (2, 3) and value.shape == (2, 1)
    (logits.sum() + value.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.double()
    assert all(p.dtype == np.float64 for p in model.parameters())


def test_module_list_behaves_like_a_list():
    a, b, c = nn.ReLU(), nn.Tanh(), nn.Identity()
    ml = nn.ModuleList([a, b])
    ml.append(c)
    assert len(ml) == 3 and list(ml) == [a, b, c] and ml[-1] is c
    ml.insert(0, nn.Sigmoid())
    assert [type(m).__name__ for m in ml] == ["Sigmoid", "ReLU", "Tanh", "Identity"]
    del ml[1]
    assert list(ml._modules) == ["0", "1", "2"] and ml[1] is b
    ml[0] = a
    assert ml[0] is a
    ml += [nn.GELU()]
    assert len(ml) == 4 and isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    with pytest.raises(IndexError, match="ModuleList: index 9 is out of range for 4"):
        ml[9]
    with pytest.raises(TypeError, match="ModuleList: entry 4 is a int; expected a Module"):
        ml.append(3)
    with pytest.raises(TypeError, match="ModuleList.extend: .*single ReLU"):
        ml.extend(nn.ReLU())


def test_module_dict_behaves_like_a_dict():
    md = nn.ModuleDict([("a", nn.Linear(2, 2)), ("b", nn.ReLU())])
    md["c"] = nn.Tanh()
    assert list(md) == ["a", "b", "c"] and "b" in md and len(md) == 3
    assert [k for k, _ in md.items()] == md.keys()
    assert isinstance(md.pop("b"), nn.ReLU) and md.keys() == ["a", "c"]
    md.update({"d": nn.Identity()})
    assert list(md.values())[-1].__class__ is nn.Identity
    with pytest.raises(KeyError, match="no entry 'z'; entries are"):
        md["z"]
    with pytest.raises(ValueError, match="key 'x.y' must be a non-empty name without '.'"):
        md["x.y"] = nn.ReLU()
    with pytest.raises(TypeError, match="key 3 must be a str"):
        md[3] = nn.ReLU()
    with pytest.raises(TypeError, match="entry 'e' is a str; expected a Module"):
        md["e"] = "relu"
    with pytest.raises(ValueError, match="key 'parameters' would hide"):
        md["parameters"] = nn.ReLU()
    md.clear()
    assert len(md) == 0


def test_apply_visits_children_before_parents():
    model = TwoHeads()
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen[-1] == "TwoHeads" and seen.index("ModuleList") > seen.index("GELU")

    def zero_biases(m):
        if isinstance(m, nn.Linear):
            m.bias.data = m.bias.backend.full(m.bias.shape, 0.0, m.bias.dtype)
    model.apply(zero_biases)
    assert all(np.all(p.numpy() == 0) for n, p in model.named_parameters() if "bias" in n)
    with pytest.raises(TypeError, match="apply: fn must be callable"):
        model.apply(3)


def test_forward_hooks_see_the_entries_of_a_container():
    """Features of every GELU in a ModuleList, collected with forward hooks set by apply."""
    model = TwoHeads()
    seen = []
    handles = []
    model.apply(lambda m: handles.append(m.register_forward_hook(
        lambda mod, args, out: seen.append(out.shape))) if isinstance(m, nn.GELU) else None)
    model(mc.tensor(np.ones((2, 4), dtype=np.float32)))
    assert seen == [(2, 8)]
    for h in handles:
        h.remove()
    model(mc.tensor(np.ones((2, 4), dtype=np.float32)))
    assert seen == [(2, 8)]


def test_frozen_part_gets_no_gradient_and_is_not_updated():
    model = TwoHeads()
    assert model.blocks.requires_grad_(False) is model.blocks
    frozen = {n: p.numpy() for n, p in model.named_parameters() if n.startswith("blocks")}
    heads = {n: p.numpy() for n, p in model.named_parameters() if n.startswith("heads")}
    opt = mc.optim.SGD(model.parameters(), lr=0.1)
    logits, value = model(mc.tensor(np.ones((2, 4), dtype=np.float32)))
    (logits.sum() + value.sum()).backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == name.startswith("blocks"), name
    opt.step()
    after = dict(model.named_parameters())
    for name, value in frozen.items():
        np.testing.assert_array_equal(after[name].numpy(), value)
    assert all(not np.array_equal(after[n].numpy(), v) for n, v in heads.items())
    model.requires_grad_()
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="requires_grad=1 must be a bool"):
        model.requires_grad_(1)


@pytest.mark.parametrize("ours,theirs", [
    (nn.Tanh(), torch.nn.Tanh()),
    (nn.GELU(), torch.nn.GELU()),
    (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
    (nn.LeakyReLU(0.3), torch.nn.LeakyReLU(0.3)),
    (nn.Softplus(beta=2.0, threshold=3.0), torch.nn.Softplus(beta=2.0, threshold=3.0)),
    (nn.Hardswish(), torch.nn.Hardswish()),
    (nn.Softmax(dim=0), torch.nn.Softmax(dim=0)),
    (nn.Softmax(), torch.nn.Softmax()),
    (nn.LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
    (nn.Identity(), torch.nn.Identity()),
])
@pytest.mark.filterwarnings("ignore:Implicit dimension choice")
def test_activation_layers_match_torch(ours, theirs):
    x = np.random.default_rng(0).standard_normal((3, 4, 2)) * 3
    np.testing.assert_allclose(ours(mc.tensor(x, dtype="float64")).numpy(),
                               theirs(torch.from_numpy(x)).numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("call,error,match", [
    (lambda: nn.GELU(approximate="erf"), ValueError, "GELU: approximate='erf'"),
    (lambda: nn.LeakyReLU("a"), TypeError, "LeakyReLU: negative_slope='a'"),
    (lambda: nn.LeakyReLU(inplace=True), ValueError, "LeakyReLU: inplace=True"),
    (lambda: nn.Softplus(beta=0.0), ValueError, "Softplus: beta=0"),
    (lambda: nn.Softmax(dim=1.0), TypeError, "Softmax: dim=1.0 must be an int"),
    (lambda: nn.Hardswish(inplace=True), ValueError, "Hardswish: inplace=True"),
])
def test_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- mc.data -----------------------------------------------------------------------------------

def test_data_is_reachable_from_the_package():
    assert mc.data.DataLoader is not None and mc.data.load_dataset is not None
    images, labels = mc.data.make_shapes(12, image_size=8, seed=1)
    assert len(mc.data.DataLoader(images, labels, batch_size=5)) == 3


def test_array_dataset_wraps_a_users_arrays():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    ds = mc.data.ArrayDataset(images, [1, 0], classes=["cat", "dog"])
    assert len(ds) == 2 and ds.num_classes == 2 and ds.classes == ("cat", "dog")
    assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int64
    image, label = ds[1]
    np.testing.assert_array_equal(image, images[1])
    assert label == 0
    batches = list(ds.loader(batch_size=1, shuffle=False))
    assert [int(b[1][0]) for b in batches] == [1, 0]
    assert mc.data.ArrayDataset(np.zeros((3, 2)), np.array([0, 4, 2])).classes == \
        ("0", "1", "2", "3", "4")


def _dataset(images, labels, classes=None):
    return lambda: mc.data.ArrayDataset(images, labels, classes)


@pytest.mark.parametrize("call,error,match", [
    (_dataset(np.zeros((3, 2)), [0, 1]), ValueError, r"\(3, 2\) and labels of shape \(2,\)"),
    (_dataset(np.zeros((2, 2)), [0.0, 1.0]), TypeError, "labels must be integers; got dtype f"),
    (_dataset(np.array([["a", "b"]]), [0]), TypeError, "images must hold real numbers"),
    (_dataset(np.array([[np.nan, 1.0]]), [0]), ValueError, "infinite values \\(1 of them"),
    (_dataset(np.zeros((2, 2)), [0, -1]), ValueError, "labels must be >= 0; got -1"),
    (_dataset(np.zeros((2, 2)), [[0, 1]]), ValueError, "labels 1-D"),
    (_dataset(np.zeros((0, 2)), np.zeros(0, dtype=int)), ValueError, "empty"),
    (_dataset(np.zeros((2, 2)), [0, 2], ["a", "b"]), ValueError, "at least 3 classes"),
])
def test_array_dataset_checks_its_arrays(call, error, match):
    with pytest.raises(error, match="ArrayDataset: .*" + match):
        call()
