"""``rnnmnist sweep``: a hyperparameter search on Optuna over a TOML search space (rnnmnist.experiments.sweep)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from rnnmnist.cli.options import Common, data_options, output_options, pass_common
from rnnmnist.commands.presets import ConfigFile

EXAMPLES = """\b
Examples:
  rnnmnist sweep --config sweep-rows --trials 20 --out sweeps/rows   # a packaged sweep space
  rnnmnist sweep --config sweep-rows --trials 20 --out sweeps/rows   # again: continues
  rnnmnist sweep --config sweep-rows --trials 100 \\
      --storage postgresql://rnnmnist:PASSWORD@db-host/rnnmnist --study-name rows   # on every machine
  rnnmnist train --config sweeps/rows/best.toml       # the best trial's config
"""
SHOWN_TRIALS = 10


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
    type=click.Path(file_okay=False, path_type=Path),
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
    from rnnmnist.experiments import sweep as library
    from rnnmnist.training.events import TrainingInterrupted

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", study_name):
        raise click.BadParameter("letters, digits, '.', '_' and '-' only", param_hint="--study-name")
    common.verbosity  # noqa: B018 - --quiet with --verbose is a usage error, found before any work
    space = library.read_space(space_file)  # a bad sweep file is a usage error even without Optuna
    optuna = library.require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the table below says what each trial did
    ui = common.ui()
    for p in space.params:
        ui.detail(f"searching {p.name}: {p.describe()}")
    from rnnmnist import process

    @contextlib.contextmanager
    def display(number: int, params: dict[str, Any], folder: Path) -> Iterator[Any]:
        if ui.verbosity >= 0:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
            ui.line(f"trial {number}: {shown} -> {folder}")
        with ui.training() as shown_display:
            yield shown_display

    try:
        with process.training():  # as `rnnmnist train` trains
            result = library.run_sweep(
                space,
                out,
                trials,
                storage,
                study_name,
                pruner,
                common.data_dir,
                common.download,
                heartbeat,
                display,
                waiting=ui.line if ui.verbosity >= 0 else None,
            )
    except TrainingInterrupted as e:
        raise TrainingInterrupted(
            f"{e.args[0].split(';')[0]}; the trial is marked failed; run the same command again to continue the study",
            e.exit_code - 128,
        ) from None
    if common.as_json:
        ui.emit_json(result.to_json())
    render(ui, result, [p.name for p in space.params])
    if result.shortfall is not None:  # the study holds fewer finished trials than --trials: not a success
        from rnnmnist.errors import RnnmnistError

        raise RnnmnistError(result.shortfall)


def _relative(folder: str | None) -> str:
    """A trial's folder as given on this machine: relative to here when below it."""
    if folder is None:
        return "-"
    path = Path(folder)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else folder


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(ui: Any, result: Any, names: list[str]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from rnnmnist.experiments import sweep as library

    counts = ", ".join(f"{n} {state}" for state, n in sorted(library.count_states(result.rows).items()))
    table = Table(
        title=f"Study {result.study_name!r}: {counts} (this worker ran {result.ran_here})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    if not ui.console.is_terminal:  # a pipe or a log: no screen to fit, keep rows on one line
        ui.console.width = max(ui.console.width, 150)
    for name, justify in (("Trial", "right"), ("State", "left"), ("Val acc", "right")):
        table.add_column(name, justify=justify)
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("Steps", justify="right")
    table.add_column("Folder", overflow="fold")
    for r in result.rows[:SHOWN_TRIALS]:
        value = "-" if r.value is None else f"{100 * r.value:.2f}%"
        table.add_row(
            str(r.number),
            r.state,
            value,
            *(_short(r.params[n]) if n in r.params else "-" for n in names),
            "-" if r.steps is None else f"{r.steps:,}",
            escape(_relative(r.folder)),
        )
    ui.console.print(table)
    if len(result.rows) > SHOWN_TRIALS:
        ui.line(f"... and {len(result.rows) - SHOWN_TRIALS} more (--json lists every trial)")
    if result.best_file is not None:
        ui.line(f"best config: {result.best_file} (train it with: rnnmnist train --config {result.best_file})")
    else:
        ui.line("no trial has completed yet: no best config")
