"""``rnnmnist runs`` and ``rnnmnist compare``: tables of run folders, read without loading weights."""

from __future__ import annotations

from pathlib import Path

import click

from rnnmnist.cli.options import Common, GivenPath, output_options, pass_common

RUNS_EXAMPLES = """\b
Examples:
  rnnmnist runs                                   # every run folder under runs/
  rnnmnist runs sweeps/rows --sort test_accuracy  # best first
  rnnmnist runs --where cell=gru --where status=finished
  rnnmnist runs --json | jq '.runs[0]'
"""

COMPARE_EXAMPLES = """\b
Examples:
  rnnmnist compare runs/lstm runs/gru
  rnnmnist compare runs/seeds/seed-* --plot seeds.png
"""


@click.command(epilog=RUNS_EXAMPLES)
@click.argument("folder", required=False, type=GivenPath(file_okay=False, path_type=Path), default=Path("runs"))
@click.option("--sort", "sort_key", metavar="KEY", help="Sort by a column (test_accuracy, date, ...) or a config key.")
@click.option("--reverse", is_flag=True, help="Reverse the order (accuracies, steps and dates sort best/latest first).")
@click.option(
    "--where",
    "conditions",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only runs where a config key or status has this value (repeatable).",
)
@output_options
@pass_common
def runs(common: Common, folder: Path, sort_key: str | None, reverse: bool, conditions: tuple[str, ...]) -> None:
    """List the run folders under FOLDER (default runs/): config, steps, accuracy, time, status.

    A run folder is any folder holding config.toml (seed and sweep trial folders
    included). Only config.toml, metrics.jsonl and each checkpoint's plain part
    are read: no weights. Status: finished, running, resumable (interrupted or
    stopped early: rnnmnist train --resume continues it) or failed (no usable
    checkpoint). The Config column shows what differs from the defaults.
    """
    from rnnmnist.experiments import runs as library

    ui = common.ui()
    where = library.parse_where(conditions)
    rows = library.select(library.find_runs(folder), where, sort_key, reverse)
    if common.as_json:
        ui.emit_json({"folder": str(folder), "runs": [r.to_json() for r in rows]})
    if not rows:
        ui.line(f"no run folders under {folder}" + (" match" if conditions else ""))
        return
    ui.runs(rows, folder)


@click.command(epilog=COMPARE_EXAMPLES)
@click.argument("folders", nargs=-1, required=True, type=GivenPath(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--plot",
    "plot_path",
    type=GivenPath(dir_okay=False, path_type=Path),
    help="Also draw the runs' training curves overlaid into this PNG (needs rnnmnist[plots]).",
)
@output_options
@pass_common
def compare(common: Common, folders: tuple[Path, ...], plot_path: Path | None) -> None:
    """Compare run FOLDERS side by side: the config keys that differ, and final metrics."""
    from rnnmnist.experiments import runs as library

    if len(folders) < 2:
        raise click.UsageError("give at least two run folders to compare")
    ui = common.ui()
    if plot_path is not None:
        from rnnmnist.plot import _pyplot

        _pyplot("rnnmnist compare --plot")  # fail before any work when matplotlib is missing
    result = library.compare(list(folders))
    written = []
    if plot_path is not None:
        from rnnmnist.plot import plot_overlaid

        written.append(plot_overlaid([(r.name, r.path) for r in result.runs], plot_path))
    if common.as_json:
        ui.emit_json({**result.to_json(), "files": [str(p) for p in written]})
    ui.comparison(result)
    ui.written(written)
