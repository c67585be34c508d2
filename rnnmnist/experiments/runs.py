"""What run folders hold, read fast: for ``rnnmnist runs`` (a table of many) and ``rnnmnist compare`` (a few).

Reads only config.toml, the last line of metrics.jsonl, and each checkpoint's plain
part through :func:`rnnmnist.experiments.peek.peek` (no weights, no torch), so hundreds of
folders list in well under a second. A run's status:

finished   checkpoint.pt is final (it holds the test metrics)
running    a process holds the folder's lock now (Linux: seen in /proc/locks, without taking the lock)
resumable  checkpoint.pt is resumable: interrupted, stopped early (a sweep's pruner), or killed after a save
failed     no usable checkpoint: killed or diverged before any save, or never trained a step
damaged    a file it holds cannot be read: config.toml is not TOML, checkpoint.pt is not a
           checkpoint, or a file is not a regular file (a FIFO is never opened: it could block)

A damaged folder is listed with the reason (``problem``), never aborts the listing,
and sorts last.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnmnist import config, jsonout
from rnnmnist.errors import BadValueError, CheckpointError, RnnmnistError, one_line
from rnnmnist.experiments.peek import peek
from rnnmnist.files import NotRegularFile, open_regular

STATUSES = ("finished", "running", "resumable", "failed", "damaged")
MAX_CONFIG_BYTES = 1 << 20  # a run's config.toml is under 2 KB
# Always differs from the defaults in a run folder ("auto" is stored resolved), so it says nothing.
NOT_IN_DIFF = ("precision",)
SKIPPED_FOLDERS = ("tensorboard", "__pycache__")
MAX_DEPTH = 4  # DIR/sweep/trials/trial-0001 is three levels down
TAIL_BYTES = 4096  # enough for the last line of metrics.jsonl
# Fields of a row, for --sort and --where, and in the order of the JSON records.
SORT_KEYS = (
    "name",
    "date",
    "status",
    "steps",
    "test_accuracy",
    "test_loss",
    "val_accuracy",
    "best_test_accuracy",
    "best_val_accuracy",
    "wall_seconds",
    "train_seconds",
)
BEST_FIRST = ("test_accuracy", "val_accuracy", "best_test_accuracy", "best_val_accuracy", "steps", "date")


@dataclass
class RunInfo:
    """One run folder, as read without loading weights."""

    name: str  # its path relative to the folder listed
    path: Path
    status: str
    date: float | None = None  # when it started: config.toml's modification time
    config: dict[str, Any] = field(default_factory=dict)  # config.toml's keys; {} when unreadable
    steps: int | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    val_accuracy: float | None = None
    best_test_accuracy: float | None = None  # best.pt's, measured at the end of a finished run
    best_val_accuracy: float | None = None
    wall_seconds: float | None = None  # of the process that finished it
    train_seconds: float | None = None  # training steps only, across resumes
    problem: str | None = None  # why a folder is failed, or what could not be read

    @property
    def diff(self) -> dict[str, Any]:
        """Config keys whose value differs from rnnmnist's defaults."""
        defaults = config.DEFAULTS.to_dict()
        return {
            k: v for k, v in self.config.items() if k not in NOT_IN_DIFF and (k not in defaults or defaults[k] != v)
        }

    def value(self, key: str) -> Any:
        """A row field or a config key (a config key a run does not store has its default)."""
        if key in SORT_KEYS:
            return getattr(self, key)
        return self.config.get(key, getattr(config.DEFAULTS, key, None))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values: a TOML date in config.toml as its ISO text, a NaN as None."""
        record = {key: getattr(self, key) for key in SORT_KEYS}
        record["date"] = _iso(self.date)
        return jsonout.plain(
            {
                **record,
                "path": str(self.path),
                "config_diff": self.diff,
                "config": self.config,
                "problem": self.problem,
            }
        )


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stamp))


def _locked_inodes() -> set[tuple[int, int, int]]:
    """(major, minor, inode) of every file flock-ed now, from /proc/locks (empty where there is none)."""
    held = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "FLOCK":
                with contextlib.suppress(ValueError):
                    major, minor, inode = parts[5].split(":")
                    held.add((int(major, 16), int(minor, 16), int(inode)))
    return held


def _is_locked(folder: Path, held: set[tuple[int, int, int]]) -> bool:
    try:
        st = folder.stat()
    except OSError:
        return False
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held


def _last_line(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The last complete JSON line of metrics.jsonl, read from its end; and what is wrong with the file."""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except NotRegularFile:
        return None, "metrics.jsonl is not a regular file"
    except OSError:
        return None, None  # no metrics.jsonl (or gone): nothing logged yet
    for line in reversed(tail.splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                return record, None
    return None, None


def _number(value: Any) -> float | None:
    """A finite number as a float; None for anything else (a bool, a NaN, an int no float holds)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    """A step count: an int >= 0, not a bool (``true`` is no step)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            return {}, f"config.toml is over {MAX_CONFIG_BYTES:,} bytes: not a run's config"
        values = tomllib.loads(text.decode("utf-8"))
    except NotRegularFile:
        return {}, "config.toml is not a regular file"
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return {}, f"config.toml unreadable: {one_line(e, 100)}"
    return {k: v for k, v in values.items() if not isinstance(v, dict)}, None


def read_run(folder: Path, name: str | None = None, held: set[tuple[int, int, int]] | None = None) -> RunInfo:
    """One run folder's row; never raises for a damaged folder (status damaged, ``problem`` says why)."""
    held = _locked_inodes() if held is None else held
    cfg_file, ckpt_file = folder / "config.toml", folder / "checkpoint.pt"
    cfg, problem = _read_config(cfg_file)
    info = RunInfo(name=name or str(folder), path=folder, status="failed", config=cfg, problem=problem)
    with contextlib.suppress(OSError):
        info.date = cfg_file.stat().st_mtime
    last, metrics_problem = _last_line(folder / "metrics.jsonl")
    problem = problem or metrics_problem
    if last is not None:
        info.steps = _count(last.get("step"))
        info.train_seconds = _number(last.get("elapsed"))
    if os.path.lexists(ckpt_file):  # a FIFO or a dangling link is there, and damaged: peek refuses it
        try:
            _from_checkpoint(info, peek(ckpt_file))
        except CheckpointError as e:
            problem = problem or str(e)
    elif problem is None:
        info.problem = "no checkpoint.pt: stopped before its first save" if info.steps else "never trained a step"
    if info.status != "finished" and info.best_val_accuracy is None and (folder / "best.pt").is_file():
        with contextlib.suppress(CheckpointError):  # an extra figure: without it the row is still right
            metrics = peek(folder / "best.pt").get("metrics")
            info.best_val_accuracy = _number(metrics.get("val_accuracy")) if isinstance(metrics, dict) else None
    if problem is not None:
        info.status, info.problem = "damaged", problem
    if _is_locked(folder, held):
        info.status = "running"
    return info


def _from_checkpoint(info: RunInfo, raw: dict[str, Any]) -> None:
    metrics = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {}
    training = raw.get("training")
    if isinstance(training, dict):
        info.status = "resumable"
        info.steps = _count(training.get("step")) if _count(training.get("step")) is not None else info.steps
        info.train_seconds = _number(training.get("train_seconds")) or info.train_seconds
        best = _number(training.get("best_val_accuracy"))
        info.best_val_accuracy = best if best is not None and best >= 0 else None
        return
    info.status = "finished"
    info.steps = _count(metrics.get("steps")) if _count(metrics.get("steps")) is not None else info.steps
    for key in ("test_accuracy", "test_loss", "val_accuracy", "wall_seconds", "train_seconds"):
        setattr(info, key, _number(metrics.get(key)))
    best = metrics.get("best")
    if isinstance(best, dict):
        info.best_test_accuracy = _number(best.get("test_accuracy"))
        info.best_val_accuracy = _number(best.get("val_accuracy"))


def find_runs(root: Path) -> list[RunInfo]:
    """Every run folder (one holding config.toml) under ``root``, ``root`` itself included, by name."""
    if not root.is_dir():
        raise RnnmnistError(f"{root}: no such folder")
    held = _locked_inodes()
    found: list[RunInfo] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "config.toml").is_file():
            found.append(read_run(folder, str(folder.relative_to(root)) if folder != root else folder.name, held))
            return  # runs do not nest
        if depth >= MAX_DEPTH:
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and entry.name not in SKIPPED_FOLDERS:
                    walk(Path(entry.path), depth + 1)

    walk(root, 0)
    return found


