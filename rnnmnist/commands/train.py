"""``rnnmnist train``: settle the config (defaults < --config < environment < flags), then run it."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from rnnmnist import config
from rnnmnist.cli.options import (
    Common,
    GivenPath,
    config_options,
    data_options,
    flags_by_source,
    output_options,
    pass_common,
)
from rnnmnist.cli.ranks import launch_ranks
from rnnmnist.commands.presets import ConfigFile

EXAMPLES = """\b
Examples:
  rnnmnist train --iters 100000                  # 781 steps, as the notebook
  rnnmnist train --config seed                   # the notebook exactly (see rnnmnist presets)
  rnnmnist train --config seed --iters 200000
  rnnmnist train --epochs 5 --out runs/first --json > result.json
  rnnmnist train --config runs/first/config.toml --out runs/again   # rerun a run
  rnnmnist train --resume runs/first              # continue an interrupted run
"""


def resolve_config(config_file: Path | None, from_env: dict[str, Any], typed: dict[str, Any]) -> config.Config:
    """Defaults < --config FILE < RNNMNIST_TRAIN_* environment < flags typed on the command line.

    Within one source, iters and epochs exclude each other; a higher source's
    iters overrides a lower one's epochs (and its epochs a lower one's iters).
    """
    sources = []
    if config_file is not None:
        sources.append((str(config_file), config.read_toml(config_file)))
    for name, values in (("environment", from_env), ("command line", typed)):
        if "iters" in values and "epochs" in values:
            where = "flags" if name == "command line" else "RNNMNIST_TRAIN_ITERS and RNNMNIST_TRAIN_EPOCHS"
            raise click.UsageError(f"give --iters or --epochs, not both ({where})")
        sources.append((name, config.length_override(values)))
    return config.build(*sources)


def _out_folder(value: str | None) -> Path | None:
    """--out, refused where --force could remove the user's own files (checked before any work)."""
    if value is None:
        return None
    from rnnmnist.errors import BadValueError
    from rnnmnist.training.rundir import check_out_path

    try:
        check_out_path(Path(value) if value.strip() else Path(""), given=value)
    except BadValueError as e:
        raise click.BadParameter(str(e)) from None
    return Path(value)


def _default_out_dir() -> Path:
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


@click.command(epilog=EXAMPLES)
@click.option(
    "--config",
    "config_file",
    type=ConfigFile("train"),
    help="A preset's name (seed, best, ...: see rnnmnist presets) or a TOML file of config keys; "
    "flags given here override it.",
)
@config_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    callback=lambda ctx, param, value: _out_folder(value),
    help="Run folder for checkpoint.pt, config.toml, metrics.jsonl. [default: runs/DATE-TIME]",
)
@click.option("--force", is_flag=True, help="Replace a run already in --out (only the files rnnmnist wrote there).")
@click.option(
    "--resume",
    type=GivenPath(file_okay=False, path_type=Path),
    help="Continue the run in this folder from its last checkpoint, with its stored config and data folder.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config as TOML (with --json: JSON) and exit.")
