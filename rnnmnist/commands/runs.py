"""``rnnmnist runs`` and ``rnnmnist compare``: tables of run folders, read without loading weights."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rnnmnist.cli.options import Common, output_options, pass_common

if TYPE_CHECKING:
    from rnnmnist.experiments.runs import RunInfo

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
PIPE_WIDTH = 150
DIFF_WIDTH = 44  # characters of the config diff shown in the table (--json has all of it)
OPTIONAL_COLUMNS = ("Date", "best.pt")  # left out, in this order, where the terminal is too narrow for them
STATUS_STYLE = {"finished": "green", "running": "cyan", "resumable": "yellow", "failed": "red", "damaged": "magenta"}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def seconds(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min" if x < 36000 else f"{x / 3600:.1f} h"


def short_diff(diff: dict[str, Any]) -> str:
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in diff.items()) or "(defaults)"
    return text if len(text) <= DIFF_WIDTH else text[: DIFF_WIDTH - 1] + "…"


def _date(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%m-%d %H:%M", time.localtime(stamp))


class _Output:
    """What these commands print, without rnnmnist.cli.ui: that imports torch, which listing never needs."""

    def __init__(self, common: Common) -> None:
        from rich.console import Console

        common.verbosity  # noqa: B018 - --quiet with --verbose is a usage error
        self.as_json, self.verbose = common.as_json, common.verbose
        self.console = Console(stderr=common.as_json, highlight=False)
        if not self.console.is_terminal:  # a file or a log: no screen to fit, keep rows on one line
            self.console.width = max(self.console.width, PIPE_WIDTH)

    def emit_json(self, payload: dict[str, Any]) -> None:
        from rnnmnist import jsonout

        sys.stdout.write(jsonout.dumps(payload) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, soft_wrap=True)


def _columns_that_fit(cells: dict[str, list[str]], width: int) -> list[str]:
    """The columns of the runs table to show in ``width`` characters: all where they fit, else without
    Date (run names are dates by default), then without best.pt, so that Status is never pushed off."""
    gap = 2

    def need(name: str) -> int:
        widest = max([len(name), *map(len, cells[name])])
        return min(widest, {"Run": 24, "Config (vs defaults)": 20}.get(name, widest))

    shown = list(cells)
    for optional in OPTIONAL_COLUMNS:
        if sum(need(name) + gap for name in shown) <= width:
            break
        shown.remove(optional)
    return shown


def _time(r: RunInfo) -> str:
    # A finished run's wall time; an unfinished one's training time so far (marked ~).
    return seconds(r.wall_seconds) if r.wall_seconds is not None else "~" + seconds(r.train_seconds)


@click.command(epilog=RUNS_EXAMPLES)
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path), default=Path("runs"))
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
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from rnnmnist.experiments import runs as library

    ui = _Output(common)
    where = library.parse_where(conditions)
    rows = library.select(library.find_runs(folder), where, sort_key, reverse)
    if common.as_json:
        ui.emit_json({"folder": str(folder), "runs": [r.to_json() for r in rows]})
    if not rows:
        ui.line(f"no run folders under {folder}" + (" match" if conditions else ""))
        return
    from rnnmnist.cli.textfit import Name, fit_name

    title = f"Runs in {fit_name(str(folder), max(12, ui.console.width - 20))} ({len(rows)})"
    table = Table(
        title=escape(title),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    cells = {
        "Run": [r.name for r in rows],
        "Date": [_date(r.date) for r in rows],
        "Config (vs defaults)": [short_diff(r.diff) for r in rows],
        "Steps": ["-" if r.steps is None else f"{r.steps:,}" for r in rows],
        "Test": [pct(r.test_accuracy) for r in rows],
        "best.pt": [pct(r.best_test_accuracy) for r in rows],
        "Time": [_time(r) for r in rows],
        "Status": [r.status for r in rows],
    }
    shown = _columns_that_fit(cells, ui.console.width)
    for name in shown:
        wraps = name in ("Run", "Config (vs defaults)")
        table.add_column(
            name,
            justify="left" if name in ("Run", "Date", "Config (vs defaults)", "Status") else "right",
            overflow="ellipsis",
            no_wrap=not wraps,
            min_width={"Run": 8, "Config (vs defaults)": 12, "Status": 9}.get(name),
        )
    for i, r in enumerate(rows):
        row = {name: escape(column[i]) for name, column in cells.items()}
        row["Run"] = Name(r.name)  # shortened in the middle when the terminal is narrow, never folded
        row["Status"] = f"[{STATUS_STYLE.get(r.status, 'bold')}]{r.status}[/]"
        table.add_row(*(row[name] for name in shown))
    ui.console.print(table)
    for r in rows:
        if r.problem and common.verbose:
            ui.line(f"{r.name}: {r.problem}")


@click.command(epilog=COMPARE_EXAMPLES)
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the runs' training curves overlaid into this PNG (needs rnnmnist[plots]).",
)
@output_options
@pass_common
def compare(common: Common, folders: tuple[Path, ...], plot_path: Path | None) -> None:
    """Compare run FOLDERS side by side: the config keys that differ, and final metrics."""
    from rich.markup import escape
    from rich.table import Table

    from rnnmnist.experiments import runs as library

    if len(folders) < 2:
        raise click.UsageError("give at least two run folders to compare")
    ui = _Output(common)
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
    table = Table(title="Compared runs", title_justify="left")
    table.add_column("", style="bold")
    for r in result.runs:
        table.add_column(escape(r.name), justify="right", overflow="fold")
    for key in result.differing:
        table.add_row(key, *(escape(str(r.value(key))) for r in result.runs))
    if not result.differing:
        table.add_row("config", *("same" for _ in result.runs))
    table.add_section()
    metrics = (
        ("status", lambda r: r.status),
        ("steps", lambda r: "-" if r.steps is None else f"{r.steps:,}"),
        ("test accuracy", lambda r: pct(r.test_accuracy)),
        ("test loss", lambda r: "-" if r.test_loss is None else f"{r.test_loss:.4f}"),
        ("validation accuracy", lambda r: pct(r.val_accuracy)),
        ("best.pt val / test", lambda r: f"{pct(r.best_val_accuracy)} / {pct(r.best_test_accuracy)}"),
        ("training time", lambda r: seconds(r.train_seconds)),
        ("wall time", lambda r: seconds(r.wall_seconds)),
    )
    for label, cell in metrics:
        table.add_row(label, *(cell(r) for r in result.runs))
    ui.console.print(table)
    for path in written:
        ui.line(f"wrote {path}")
