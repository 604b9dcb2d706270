"""mc.save / mc.load: nested state round trips exactly, saving is atomic (a failed save
leaves the previous file), and files that are not minicond's are refused with a clear error."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

import minicond as mc
from minicond.checkpoint import CheckpointError


def _equal(a, b) -> None:
    """Same nesting, same container types, same values and dtypes."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _equal(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b or (a != a and b != b)   # NaN equals NaN here


def test_round_trip_of_nested_containers(tmp_path):
    rng = np.random.default_rng(0)
    obj = {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f64": rng.standard_normal(4),
        "i64": np.arange(5), "u8": np.arange(3, dtype=np.uint8),
        "bool": np.array([True, False]), "scalar array": np.array(2.5), "empty": np.zeros((0, 3)),
        "nested": [1, 2.5, True, None, "text", (3, [np.ones(2)], {"deep": (None,)})],
        "int keys": {0: {"momentum": np.ones(2)}, 7: "seven"},
        "nan": float("nan"), "inf": float("-inf"), "": "empty key",
    }
    path = tmp_path / "state.mc"
    mc.save(obj, path)
    _equal(mc.load(path), obj)
    mc.save((1, "two"), str(path))                 # top level may be any container
    assert mc.load(str(path)) == (1, "two")
    mc.save(3.5, path)
    assert mc.load(path) == 3.5


def test_tensors_load_as_arrays_and_state_dicts_load_back(tmp_path):
    model = mc.nn.Sequential(mc.nn.Linear(3, 4), mc.nn.GELU(), mc.nn.Linear(4, 2))
    opt = mc.optim.Adam(model.parameters(), lr=0.01)
    model(mc.tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    opt.step()
    mc.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
             "a tensor": mc.tensor([1.0, 2.0], dtype="float64")}, tmp_path / "ckpt")
    loaded = mc.load(tmp_path / "ckpt")
    assert isinstance(loaded["a tensor"], np.ndarray) and loaded["a tensor"].dtype == np.float64
    twin = mc.nn.Sequential(mc.nn.Linear(3, 4), mc.nn.GELU(), mc.nn.Linear(4, 2))
    twin.load_state_dict(loaded["model"])
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)
    twin_opt = mc.optim.Adam(twin.parameters(), lr=0.01)
    twin_opt.load_state_dict(loaded["optimizer"])
    _equal(twin_opt.state_dict(), opt.state_dict())


def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "state.mc"
    mc.save({"version": 1}, path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        mc.save({"version": 2, "big": np.ones(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert mc.load(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.mc"]   # no temporary left
    # an object that cannot be saved is refused before anything is written
    with pytest.raises(TypeError, match=r"save: obj\['model'\] is a Linear \(save its "
                                        r"state_dict\(\)\)"):
        mc.save({"model": mc.nn.Linear(2, 2)}, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("obj,error,match", [
    ({"s": {1, 2}}, TypeError, r"save: obj\['s'\] is a set"),
    ({"a": np.array(["x"])}, TypeError, r"obj\['a'\] is an array of dtype <U1"),
    ({1.5: 0}, TypeError, "the key 1.5 of type float; expected str or int keys"),
    ({"__tuple__": 0}, ValueError, "reserved"),
    ([lambda: 0], TypeError, r"obj\[0\] is a function"),
])
def test_unsupported_values_are_named(tmp_path, obj, error, match):
    with pytest.raises(error, match=match):
        mc.save(obj, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_other_files_are_refused(tmp_path):
    missing = tmp_path / "missing.mc"
    with pytest.raises(CheckpointError, match="load: checkpoint .*missing.mc.* does not exist"):
        mc.load(missing)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="load: checkpoint .*notes.txt"):
        mc.load(text)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not a minicond checkpoint"):
        mc.load(other_zip)
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, pickled)       # a pickle inside a zip: never unpickled
    with pytest.raises(CheckpointError, match="load: checkpoint .*model.pt"):
        mc.load(pickled)
    good = tmp_path / "good.mc"
    mc.save({"w": np.ones(3)}, good)
    data = good.read_bytes()
    (tmp_path / "cut.mc").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="load: checkpoint .*cut.mc"):
        mc.load(tmp_path / "cut.mc")
    with pytest.raises(TypeError, match="load: path must be a str or os.PathLike, got int"):
        mc.load(3)
    with pytest.raises(TypeError, match="save: path must be a str or os.PathLike"):
        mc.save({}, None)


def test_a_training_checkpoint_loads_as_its_state(tmp_path):
    from minicond.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "train.ckpt", {"epoch": 3, "model": {"w": np.ones(2)}})
    state = mc.load(tmp_path / "train.ckpt")
    assert state["epoch"] == 3 and np.array_equal(state["model"]["w"], np.ones(2))
