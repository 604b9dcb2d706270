"""Checkpoint files: round trip, atomic replacement, and clear errors for bad files."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from minicond import checkpoint
from minicond.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state(value: float) -> dict:
    return {
        "model": {"conv.weight": np.full((4, 3, 3, 3), value, np.float32),
                  "fc.bias": np.arange(5, dtype=np.float64),
                  "bn.num_batches_tracked": np.array(value, np.float32)},
        "optimizer": {"step": 7, "state": [{"exp_avg": np.ones(3)}, {}], "lr": 0.01},
        "loader": {"epoch": 2, "position": 5},
        "rng": {"state": {"state": 2**100 + 3, "inc": 2**90}, "bit_generator": "PCG64"},
        "metrics": [{"epoch": 1, "loss": 0.5, "best": None}],
        "flag": True,
    }


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _assert_same(u, v)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


def test_round_trip_keeps_arrays_dtypes_shapes_and_big_ints(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt" / "latest.ckpt", _state(1.5))
    _assert_same(load_checkpoint(path), _state(1.5))


def test_save_replaces_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "latest.ckpt"
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    assert load_checkpoint(path)["model"]["conv.weight"][0, 0, 0, 0] == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["latest.ckpt"]


def test_a_write_failing_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.ckpt"
    save_checkpoint(path, _state(1.0))
    before = path.read_bytes()

    def write_half_then_fail(f, data):
        f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_all", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, _state(2.0))
    assert path.read_bytes() == before
    _assert_same(load_checkpoint(path), _state(1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.ckpt"]


def test_an_interrupt_during_the_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.ckpt"
    save_checkpoint(path, _state(1.0))

    def interrupted(f, data):
        f.write(data[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(2.0))
    _assert_same(load_checkpoint(path), _state(1.0))


def test_truncated_file_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "c.ckpt", _state(1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(path)


def test_flipped_bytes_are_reported(tmp_path):
    path = save_checkpoint(tmp_path / "c.ckpt", _state(1.0))
    data = bytearray(path.read_bytes())
    # Alter a byte inside the first array's payload (well past its .npy header).
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("arrays/0.npy")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_other_files_are_reported(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(missing)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(text)
    npz = tmp_path / "arrays.npz"
    with open(npz, "wb") as f:
        np.savez(f, a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a minicond checkpoint"):
        load_checkpoint(npz)


def test_unsupported_values_are_rejected_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"state\.x is a set"):
        save_checkpoint(tmp_path / "c.ckpt", {"x": {1, 2}})
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint(tmp_path / "c.ckpt", [1, 2])
    assert not list(tmp_path.iterdir())
