"""Atomic file writes: a reader (or a crash) sees the old complete file or the new one, never a part."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rnnmnist.errors import RnnmnistError

# Temporary files rnnmnist writes end like this, so it can recognise (and remove) only its own leftovers.
TMP_MARK = ".rnnmnist-"
TMP_SUFFIX = ".tmp"


@functools.cache
def file_mode() -> int:
    """The permissions open() would give a new file (0666 less the umask); read once, on first use.

    Linux shows the umask in /proc; elsewhere it can only be read by setting it,
    which is process-wide and so done once, at once undone.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def is_leftover(path: Path) -> bool:
    """A temporary file of rnnmnist's that a killed process left behind."""
    return path.name.startswith(".") and TMP_MARK in path.name and path.name.endswith(TMP_SUFFIX)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary path beside ``path`` to write; when the block ends, the file there is fsynced
    and renamed over ``path``.

    On any failure (disk full, no permission, an error in the block) the temporary
    file is removed and the previous ``path``, if any, is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}", suffix=TMP_SUFFIX)
        os.fchmod(fd, file_mode())
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise RnnmnistError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
