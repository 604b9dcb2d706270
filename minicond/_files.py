"""Writing a file so that a reader never sees it half-written, even after a crash.

Layer: a utility beside the public API (docs/architecture.md); used by ``checkpoint`` (and
so ``mc.save`` and training runs), ``plots``, ``explain`` (Markdown pages), ``viz`` (DOT
files) and ``interop`` (safetensors files).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _write_all(f: Any, data: bytes) -> None:
    """Write ``data`` in chunks (a failure part-way leaves a partial temporary file)."""
    view = memoryview(data)
    for start in range(0, len(view), 1 << 20):
        f.write(view[start:start + (1 << 20)])


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path``: a temporary file ``.NAME.*.tmp`` in the same
    folder, fsync, then ``os.replace``; any failure leaves ``path`` as it was, and an
    ``OSError`` while writing is raised again with ``path`` as its filename. Returns the
    path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        # Any failure, Ctrl-C included, drops the temporary file and leaves ``path`` as it was.
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            # A failed write (a full disk) names no file, a failed rename names the temporary
            # file: say which file it was (OSError(errno, ...) keeps the errno's subclass).
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    try:   # make the rename itself durable (POSIX; a folder cannot be opened on Windows)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path
