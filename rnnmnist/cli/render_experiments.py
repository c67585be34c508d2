"""What the experiment commands show: the tables of ``runs``, ``compare``, ``train --seeds`` and ``sweep``.

Builds rich tables from what :mod:`rnnmnist.experiments` computed; :class:`rnnmnist.cli.ui.Ui`
prints them. Reads no files and imports no torch: listing runs stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from rnnmnist.cli.cells import number, pct, seconds, short_date
from rnnmnist.cli.textfit import Name, fit_name

if TYPE_CHECKING:
    from rnnmnist.experiments.runs import Comparison, RunInfo
    from rnnmnist.experiments.sweep import SweepResult

PIPE_WIDTH = 150  # off a terminal these tables are drawn at least this wide: no screen to fit, rows stay one line
DIFF_WIDTH = 44  # characters of the config diff shown in the table (--json has all of it)
OPTIONAL_COLUMNS = ("Date", "best.pt")  # left out, in this order, where the terminal is too narrow for them
STATUS_STYLE = {"finished": "green", "running": "cyan", "resumable": "yellow", "failed": "red", "damaged": "magenta"}
SHOWN_TRIALS = 10  # rows of the sweep table (--json lists every trial)


# --- runs


def short_diff(diff: dict[str, Any]) -> str:
    """A run's config keys that differ from the defaults, as ``key=value`` words cut to DIFF_WIDTH."""
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in diff.items()) or "(defaults)"
    return text if len(text) <= DIFF_WIDTH else text[: DIFF_WIDTH - 1] + "…"


def _time(r: RunInfo) -> str:
    # A finished run's wall time; an unfinished one's training time so far (marked ~).
    return seconds(r.wall_seconds) if r.wall_seconds is not None else "~" + seconds(r.train_seconds)


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


def _runs_cells(rows: list[RunInfo]) -> dict[str, list[str]]:
    return {
        "Run": [r.name for r in rows],
        "Date": [short_date(r.date) for r in rows],
        "Config (vs defaults)": [short_diff(r.diff) for r in rows],
        "Steps": ["-" if r.steps is None else f"{r.steps:,}" for r in rows],
        "Test": [pct(r.test_accuracy) for r in rows],
        "best.pt": [pct(r.best_test_accuracy) for r in rows],
        "Time": [_time(r) for r in rows],
        "Status": [r.status for r in rows],
    }


def runs_table(rows: list[RunInfo], folder: Path, width: int) -> Table:
    """A row per run folder, with the columns that fit in ``width``: Status always, Date and best.pt if room."""
    title = f"Runs in {fit_name(str(folder), max(12, width - 20))} ({len(rows)})"
    table = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    cells = _runs_cells(rows)
    shown = _columns_that_fit(cells, width)
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
        row: dict[str, Any] = {name: escape(column[i]) for name, column in cells.items()}
        row["Run"] = Name(r.name)  # shortened in the middle when the terminal is narrow, never folded
        row["Status"] = f"[{STATUS_STYLE.get(r.status, 'bold')}]{r.status}[/]"
        table.add_row(*(row[name] for name in shown))
    return table


# --- compare

COMPARED: tuple[tuple[str, Callable[[RunInfo], str]], ...] = (
    ("status", lambda r: r.status),
    ("steps", lambda r: "-" if r.steps is None else f"{r.steps:,}"),
    ("test accuracy", lambda r: pct(r.test_accuracy)),
    ("test loss", lambda r: "-" if r.test_loss is None else f"{r.test_loss:.4f}"),
    ("validation accuracy", lambda r: pct(r.val_accuracy)),
    ("best.pt val / test", lambda r: f"{pct(r.best_val_accuracy)} / {pct(r.best_test_accuracy)}"),
    ("training time", lambda r: seconds(r.train_seconds)),
    ("wall time", lambda r: seconds(r.wall_seconds)),
)