def _parse_word(key: str, text: str) -> Any:
    """A --where value in the key's type."""
    if key == "status":
        if text not in STATUSES:
            raise BadValueError(f"--where status={text}: status is one of {', '.join(STATUSES)}")
        return text
    kind = config.FIELD_TYPES[key]
    value: Any = text
    try:
        if kind is bool:
            value = {"true": True, "false": False}.get(text.lower(), text)
        elif kind is int:
            value = int(text)
        elif kind is float:
            value = float(text)
        return config.check_value(key, value)
    except (ValueError, config.ConfigError) as e:
        raise BadValueError(f"--where {key}={text}: {e}") from None


def parse_where(conditions: tuple[str, ...]) -> list[tuple[str, Any]]:
    """``key=value`` conditions (config keys or status), checked against their types."""
    parsed = []
    for condition in conditions:
        key, sep, text = condition.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise BadValueError(f"--where {condition}: write key=value, e.g. --where cell=gru")
        if key != "status" and key not in config.CONFIG_FIELDS:
            raise BadValueError(f"--where {condition}: {key!r} is not a config key or status")
        parsed.append((key, _parse_word(key, text.strip())))
    return parsed


def select(runs: list[RunInfo], where: list[tuple[str, Any]], sort: str | None, reverse: bool = False) -> list[RunInfo]:
    """The runs meeting every condition, sorted by ``sort`` (accuracies, steps and dates best or latest first;
    runs without a value last)."""
    kept = [r for r in runs if all(r.value(k) == v for k, v in where)]
    if sort is None:
        return kept[::-1] if reverse else kept
    key = sort.replace("-", "_")
    if key not in SORT_KEYS and key not in config.CONFIG_FIELDS:
        raise BadValueError(f"--sort {sort}: sort by one of {', '.join(SORT_KEYS)} or a config key")
    descending = (key in BEST_FIRST) != reverse
    # Values of one kind compare; a damaged file's config may hold any kind. So: numbers, then text, then
    # anything else (by its JSON), each sorted; then runs without a value (or a NaN); damaged runs last.
    groups: list[list[tuple[Any, RunInfo]]] = [[], [], [], [], []]
    for r in kept:
        value = r.value(key)
        if r.status == "damaged":
            groups[4].append((0, r))
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            groups[3].append((0, r))
        elif isinstance(value, (int, float)):
            groups[0].append((value, r))
        elif isinstance(value, str):
            groups[1].append((value, r))
        else:
            groups[2].append((jsonout.dumps(value, sort_keys=True), r))
    ordered = [sorted(g, key=lambda pair: pair[0], reverse=descending) for g in groups[:3]] + groups[3:]
    return [r for group in ordered for _, r in group]


# --- compare
@dataclass
class Comparison:
    runs: list[RunInfo]
    differing: list[str]  # config keys whose values are not all the same

    def to_json(self) -> dict[str, Any]:
        runs = [{**r.to_json(), "config_differing": {k: r.value(k) for k in self.differing}} for r in self.runs]
        return jsonout.plain({"differing_keys": self.differing, "runs": runs})


def compare(folders: list[Path]) -> Comparison:
    """The runs in ``folders``, and the config keys on which they differ."""
    runs = []
    for folder in folders:
        if not (folder / "config.toml").is_file():
            raise RnnmnistError(f"{folder} holds no config.toml: is it an rnnmnist run folder?")
        runs.append(read_run(folder, str(folder)))
    keys = list(config.CONFIG_FIELDS) + sorted({k for r in runs for k in r.config} - set(config.CONFIG_FIELDS))
    differing = [k for k in keys if len({jsonout.dumps(r.value(k), sort_keys=True) for r in runs}) > 1]
    return Comparison(runs, differing)