@click.option("--tensorboard", is_flag=True, help="Also log to OUT/tensorboard/ (needs rnnmnist[tensorboard]).")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train with N processes on this machine (DistributedDataParallel via torchrun's launcher).",
)
@click.option(
    "--seeds",
    metavar="LIST",
    help="Train once per seed (e.g. 0,1,2 or 0-4) into OUT/seed-N/, then summarise in OUT/summary.json; "
    "the same command again continues the seeds not finished; at most 1000 seeds.",
)
@click.option(
    "--repeat", type=click.IntRange(min=1), help="Like --seeds with N seeds from --seed (default 0; at most 1000)."
)
@data_options
@output_options
@pass_common
@click.pass_context
def train(
    ctx: click.Context,
    common: Common,
    config_file: Path | None,
    out: Path | None,
    force: bool,
    resume: Path | None,
    print_config: bool,
    tensorboard: bool,
    nproc: int | None,
    seeds: str | None,
    repeat: int | None,
    **flags: Any,
) -> None:
    """Train a model on MNIST and write a run folder.

    Training length counts examples like the notebook (--iters), or passes over
    the 55,000 training images (--epochs). At the end the model is evaluated on
    all 10,000 test images. Ctrl-C (or SIGTERM) stops after the current step and
    saves a checkpoint that --resume continues; a second Ctrl-C stops at once.
    """
    from rnnmnist.training.phases import process_started

    started = process_started()  # the wall time and start-up phase of a run count from the process's start
    from_env, typed = flags_by_source(ctx, flags)
    if resume is not None:
        _refuse_with_resume(typed, config_file, out, force)
    cfg = resolve_config(config_file, from_env, typed) if resume is None else None
    if print_config:
        return _print_config(common, cfg, resume)
    ui = common.ui()
    if tensorboard:
        from rnnmnist.training.tensorboard import require_tensorboard

        require_tensorboard()  # before any work is done
    run_folder = resume if resume is not None else out if out is not None else _default_out_dir()
    if seeds is not None or repeat is not None:  # experiments (issue 16): rnnmnist/commands/seeds.py
        from rnnmnist.commands.seeds import seeds_from_flags, train_seeds

        if resume is not None:
            raise click.UsageError("--seeds continues by itself: run the same command again, without --resume")
        return train_seeds(
            common, cfg, seeds_from_flags(seeds, repeat, cfg, typed), run_folder, force, tensorboard, nproc
        )
    if resume is None and out is None:
        _mention_interrupted(ui, cfg, run_folder)
    if nproc and nproc > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(launch_ranks(nproc, common, cfg, run_folder, resume is not None, force, tensorboard))
    if from_env and resume is not None:
        ui.detail(
            f"resuming with the stored config: ignoring {', '.join('RNNMNIST_TRAIN_' + k.upper() for k in from_env)}"
        )
    _run_here(common, ui, cfg, run_folder, resume is not None, force, tensorboard, started)


def _refuse_with_resume(typed: dict[str, Any], config_file: Path | None, out: Path | None, force: bool) -> None:
    """--resume continues with the stored config: a flag that would change it is a usage error."""
    given = [f"--{k.replace('_', '-')}" for k in typed] + [
        name for name, value in (("--config", config_file), ("--out", out), ("--force", force)) if value
    ]
    if given:
        raise click.UsageError(f"--resume continues a run with its stored config; drop {', '.join(given)}")


def _print_config(common: Common, cfg: config.Config | None, resume: Path | None) -> None:
    """--print-config: the resolved config (a resumed run's stored one) as TOML, or with --json as JSON."""
    from rnnmnist.training.lifecycle import resumable

    resolved = cfg if resume is None else resumable(resume).config
    if common.as_json:  # for scripts: the same keys and values, as JSON
        common.ui().emit_json(resolved.to_dict())
    else:
        common.ui().line(config.to_toml(resolved).removesuffix("\n"))


def _mention_interrupted(ui: Any, cfg: config.Config, new_folder: Path) -> None:
    """The same command typed again after Ctrl-C starts a new run (a careful user may want that), but says
    where the interrupted one is and how to continue it instead: resuming by itself would surprise more."""
    from rnnmnist.experiments.interrupted import interrupted_runs

    found = interrupted_runs(new_folder.parent, cfg)
    if not found or ui.verbosity < 0:
        return
    last = found[0]
    where = f"step {last.step:,}" + (f" of {last.total:,}" if last.total is not None else "")
    more = f" ({len(found) - 1} older one{'s' if len(found) > 2 else ''} too)" if len(found) > 1 else ""
    command = f"rnnmnist train --resume {last.folder}"
    ui.note(
        f"An interrupted run of this config is in {last.folder} ({where}){more}: resume it with {command}",
        f"This starts a new run in {new_folder}.",
        keep=[command, f"step {last.step:,}"],
    )


def _run_here(
    common: Common, ui: Any, cfg: config.Config | None, out: Path, resume: bool, force: bool, tb: bool, started: float
) -> None:
    """Train in this process (one rank of a distributed run: torchrun's, or --nproc's); rank 0 reports."""
    from rnnmnist import process
    from rnnmnist.training import distributed, lifecycle

    plan = lifecycle.Plan(out, cfg, resume, force, common.data_dir, common.download, tb)
    main_rank = distributed.from_environment().main
    with process.training(), ui.training() if main_rank else contextlib.nullcontext(None) as display:
        summary = lifecycle.train(plan, display, started)
    if not main_rank:
        return
    if ui.json_mode:
        ui.emit_json({**summary.metrics(), "checkpoint": str(summary.checkpoint), "out_dir": str(summary.run_dir.path)})
    ui.train_summary(summary)
