"""Interrupted runs of a config: the resumable run folders that ``rnnmnist train``, typed again, points to.

Read as ``rnnmnist runs`` reads folders (config.toml, the checkpoint's plain part, no weights),
so looking costs no torch import and little time, even where many runs are kept.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from rnnmnist.config import Config, ConfigError, from_stored, read_toml
from rnnmnist.errors import CheckpointError
from rnnmnist.experiments.peek import peek
from rnnmnist.experiments.runs import read_run


@dataclass(frozen=True)
class InterruptedRun:
    """A resumable run folder: where, and how far it got."""

    folder: Path
    step: int
    total: int | None  # None when its length cannot be read without loading the data


def interrupted_runs(parent: Path, cfg: Config) -> list[InterruptedRun]:
    """Resumable runs of ``cfg`` in the folders directly under ``parent`` (where runs go by default),
    latest first: a run stopped by Ctrl-C that the same command, typed again, would otherwise not mention.

    ``cfg`` may leave precision "auto"; a stored run has it resolved, so then any precision matches.
    Folders that are damaged, held by a running process or of another config are skipped.
    """
    found = []
    try:
        folders = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
    except OSError:
        return []
    for folder in folders:
        if not (folder / "config.toml").is_file() or not (folder / "checkpoint.pt").is_file():
            continue
        try:
            stored, notes = from_stored(read_toml(folder / "config.toml"))  # as --resume would read it
        except ConfigError:
            continue
        if notes or (stored != cfg and not (cfg.precision == "auto" and replace(stored, precision="auto") == cfg)):
            continue
        info = read_run(folder)
        if info.status != "resumable" or info.steps is None:
            continue
        found.append(InterruptedRun(folder, info.steps, _total_steps(stored, folder)))
    return found


def _total_steps(cfg: Config, folder: Path) -> int | None:
    if cfg.epochs == 0:
        return cfg.training_steps(0)  # a length in examples does not depend on the data
    with contextlib.suppress(CheckpointError, KeyError, TypeError, AttributeError, IndexError):
        shape = peek(folder / "checkpoint.pt")["training"]["data_order"]["permutation"].shape
        return cfg.training_steps(int(shape[0]))
    return None
