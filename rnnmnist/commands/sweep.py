"""``rnnmnist sweep``: a hyperparameter search on Optuna over a TOML search space (rnnmnist.experiments.sweep)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rnnmnist.cli.options import Common, GivenPath, data_options, output_options, pass_common
from rnnmnist.commands.presets import ConfigFile

if TYPE_CHECKING:
    from rnnmnist.cli.ui import Ui
    from rnnmnist.experiments.sweep import SearchSpace, SweepResult

EXAMPLES = """\b
Examples:
  rnnmnist sweep --config sweep-rows --trials 20 --out sweeps/rows   # a packaged sweep space
  rnnmnist sweep --config sweep-rows --trials 20 --out sweeps/rows   # again: continues
  rnnmnist sweep --config sweep-rows --trials 100 \\
      --storage postgresql://rnnmnist:PASSWORD@db-host/rnnmnist --study-name rows   # on every machine
  rnnmnist train --config sweeps/rows/best.toml       # the best trial's config
"""


@click.command(epilog=EXAMPLES)
@click.option(
    "--config",
    "space_file",
    required=True,
    type=ConfigFile("sweep"),
    help="Sweep file: settings of every trial, and a [search] table of choices or {low, high, log} ranges; "
    "or a packaged sweep space's name (sweep-rows; see rnnmnist presets).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    required=True,
    help="Finished (complete or pruned) trials the study should hold; workers stop when it does.",
)
@click.option(
    "--out",
    type=GivenPath(file_okay=False, path_type=Path),
    default=Path("sweeps/sweep"),
    show_default=True,
    help="Folder for trials/, study.db (the default storage) and best.toml.",
)
@click.option(
    "--storage",
    metavar="URL",
    envvar="RNNMNIST_SWEEP_STORAGE",
    help="Optuna storage URL shared by workers, e.g. postgresql://user:password@host/db. [default: sqlite in OUT]",
)
@click.option("--study-name", default="rnnmnist", show_default=True, help="The study's name in the storage.")
@click.option(
    "--pruner",
    type=click.Choice(["median", "hyperband", "none"]),
    default="median",
    show_default=True,
    help="How trials are stopped early from their --eval-every validation passes.",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Seconds between a worker's heartbeats; a trial silent for two is taken as dead and failed.",
)
@data_options
@output_options
@pass_common
def sweep(
    common: Common,
    space_file: Path,
    trials: int,
    out: Path,
    storage: str | None,
    study_name: str,
    pruner: str,
    heartbeat: int,
) -> None:
    """Search hyperparameters with Optuna: each trial is a run folder in OUT/trials/.

    The objective is validation accuracy (never the test set); with eval_every
    in the sweep file, bad trials are pruned from their validation passes. Start
    the same command again, or on other machines with a shared --storage, and the
    workers share the study. Needs Optuna: pip install 'rnnmnist[sweep]'.
    """
    from rnnmnist.errors import RnnmnistError
    from rnnmnist.experiments import sweep as library

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", study_name):
        raise click.BadParameter("letters, digits, '.', '_' and '-' only", param_hint="--study-name")
    common.verbosity  # noqa: B018 - --quiet with --verbose is a usage error, found before any work
    space = library.read_space(space_file)  # a bad sweep file is a usage error even without Optuna
    optuna = library.require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the table below says what each trial did
    ui = common.ui()
    for p in space.params:
        ui.detail(f"searching {p.name}: {p.describe()}")
    study = {"storage": storage, "study_name": study_name, "pruner": pruner, "heartbeat": heartbeat}
    result = _search(common, ui, space, out, trials, study)
    if common.as_json:
        ui.emit_json(result.to_json())
    ui.sweep_summary(result, [p.name for p in space.params])
    if result.shortfall is not None:  # the study holds fewer finished trials than --trials: not a success
        raise RnnmnistError(result.shortfall)


def _search(common: Common, ui: Ui, space: SearchSpace, out: Path, trials: int, study: dict[str, Any]) -> SweepResult:
    """The study's trials, trained as ``rnnmnist train`` trains them; an interrupt says how to continue."""
    from rnnmnist import process
    from rnnmnist.experiments.sweep import run_sweep
    from rnnmnist.training.events import TrainingInterrupted

    waiting = ui.line if ui.verbosity >= 0 else None
    try:
        with process.training():  # as `rnnmnist train` trains
            return run_sweep(
                space,
                out,
                trials,
                **study,
                data_dir=common.data_dir,
                download=common.download,
                display=ui.sweep_trial,
                waiting=waiting,
            )
    except TrainingInterrupted as e:
        raise TrainingInterrupted(
            f"{e.args[0].split(';')[0]}; the trial is marked failed; run the same command again to continue the study",
            e.signum,
        ) from None
