"""Checkpoint files: atomic saving and checked loading of a nested training state.

Layer (docs/architecture.md): beside ``train.py``, above ``nn``/``optim``/``data``. A state is any
nesting of dicts (string keys), lists, NumPy arrays and JSON scalars: model and optimizer state
dicts, the loader position, the random generator, epoch and metrics.

File format: a zip archive (NumPy's ``.npz`` layout) holding every array as ``arrays/<k>.npy``
and ``state.json``, the state with each array replaced by ``{"__array__": k}``, plus a format
tag and the SHA-256 of the array bytes. Every member is stored uncompressed. Loading first
checks, from the zip's directory alone, that each member is stored uncompressed with its
declared size inside the file, and that each array's header declares exactly the bytes its
member holds, so a hostile file cannot make the reader inflate or allocate more than the
file's own size; then it checks the zip CRCs, the tag and the digest, so a truncated or
altered file is reported as such rather than loaded half-way.

Saving never exposes a partial file under the final name: the bytes go to a temporary file
in the same directory, are flushed and fsync'ed, and only then renamed over the target with
``os.replace`` (atomic on POSIX and Windows). A crash at any point leaves either the old file
or the new one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_atomic

FORMAT = "minicond-checkpoint/1"
_ARRAY = "__array__"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit what loads it."""


def _flatten(value: Any, arrays: list[np.ndarray], where: str) -> Any:
    """The JSON skeleton of ``value``, with arrays moved into ``arrays``."""
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {_ARRAY: len(arrays) - 1}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"save_checkpoint: key {k!r} at {where} must be a str")
            if k == _ARRAY:
                raise ValueError(f"save_checkpoint: key {_ARRAY!r} at {where} is reserved")
            out[k] = _flatten(v, arrays, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_flatten(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save_checkpoint: {where} is a {type(value).__name__}; expected dicts, "
                    "lists, NumPy arrays or JSON scalars")


def _unflatten(value: Any, arrays: dict[int, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return arrays[value[_ARRAY]]
        return {k: _unflatten(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, arrays) for v in value]
    return value


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.asarray(a, order="C").tobytes())
    return h.hexdigest()


def _serialise(state: dict[str, Any]) -> bytes:
    arrays: list[np.ndarray] = []
    skeleton = _flatten(state, arrays, "state")
    header = {"format": FORMAT, "sha256": _digest(arrays), "state": skeleton}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, a in enumerate(arrays):
            with zf.open(f"arrays/{i}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(a, order="C"), allow_pickle=False)
        zf.writestr("state.json", json.dumps(header))
    return buffer.getvalue()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    path = Path(path)
    data = _serialise(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, data)


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r} is damaged or not written by minicond: "
                           f"{what}")


def _check_member(path: Path, info: zipfile.ZipInfo, file_size: int) -> None:
    """Refuse, from the zip's directory alone, a member whose reading would inflate or
    allocate more than the file holds: minicond stores every member uncompressed, so a
    member's declared size must equal its stored size and fit inside the file."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise _damaged(path, f"member {info.filename!r} is compressed (zip method "
                             f"{info.compress_type}); minicond writes checkpoints uncompressed "
                             "(a compressed checkpoint of an older version cannot be read: "
                             "train again)")
    if info.file_size != info.compress_size:
        raise _damaged(path, f"member {info.filename!r} declares {info.file_size} bytes but "
                             f"stores {info.compress_size}")
    if info.header_offset + info.compress_size > file_size:
        raise _damaged(path, f"member {info.filename!r} declares {info.compress_size} bytes "
                             f"at offset {info.header_offset}, past the end of the "
                             f"{file_size}-byte file")


def _read_npy(path: Path, info: zipfile.ZipInfo, f: Any) -> np.ndarray:
    """An array member, its header checked against the member's size before any allocation:
    shape × itemsize must be exactly the bytes that follow the header."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise _damaged(path, f"member {info.filename!r} has .npy version {version}; "
                             "expected (1, 0) or (2, 0)")
    if dtype.hasobject:
        raise _damaged(path, f"member {info.filename!r} holds Python objects ({dtype})")
    declared = math.prod(shape) * dtype.itemsize
    held = info.file_size - f.tell()
    if declared != held:
        raise _damaged(path, f"member {info.filename!r} declares shape {shape} of {dtype} "
                             f"({declared} bytes) but holds {held} bytes of data")
    data = bytearray(declared)
    if f.readinto(data) != declared:
        raise _damaged(path, f"member {info.filename!r} is shorter than it declares")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by :func:`save_checkpoint`; :class:`CheckpointError` names the file
    and what is wrong when it is missing, truncated, corrupted or not a checkpoint.

    Nothing is inflated or allocated beyond what the file's own size allows: every member
    must be stored uncompressed with its declared size, and every array's header must
    declare exactly the bytes its member holds; anything else is refused before it is read.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            file_size = path.stat().st_size
            for info in zf.infolist():
                _check_member(path, info, file_size)
            bad = zf.testzip()  # reads every member and checks its CRC
            if bad is not None:
                raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: member {bad!r} "
                                      "fails its CRC check")
            names = set(zf.namelist())
            if "state.json" not in names:
                raise CheckpointError(f"checkpoint {str(path)!r} is not a minicond checkpoint "
                                      "(no state.json)")
            header = json.loads(zf.read("state.json"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                got = header.get("format") if isinstance(header, dict) else None
                raise CheckpointError(f"checkpoint {str(path)!r} has format {got!r}; expected "
                                      f"{FORMAT!r}")
            arrays: dict[int, np.ndarray] = {}
            for name in sorted(n for n in names if n.startswith("arrays/")):
                info = zf.getinfo(name)
                with zf.open(info) as f:
                    arrays[int(name[len("arrays/"):-len(".npy")])] = _read_npy(path, info, f)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError,
            OSError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupted and cannot "
                              f"be read ({type(err).__name__}: {err})") from None
    except MemoryError:
        raise CheckpointError(f"checkpoint {str(path)!r} needs more memory than is available "
                              "to read") from None
    ordered = [arrays[i] for i in range(len(arrays))] if set(arrays) == set(
        range(len(arrays))) else None
    if ordered is None or _digest(ordered) != header.get("sha256"):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: its arrays do not match "
                              "the recorded SHA-256 digest")
    try:
        state = _unflatten(header["state"], arrays)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: bad array reference "
                              f"{err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} does not hold a dict state")
    return state
