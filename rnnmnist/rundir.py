"""The run folder (``--out``): what it holds, and the rules for starting, overwriting and resuming one.

config.toml     the resolved config, written first: even a killed run says what it was
metrics.jsonl   a line per log step (and per validation pass), flushed as written
checkpoint.pt   resumable while training (--save-every, interrupts), final at the end;
                always replaced atomically
best.pt         with --eval-every: the model with the best validation accuracy
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import IO, Any

from rnnmnist.config import Config, to_toml
from rnnmnist.errors import RnnmnistError
from rnnmnist.files import write_atomic

RUN_FILES = ("checkpoint.pt", "best.pt", "config.toml", "metrics.jsonl")


class MetricsLog:
    """metrics.jsonl, opened for appending; each line is flushed so a killed run keeps its curve."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file: IO[str] = path.open("a", encoding="utf-8")
        except OSError as e:
            raise RnnmnistError(f"cannot write {path}: {e.strerror or e}") from None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            raise RnnmnistError(f"cannot write {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def existing(self) -> list[str]:
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def _remove_stale_temporaries(self) -> None:
        # A process killed mid-write leaves its temporary file (never the target) behind.
        for stale in self.path.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def prepare_new(self, force: bool) -> None:
        """Create the folder for a new run; one that already holds a run needs ``force``."""
        existing = self.existing()
        if existing and not force:
            raise RnnmnistError(
                f"{self.path} already holds a run ({', '.join(existing)}); continue it with --resume "
                f"{self.path}, overwrite it with --force, or choose another --out"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for name in existing:  # --force: the old run goes, so the folder never mixes two runs
                (self.path / name).unlink()
        except OSError as e:
            raise RnnmnistError(f"cannot prepare run folder {self.path}: {e.strerror or e}") from None
        self._remove_stale_temporaries()

    def prepare_resume(self) -> None:
        if not self.path.is_dir():
            raise RnnmnistError(f"--resume {self.path}: no such run folder")
        if not self.checkpoint.is_file():
            raise RnnmnistError(
                f"--resume {self.path}: no checkpoint.pt there to resume from "
                f"(a run writes one every --save-every steps and when interrupted)"
            )
        self._remove_stale_temporaries()

    def write_config(self, cfg: Config) -> None:
        write_atomic(self.config_file, to_toml(cfg).encode("utf-8"))

    def open_metrics(self, keep_through_step: int = 0) -> MetricsLog:
        """The metrics log, keeping only lines up to ``keep_through_step`` (those a resumed run did not redo)."""
        kept: list[str] = []
        if keep_through_step > 0 and self.metrics_file.exists():
            for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if json.loads(line)["step"] <= keep_through_step:
                        kept.append(line)
        write_atomic(self.metrics_file, "".join(line + "\n" for line in kept).encode("utf-8"))
        return MetricsLog(self.metrics_file)
