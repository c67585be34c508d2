"""One config trained with several seeds (``train --seeds 0,1,2``): a run folder per seed, then statistics.

OUT/seed-<N>/ is a normal run folder for each seed; OUT/summary.json holds each
seed's final figures and their mean, sample standard deviation, min and max.
Running the same command again continues: a seed whose folder holds a final
checkpoint is done, one with a resumable checkpoint is resumed, one that never
saved a checkpoint starts again; nothing else is touched. How each seed is run
(in this process, or as N processes through torchrun) is the caller's choice.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rnnmnist import jsonout
from rnnmnist.config import CONFIG_FIELDS, Config
from rnnmnist.errors import CheckpointError, RnnmnistError
from rnnmnist.experiments.peek import peek
from rnnmnist.files import write_atomic
from rnnmnist.training.lifecycle import Plan
from rnnmnist.training.rundir import RunDir

SUMMARY_FILE = "summary.json"
MAX_SEEDS = 1000  # one run folder each: more is a typo (0-99999999999), not an experiment
STATISTICS = ("test_accuracy", "test_loss", "wall_seconds")  # summarised over seeds
REPORTED = ("test_accuracy", "test_loss", "val_accuracy", "wall_seconds", "train_seconds", "steps")
# Settings that may differ between a stored seed run and the command continuing it.
NOT_COMPARED = ("seed", "precision", "device", "log_every", "save_every")


def seed_folder(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` (or ``0-4``, or both mixed) as a list of distinct seeds, in order; at most :data:`MAX_SEEDS`
    (a range is measured before it is expanded: a typo such as 0-99999999999 is refused at once)."""
    seen: dict[int, None] = {}  # an ordered set
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            values = range(int(low), int(high) + 1) if dash and low else range(int(part), int(part) + 1)
        except ValueError:
            raise RnnmnistError(f"--seeds {text}: {part!r} is not a seed (write e.g. 0,1,2 or 0-4)") from None
        if values.start < 0:
            raise RnnmnistError(f"--seeds {text}: seeds are >= 0")
        if not values:
            raise RnnmnistError(f"--seeds {text}: {part} is an empty range (write low-high)")
        if len(values) > MAX_SEEDS:
            raise RnnmnistError(f"--seeds {text}: too many seeds (max {MAX_SEEDS})")
        for seed in values:
            seen[seed] = None
            if len(seen) > MAX_SEEDS:
                raise RnnmnistError(f"--seeds {text}: too many seeds (max {MAX_SEEDS})")
    if not seen:
        raise RnnmnistError(f"--seeds {text}: no seed given")
    return list(seen)


@dataclass(frozen=True)
class SeedStep:
    """What to do for one seed."""

    seed: int
    folder: Path
    action: str  # "done" (finished before), "resume", "new", or "restart" (a folder without a checkpoint)

    def plan(self, base: Config, data_dir: Path | None, download: bool, tensorboard: bool) -> Plan:
        resume = self.action == "resume"
        return Plan(
            self.folder,
            None if resume else replace(base, seed=self.seed),
            resume=resume,
            force=self.action == "restart",
            data_dir=data_dir,
            download=download,
            tensorboard=tensorboard,
        )


def _different(stored: dict[str, Any], wanted: Config) -> list[str]:
    """Settings (apart from :data:`NOT_COMPARED`) where a stored run's config is not ``wanted``."""
    want = wanted.to_dict()
    return [
        f"{k} {stored.get(k)!r} (not {want[k]!r})"
        for k in CONFIG_FIELDS
        if k not in NOT_COMPARED and stored.get(k, want[k]) != want[k]
    ]


def plan_seeds(base: Config, seeds: list[int], out: Path, force: bool = False) -> list[SeedStep]:
    """One step per seed, from what OUT already holds. A seed folder trained with another config is refused
    (unless ``force``: then every seed starts again)."""
    steps = []
    for seed in seeds:
        folder = seed_folder(out, seed)
        run_dir = RunDir(folder)
        if force:
            steps.append(SeedStep(seed, folder, "restart" if run_dir.existing() else "new"))
            continue
        if not run_dir.checkpoint.is_file():
            steps.append(SeedStep(seed, folder, "restart" if run_dir.existing() else "new"))
            continue
        try:
            raw = peek(run_dir.checkpoint)
        except CheckpointError as e:
            raise RnnmnistError(f"seed {seed}: {e}; remove {folder} or use --force") from None
        stored = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        changed = _different(stored, base)
        if changed:
            raise RnnmnistError(
                f"{folder} was trained with another config ({', '.join(changed[:3])}); "
                f"choose another --out, or --force to train every seed again"
            )
        steps.append(SeedStep(seed, folder, "resume" if isinstance(raw.get("training"), dict) else "done"))
    return steps


def _stats(values: list[float]) -> dict[str, Any]:
    if not all(math.isfinite(v) for v in values):  # a diverged seed: no statistic means anything (NaN: null in JSON)
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": len(values), "values": values}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,  # sample standard deviation (n - 1)
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def summarise(base: Config, seeds: list[int], out: Path) -> dict[str, Any]:
    """Each seed's final figures (from its final checkpoint, read without weights) and their statistics;
    written to OUT/summary.json."""
    runs = []
    for seed in seeds:
        path = RunDir(seed_folder(out, seed)).checkpoint
        try:
            raw = peek(path)
        except CheckpointError as e:
            raise RnnmnistError(f"seed {seed} has no final result: {e}") from None
        metrics = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {}
        if isinstance(raw.get("training"), dict) or "test_accuracy" not in metrics:
            raise RnnmnistError(f"seed {seed} has not finished: {path} is not a final checkpoint")
        best = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
        runs.append(
            {
                "seed": seed,
                "folder": str(path.parent),
                **{k: metrics.get(k) for k in REPORTED},
                "best_test_accuracy": best.get("test_accuracy"),
            }
        )
    summary = {
        "config": {k: v for k, v in base.to_dict().items() if k != "seed"},
        "seeds": seeds,
        "runs": runs,
        **{key: _stats([float(r[key]) for r in runs]) for key in STATISTICS},
    }
    write_atomic(out / SUMMARY_FILE, (jsonout.dumps(summary, indent=2) + "\n").encode("utf-8"), owner="seeds")
    return summary


def run_seeds(
    base: Config,
    seeds: list[int],
    out: Path,
    train_one: Callable[[SeedStep, Plan], None],
    force: bool = False,
    data_dir: Path | None = None,
    download: bool = True,
    tensorboard: bool = False,
) -> tuple[list[SeedStep], dict[str, Any]]:
    """Train every seed not done yet with ``train_one`` (which raises when a run fails or is interrupted),
    then summarise. Returns the steps taken and the summary."""
    steps = plan_seeds(base, seeds, out, force)
    for step in steps:
        if step.action != "done":
            train_one(step, step.plan(base, data_dir, download, tensorboard))
    return steps, summarise(base, seeds, out)