def compare_table(result: Comparison) -> Table:
    """A column per run: the config keys that differ (or "same"), then the final figures."""
    table = Table(title="Compared runs", title_justify="left")
    table.add_column("", style="bold")
    for r in result.runs:
        table.add_column(escape(r.name), justify="right", overflow="fold")
    for key in result.differing:
        table.add_row(key, *(escape(str(r.value(key))) for r in result.runs))
    if not result.differing:
        table.add_row("config", *("same" for _ in result.runs))
    table.add_section()
    for label, cell in COMPARED:
        table.add_row(label, *(cell(r) for r in result.runs))
    return table


# --- train --seeds


def _mean_std(stat: dict[str, Any], scale: float, fmt: str) -> str:
    std = "" if stat["std"] is None else f" ± {format(scale * stat['std'], fmt)}"
    return f"{format(scale * stat['mean'], fmt)}{std}"


def seeds_table(summary: dict[str, Any], out: Path) -> Table:
    """A row per seed's final figures, then their mean ± sample standard deviation, min and max."""
    table = Table(title=f"Seeds {', '.join(map(str, summary['seeds']))} ({out})", title_justify="left")
    for name in ("Seed", "Test accuracy", "Test loss", "Wall time"):
        table.add_column(name, justify="right")
    for r in summary["runs"]:
        table.add_row(
            str(r["seed"]), f"{100 * r['test_accuracy']:.2f}%", f"{r['test_loss']:.4f}", f"{r['wall_seconds']:.1f} s"
        )
    table.add_section()
    acc, loss, wall = (summary[k] for k in ("test_accuracy", "test_loss", "wall_seconds"))
    table.add_row(
        "mean ± std", _mean_std(acc, 100, ".2f") + "%", _mean_std(loss, 1, ".4f"), _mean_std(wall, 1, ".1f") + " s"
    )
    table.add_row("min", f"{100 * acc['min']:.2f}%", f"{loss['min']:.4f}", f"{wall['min']:.1f} s")
    table.add_row("max", f"{100 * acc['max']:.2f}%", f"{loss['max']:.4f}", f"{wall['max']:.1f} s")
    return table


# --- sweep


def trial_line(trial: int, params: dict[str, Any], folder: Path) -> str:
    """The line that starts a sweep trial: its number, the values searched, and its run folder."""
    shown = ", ".join(f"{k}={number(v)}" for k, v in params.items())
    return f"trial {trial}: {shown} -> {folder}"


def _relative(folder: str | None) -> str:
    """A trial's folder as given on this machine: relative to here when below it."""
    if folder is None:
        return "-"
    path = Path(folder)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else folder


def sweep_table(result: SweepResult, names: list[str]) -> Table:
    """The study's best trials first (SHOWN_TRIALS of them): state, validation accuracy, the values searched."""
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    table = Table(
        title=f"Study {result.study_name!r}: {counts} (this worker ran {result.ran_here})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name, justify in (("Trial", "right"), ("State", "left"), ("Val acc", "right")):
        table.add_column(name, justify=justify)
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("Steps", justify="right")
    table.add_column("Folder", overflow="fold")
    for r in result.rows[:SHOWN_TRIALS]:
        table.add_row(
            str(r.number),
            r.state,
            "-" if r.value is None else f"{100 * r.value:.2f}%",
            *(number(r.params[n]) if n in r.params else "-" for n in names),
            "-" if r.steps is None else f"{r.steps:,}",
            escape(_relative(r.folder)),
        )
    return table


def sweep_lines(result: SweepResult) -> list[str]:
    """The lines under the sweep table: how many trials it left out, and where the best config is."""
    lines = []
    if len(result.rows) > SHOWN_TRIALS:
        lines.append(f"... and {len(result.rows) - SHOWN_TRIALS} more (--json lists every trial)")
    if result.best_file is not None:
        lines.append(f"best config: {result.best_file} (train it with: rnnmnist train --config {result.best_file})")
    else:
        lines.append("no trial has completed yet: no best config")
    return lines
