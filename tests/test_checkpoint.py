"""Checkpoint files: round trip, atomic replacement, and clear errors for bad files."""

from __future__ import annotations

import io
import re
import struct
import zipfile

import numpy as np
import pytest

from minicond import _files
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

    monkeypatch.setattr(_files, "_write_all", write_half_then_fail)
    with pytest.raises(OSError, match="No space left") as error:
        save_checkpoint(path, _state(2.0))
    assert error.value.errno == 28 and error.value.filename == str(path)
    assert path.read_bytes() == before
    _assert_same(load_checkpoint(path), _state(1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.ckpt"]


def test_an_interrupt_during_the_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.ckpt"
    save_checkpoint(path, _state(1.0))

    def interrupted(f, data):
        f.write(data[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(_files, "_write_all", interrupted)
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


def _rezip(src, dst, replace=None, compression=zipfile.ZIP_STORED):
    """Copy the checkpoint ``src`` to ``dst``, member by member, with ``replace[name]`` as
    the new bytes of a member and ``compression`` for every member."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for name in zin.namelist():
            zout.writestr(name, replace.get(name, zin.read(name)))
    return dst


def _set_central_size(path, member: str, size: int) -> None:
    """Overwrite the uncompressed size that the central directory declares for ``member``."""
    data = bytearray(path.read_bytes())
    start = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    while data[start + 46:start + 46 + len(member)] != member.encode():
        start = data.rfind(b"PK\x01\x02", 0, start)
    data[start + 24:start + 28] = struct.pack("<I", size)
    path.write_bytes(bytes(data))


def test_a_compressed_member_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """A small file whose state.json inflates to 64 MiB (a zip bomb) is refused from its
    declared sizes alone: no member is read."""
    good = save_checkpoint(tmp_path / "good.ckpt", _state(1.0))
    with zipfile.ZipFile(good) as zf:
        header = zf.read("state.json")
    bomb = _rezip(good, tmp_path / "bomb.ckpt", {"state.json": header + b" " * (64 << 20)},
                  compression=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20

    def no_reading(*args, **kwargs):
        raise AssertionError("a member was read")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_reading)
    with pytest.raises(CheckpointError, match=r"checkpoint '.*bomb\.ckpt' is damaged or not "
                                              r"written by minicond: member 'arrays/0\.npy' "
                                              r"is compressed"):
        load_checkpoint(bomb)


def test_a_member_declaring_more_than_it_stores_is_refused(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.ckpt", _state(1.0))
    _set_central_size(path, "state.json", 2**31)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("member read"))
    with pytest.raises(CheckpointError, match=r"member 'state\.json' declares 2147483648 "
                                              r"bytes but stores \d+"):
        load_checkpoint(path)


@pytest.mark.parametrize("shape", [(10**12,), (2,)], ids=["huge", "short"])
def test_an_npy_header_that_does_not_fit_its_member_is_refused(tmp_path, shape):
    """A header declaring 10^12 elements (4 TB) in a 3-element member: refused before any
    allocation, as is one declaring fewer elements than the member holds."""
    path = save_checkpoint(tmp_path / "c.ckpt", {"a": np.ones(3, np.float32)})
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    member = buffer.getvalue() + np.ones(3, np.float32).tobytes()
    bad = _rezip(path, tmp_path / "bad.ckpt", {"arrays/0.npy": member})
    with pytest.raises(CheckpointError, match=r"damaged .*: member 'arrays/0\.npy' declares "
                                              rf"shape {re.escape(str(shape))} of float32"):
        load_checkpoint(bad)


def test_a_directory_is_reported_as_such(tmp_path):
    (tmp_path / "latest.ckpt").mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path / "latest.ckpt")
