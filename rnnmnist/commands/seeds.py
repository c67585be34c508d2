"""``rnnmnist train --seeds 0,1,2`` / ``--repeat N``: the command-line side of :mod:`rnnmnist.experiments.seeds`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from rnnmnist import config
from rnnmnist.cli.options import Common


def seeds_from_flags(seeds: str | None, repeat: int | None, cfg: config.Config, typed: dict[str, Any]) -> list[int]:
    """The seeds --seeds or --repeat ask for (--repeat N: N seeds from --seed, default 0)."""
    from rnnmnist.errors import RnnmnistError
    from rnnmnist.experiments.seeds import MAX_SEEDS, parse_seeds

    if seeds is not None and repeat is not None:
        raise click.UsageError("give --seeds or --repeat, not both")
    if seeds is not None and "seed" in typed:
        raise click.UsageError("give --seed or --seeds, not both (--repeat N starts at --seed)")
    if repeat is not None:
        if repeat > MAX_SEEDS:
            raise click.BadParameter(f"--repeat {repeat}: too many seeds (max {MAX_SEEDS})", param_hint="--repeat")
        return list(range(cfg.seed, cfg.seed + repeat))
    try:
        return parse_seeds(seeds or "")
    except RnnmnistError as e:
        raise click.BadParameter(str(e), param_hint="--seeds") from None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Child processes' output to stderr, so stdout holds only the summary JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def train_seeds(
    common: Common, cfg: config.Config, seeds: list[int], out: Path, force: bool, tb: bool, nproc: int | None
) -> None:
    from rnnmnist import process
    from rnnmnist.experiments.seeds import run_seeds
    from rnnmnist.training import lifecycle
    from rnnmnist.training.events import TrainingInterrupted

    ui = common.ui()

    def train_one(step: Any, plan: Any) -> None:
        what = "resuming" if step.action == "resume" else "training"
        if ui.verbosity >= 0:
            ui.line(f"seed {step.seed} ({seeds.index(step.seed) + 1} of {len(seeds)}): {what} in {step.folder}")
        if nproc and nproc > 1:
            from rnnmnist.cli.ranks import launch_ranks

            quiet = dataclasses.replace(common, as_json=False)
            with _stdout_to_stderr() if common.as_json else contextlib.nullcontext():
                code = launch_ranks(nproc, quiet, plan.config, plan.out, plan.resume, plan.force, tb)
            if code:
                sys.exit(code)
            return
        with ui.training() as display:
            lifecycle.train(plan, display, time.perf_counter())

    try:
        with process.training():
            steps, summary = run_seeds(cfg, seeds, out, train_one, force, common.data_dir, common.download, tb)
    except TrainingInterrupted as e:
        again = f"rnnmnist train --seeds {','.join(map(str, seeds))} --out {out} ..."
        raise TrainingInterrupted(
            f"{e}; to continue every seed, run the same command again ({again})", e.signum
        ) from None
    done_before = [s.seed for s in steps if s.action == "done"]
    if done_before:
        ui.detail(f"already finished before: seed {', '.join(map(str, done_before))}")
    if common.as_json:
        ui.emit_json({**summary, "summary_file": str(out / "summary.json")})
    render_summary(ui, summary, out)


def render_summary(ui: Any, summary: dict[str, Any], out: Path) -> None:
    """The seeds' table and the summary file's name, through the Ui (:meth:`rnnmnist.cli.ui.Ui.seeds_summary`)."""
    ui.seeds_summary(summary, out)
