"""The run folder (``--out``): what it holds, and the rules for starting, overwriting and resuming one.

config.toml     the resolved config, written first: even a killed run says what it was
metrics.jsonl   a line per log step (and per validation pass), flushed as written
checkpoint.pt   resumable while training (--save-every, interrupts), final at the end;
                always replaced atomically
best.pt         with --eval-every: the model with the best validation accuracy
run.json        where the run's data came from, so --resume and plot need no --data-dir

rnnmnist never removes a file it did not write: ``--force`` removes the names
listed in :data:`OWN_FILES` (and its own temporary files), nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

from rnnmnist.config import Config, to_toml
from rnnmnist.errors import BadValueError, RnnmnistError
from rnnmnist.files import OWNED, is_leftover, open_append, read_text, target, write_atomic

RUN_FILES = ("checkpoint.pt", "best.pt", "config.toml", "metrics.jsonl")
TRAINING_FILES = OWNED["run"]  # what training, new or resumed, writes
# Everything any rnnmnist command writes into a run folder (plot's PNGs, --tensorboard's folder).
OWN_FILES = (*TRAINING_FILES, "curves.png", "confusion.png", "mistakes.png", "reading.png")
OWN_FOLDERS = ("tensorboard",)


class MetricsLog:
    """metrics.jsonl, opened for appending; each line is flushed so a killed run keeps its curve."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] = open_append(path, owner="run")

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            raise RnnmnistError(f"cannot write {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_out_path(path: Path, given: str | None = None) -> None:
    """Refuse run folders whose overwriting (--force) could hit the user's own files: an empty path,
    the current folder or one above it, the filesystem root, the home folder. A usage error."""
    if (given if given is not None else str(path)).strip() == "":
        raise BadValueError("--out is empty; give a folder for the run, e.g. --out runs/first")
    resolved = path.expanduser().resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise BadValueError(f"--out {path} is the current folder or one above it; give a folder of its own")
    if resolved == Path(resolved.anchor) or resolved == home:
        raise BadValueError(f"--out {path} is {'your home folder' if resolved == home else 'the root'}")


class RunLock:
    """An exclusive lock on a run folder for the life of the process that writes it: flock on the
    folder itself (no lock file to leave behind).

    The kernel releases it when the process ends, however it ends, so a killed run
    never blocks the next. On systems without ``fcntl`` there is no lock.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise RnnmnistError(f"cannot lock {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RnnmnistError(
                f"{self.path} is in use by another rnnmnist process that writes this run; "
                f"wait for it to finish or stop it first"
            ) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class RunDir:
    """A run folder's files, and its lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = RunLock(self.path)
        self.created: list[Path] = []  # files this process created, removed again if no step is trained
        self.made_folders: list[Path] = []  # the run folder and parents this process created, deepest first

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def info_file(self) -> Path:
        return self.path / "run.json"

    def last_good(self) -> str:
        """Where a run that went wrong (diverged, or stopped with non-finite weights) left its last good state."""
        if self.checkpoint.exists():
            return f"the last good checkpoint is kept in {self.checkpoint}"
        return "no checkpoint had been written (use --save-every to keep some)"

    def existing(self) -> list[str]:
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def never_trained(self) -> bool:
        """A start that stopped before its first step: a config, no checkpoint, no logged step."""
        if self.checkpoint.exists() or self.best.exists():
            return False
        with contextlib.suppress(OSError):
            return not self.metrics_file.exists() or self.metrics_file.stat().st_size == 0
        return False

    def _check_own_names(self, names: tuple[str, ...]) -> None:
        """Refuse, before anything is removed or written, a run file's name held by something rnnmnist
        does not write (a folder, FIFO, device or socket, or a link that dangles or names one): --force
        removes only what a run wrote, and a run writes only regular files."""
        for name in names:
            if os.path.lexists(self.path / name):
                target(self.path / name, owner="run")

    def _remove_leftovers(self) -> None:
        # A process killed mid-write leaves its temporary file (never the target) behind.
        for path in self.path.iterdir():
            if is_leftover(path):
                with contextlib.suppress(OSError):
                    path.unlink()

    def _remove_own_files(self) -> None:
        for name in OWN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for name in OWN_FOLDERS:
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)

    def prepare_new(self, force: bool) -> None:
        """Create and lock the folder for a new run; one that already holds a run needs ``force``
        (a run that never trained a step is replaced without it)."""
        check_out_path(self.path)
        self._check_own_names(OWN_FILES)  # a new run removes them all
        existing = self.existing()
        if existing and not force and not self.never_trained():
            raise RnnmnistError(
                f"{self.path} already holds a run ({', '.join(existing)}); continue it with --resume "
                f"{self.path}, overwrite it with --force, or choose another --out"
            )
        self.made_folders = list(itertools.takewhile(lambda p: not p.exists(), (self.path, *self.path.parents)))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
            if existing or force:  # the old run goes, so the folder never mixes two runs
                self._remove_own_files()
                self._remove_leftovers()
        except OSError as e:
            raise RnnmnistError(f"cannot prepare run folder {self.path}: {e.strerror or e}") from None

    def require_checkpoint(self) -> None:
        """A folder to resume must exist and hold a checkpoint.pt."""
        if not self.path.is_dir():
            raise RnnmnistError(f"--resume {self.path}: no such run folder")
        if not self.checkpoint.is_file():
            raise RnnmnistError(
                f"--resume {self.path}: no checkpoint.pt there to resume from "
                f"(a run writes one every --save-every steps and when interrupted)"
            )

    def prepare_resume(self) -> None:
        self.require_checkpoint()
        self._check_own_names(TRAINING_FILES)  # a resumed run writes these and leaves plot's pictures
        self.lock.acquire()
        self._remove_leftovers()

    def write_config(self, cfg: Config) -> None:
        self._write(self.config_file, to_toml(cfg).encode("utf-8"))

    def write_info(self, data_dir: Path) -> None:
        self._write(self.info_file, (json.dumps({"data_dir": str(Path(data_dir).resolve())}) + "\n").encode())

    def _write(self, path: Path, data: bytes) -> None:
        if not path.exists():
            self.created.append(path)
        write_atomic(path, data, owner="run")

    def remembered_data_dir(self) -> Path | None:
        """The data folder the run used, if it said so."""
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            return Path(json.loads(self.info_file.read_text(encoding="utf-8"))["data_dir"])
        return None

    def forget_created(self) -> None:
        """Remove what this process created: a start that trained no step leaves nothing behind (the folders it
        made go too, while empty: whatever else was put there stays)."""
        for path in self.created:
            with contextlib.suppress(OSError):
                path.unlink()
        self.created.clear()
        for folder in self.made_folders:
            with contextlib.suppress(OSError):  # not empty: someone else's files are there
                folder.rmdir()
        self.made_folders.clear()

    def open_metrics(self, keep_through_step: int = 0) -> MetricsLog:
        """The metrics log, keeping only lines up to ``keep_through_step`` (those a resumed run did not redo)."""
        kept: list[str] = []
        if keep_through_step > 0 and os.path.lexists(self.metrics_file):
            for line in read_text(self.metrics_file).splitlines():  # a FIFO there is refused, not waited on
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if json.loads(line)["step"] <= keep_through_step:
                        kept.append(line)
        self._write(self.metrics_file, "".join(line + "\n" for line in kept).encode("utf-8"))
        return MetricsLog(self.metrics_file)
