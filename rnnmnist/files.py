"""Every file rnnmnist writes goes through here: atomic replacement (a reader, or a crash, sees the old
complete file or the new one, never a part) or appending, onto regular files only.

The rules, the same for every writer (docs: "Files rnnmnist writes"):
- a target that exists and is not a regular file (folder, FIFO, device, socket) is refused, never replaced;
- a symbolic link is followed to the regular file it names, which is replaced (the link stays); a link that
  dangles, loops or names anything else is refused;
- a run, sweep or seeds folder's own files are written only by the command that owns that folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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


class TargetRefused(RnnmnistError):
    """A path rnnmnist will not write: not a regular file, or another command's file in an rnnmnist folder."""


# The files that make a folder a run, sweep or seeds folder, and that only the command owning such a folder
# writes there (a folder holding any one of its kind's names is that kind). A run folder's pictures
# (curves.png, ...) are plot's own and not listed: plot rewrites them, and they can be drawn again.
OWNED: dict[str, tuple[str, ...]] = {
    "run": ("config.toml", "checkpoint.pt", "best.pt", "metrics.jsonl", "run.json"),
    "sweep": ("study.db", "best.toml"),
    "seeds": ("summary.json",),
}
OWNERS = {"run": "rnnmnist train", "sweep": "rnnmnist sweep", "seeds": "rnnmnist train --seeds"}

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISREG, "a file"),
)


def _kind(mode: int) -> str:
    return next((name for is_kind, name in _KINDS if is_kind(mode)), "not a plain file")


def _owner_of(real: Path) -> str | None:
    """The kind of rnnmnist folder whose own file ``real`` is, if it is one."""
    for kind, names in OWNED.items():
        if real.name in names and any(os.path.lexists(real.parent / name) for name in names):
            return kind
    return None


def target(path: Path, owner: str | None = None) -> Path:
    """The regular file that writing ``path`` creates or replaces: ``path`` itself, or the file a symbolic
    link there names (the link is kept; its target is replaced).

    Refused with :class:`TargetRefused`: anything that exists and is not a regular file
    (a folder, FIFO, device, socket) and a link that dangles, loops or names such a thing;
    and a run, sweep or seeds folder's own file (:data:`OWNED`) unless ``owner`` is that kind
    of folder, i.e. the caller is the command that writes it.
    """
    if owner is not None and owner not in OWNED:
        raise ValueError(f"unknown owner {owner!r}: one of {', '.join(OWNED)}")
    path = Path(path)
    real = path
    try:
        info = os.lstat(path)
    except OSError:  # absent (or its folder is): the write itself says what is wrong
        info = None
    if info is not None and stat.S_ISLNK(info.st_mode):
        real = Path(os.path.realpath(path))
        try:
            info = os.lstat(real)
        except OSError:
            raise TargetRefused(f"cannot write {path}: it is a symbolic link to {real}, which does not exist") from None
        if stat.S_ISLNK(info.st_mode):
            raise TargetRefused(f"cannot write {path}: it is a symbolic link that loops") from None
        if not stat.S_ISREG(info.st_mode):
            raise TargetRefused(
                f"cannot write {path}: it is a symbolic link to {real}, {_kind(info.st_mode)}, not a regular file"
            )
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise TargetRefused(f"cannot write {path}: it is {_kind(info.st_mode)}, not a regular file")
    kind = _owner_of(real)
    if kind is not None and kind != owner:
        raise TargetRefused(
            f"cannot write {path}: {real.parent} is an rnnmnist {kind} folder and {real.name} is its own file "
            f"(only {OWNERS[kind]} writes it); choose another name"
        )
    return real


class NotRegularFile(OSError):
    """What :func:`open_regular` found at a path instead of a regular file (``kind``: "a FIFO", ...)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """A descriptor of the regular file ``path`` opened with ``flags``; :class:`NotRegularFile` otherwise.

    Opened without blocking, then checked with fstat (checking first would leave a moment for the file
    to be swapped): a FIFO's reader or writer would otherwise wait for the other end forever, and a
    device would be read or written. The descriptor blocks again once it is known to be a file.
    """
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise NotRegularFile(path, _kind(kind))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text(path: Path) -> str:
    """The text of the regular file ``path`` (a link to one followed), undecodable bytes replaced.

    A FIFO or device there is refused at once instead of being waited on or read (:func:`open_regular`).
    """
    try:
        fd = open_regular(path)
    except NotRegularFile as e:
        raise TargetRefused(f"cannot read {path}: it is {e.kind}, not a regular file") from None
    except OSError as e:
        raise RnnmnistError(f"cannot read {path}: {e.strerror or e}") from None
    with open(fd, "rb") as f:
        try:
            return f.read().decode("utf-8", errors="replace")
        except OSError as e:
            raise RnnmnistError(f"cannot read {path}: {e.strerror or e}") from None


def folder_target(path: Path) -> Path:
    """``path`` as a folder for a writer that adds new files of its own to it (TensorBoard's event files):
    absent (the writer creates it) or a folder, a link to one followed; anything else is refused."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        try:
            kind = _kind(os.stat(path).st_mode)
        except OSError:
            kind = "a symbolic link that dangles or loops"
        raise TargetRefused(f"cannot write into {path}: it is {kind}, not a folder")
    return path


@contextlib.contextmanager
def atomic_path(path: Path, owner: str | None = None) -> Iterator[str]:
    """A temporary path beside the file ``path`` names (see :func:`target`) to write; when the block ends,
    the file there is fsynced and renamed over it.

    On any failure (disk full, no permission, an error or interrupt in the block) the
    temporary file is removed and the previous file, if any, is left as it was. The
    temporary is created with O_EXCL in the target's own folder (so the rename stays on one
    filesystem) and takes the replaced file's permissions, or a new file's.
    """
    path = Path(path)
    real = target(path, owner)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}{TMP_MARK}", suffix=TMP_SUFFIX)
        try:
            os.fchmod(fd, _mode_of(real))
        finally:
            os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if target(path, owner) != real:  # checked again: a FIFO or link may have appeared meanwhile
            raise TargetRefused(f"cannot write {path}: it was replaced by a symbolic link while being written")
        os.replace(tmp, real)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise RnnmnistError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    _fsync_dir(real.parent)


def _mode_of(real: Path) -> int:
    """The permissions of the file being replaced (a private file stays private), else a new file's;
    never its setuid, setgid or sticky bits."""
    try:
        return os.stat(real).st_mode & 0o777
    except OSError:
        return file_mode()


def write_atomic(path: Path, data: bytes, owner: str | None = None) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, owner) as tmp, open(tmp, "wb") as f:
        f.write(data)


def open_append(path: Path, owner: str | None = None) -> IO[str]:
    """``path`` (see :func:`target`) opened to append text, created if absent.

    Opened without blocking, so a FIFO put there meanwhile is refused rather than waited on.
    """
    real = target(path, owner)
    try:
        fd = open_regular(real, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
    except NotRegularFile as e:
        raise TargetRefused(f"cannot write {path}: it is {e.kind}, not a regular file") from None
    except OSError as e:
        raise RnnmnistError(f"cannot write {path}: {e.strerror or e}") from None
    return os.fdopen(fd, "a", encoding="utf-8")
