"""What ``rnnmnist train`` shows: the header, the table of log lines with a progress bar, and the result table.

On a terminal the log lines are table rows under a progress bar; elsewhere (CI logs,
pipes) they are plain lines. Builds rich tables and prints through the Ui's Console;
imports no torch (the run's events come from :mod:`rnnmnist.training.events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rnnmnist.cli.cells import pct
from rnnmnist.cli.textfit import flow, words
from rnnmnist.config import to_toml
from rnnmnist.training.datasets import SPECS
from rnnmnist.training.events import LogRecord, TrainCallbacks

if TYPE_CHECKING:
    import torch

    from rnnmnist.config import Config
    from rnnmnist.machine import CpuShare
    from rnnmnist.training.events import TrainSummary

# "Examples" is the notebook's "Iteration": examples seen so far (metrics.jsonl keeps the key "examples").
LOG_COLUMNS = (("Step", 7), ("Examples", 10), ("Loss", 8), ("Accuracy", 8), ("LR", 9), ("Examples/s", 10))
MIN_ROWS_PER_HEADING = 10  # the training table repeats its heading once a screen, never more often than this


class Terminal(Protocol):
    """What the training display needs of the Ui (:class:`rnnmnist.cli.ui.Ui` is one)."""

    console: Console
    verbosity: int

    @property
    def width(self) -> int: ...

    @property
    def fancy(self) -> bool: ...

    def line(self, text: str) -> None: ...

    def detail(self, text: str) -> None: ...


def header_lines(
    cfg: Config, first_step: int, total_steps: int, device: str, n_train: int, share: CpuShare | None, width: int
) -> list[str]:
    """The training header, in lines of at most ``width``: a setting ("lr 0.02 onecycle") is never split;
    on a CPU it names the threads used, and says when other work shares the CPU (times will be longer)."""
    c = cfg
    shape = f"{c.cell.upper()} {c.hidden_size}" + (f"x{c.layers}" if c.layers > 1 else "")
    data = "" if c.dataset == "mnist" else f"{SPECS[c.dataset].title} "
    threads = f", {share.threads} thread{'s' if share.threads != 1 else ''}" if share is not None else ""
    chunks = [
        "Training",
        f"{shape} on",
        f"{n_train:,} {data}images ({c.mode}),",
        f"{total_steps:,} steps of {c.batch_size}",
        f"on {device} ({c.precision}{threads}),",
        f"lr {c.lr:g} {c.schedule}" + ("," if first_step > 1 else ""),
    ]
    if first_step > 1:
        chunks.append(f"resuming at step {first_step:,}")
    lines = flow(chunks, width)
    if share is not None and share.shared:
        cores = f"{share.cores} core{'s' if share.cores != 1 else ''}"
        lines += flow(words(f"note: the CPU is shared: load {share.load:.1f} on {cores}; times will be longer"), width)
    return lines


def result_table(summary: TrainSummary) -> Table:
    """The final figures of a run: test and validation accuracy, best.pt's, steps, and where the time went."""
    m = summary.metrics()
    table = Table(title="Result", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row(f"Test accuracy ({summary.test.n:,} images)", pct(m["test_accuracy"]))
    table.add_row("Test loss", f"{m['test_loss']:.4f}")
    table.add_row("Test accuracy, first 256 (notebook)", pct(m["test_accuracy_first256"]))
    if summary.val is not None:
        table.add_row(f"Validation accuracy ({summary.val.n:,} images)", pct(m["val_accuracy"]))
    if summary.best:
        b = summary.best
        table.add_row(f"best.pt (step {b['step']:,}): validation", pct(b["val_accuracy"]))
        table.add_row("best.pt: test", pct(b["test_accuracy"]))
    table.add_row("Steps / examples seen", f"{m['steps']:,} / {m['examples']:,}")
    if summary.resumed_seconds > 0:
        # A resumed run's training time spans every process that trained it; its wall time is this
        # process's alone, so the two compare only through this process's share.
        table.add_row("Training time, all sessions", f"{m['train_seconds']:.1f} s")
        table.add_row("Training time, this process", f"{summary.train_seconds_this_process:.1f} s")
        table.add_row("Wall time, this process", f"{summary.wall_seconds:.1f} s")
    else:
        table.add_row("Training time", f"{m['train_seconds']:.1f} s")
        table.add_row("Wall time", f"{summary.wall_seconds:.1f} s")
    if summary.phases:
        p = summary.phases
        table.add_row(
            "  start-up, data, evaluation, saving",
            ", ".join(f"{p[k]:.2f}" for k in ("startup", "data", "evaluate", "save")) + " s",
        )
    return table


def _log_row(cells: Sequence[str] | None) -> Table:
    """One row of the training table, or with ``cells`` None its heading."""
    # One space between columns: the six fit in 60 terminal columns, every number right-aligned.
    table = Table(box=None, show_header=cells is None, padding=(0, 0, 0, 1), pad_edge=False, header_style="bold")
    for name, width in LOG_COLUMNS:
        table.add_column(name, justify="right", width=width, no_wrap=True)
    if cells is not None:
        table.add_row(*cells)
    return table


def _log_cells(r: LogRecord) -> tuple[str, ...]:
    return (
        f"{r.step:,}",
        f"{r.examples:,}",
        f"{r.loss:.4f}",
        pct(r.accuracy),
        f"{r.lr:.2e}",
        f"{r.examples_per_s:,.0f}",
    )


def _log_line(r: LogRecord) -> str:
    return (
        f"step {r.step}/{r.total_steps}  Iteration: {r.examples}  loss: {r.loss:.4f}  "
        f"accuracy: {r.accuracy:.4f}  lr: {r.lr:.2e}  examples/s: {r.examples_per_s:.0f}"
    )


class TrainDisplay(TrainCallbacks):
    """A run's events as the terminal shows them: table rows under a progress bar, or plain lines."""

    def __init__(self, ui: Terminal) -> None:
        self.ui = ui
        self.progress: Progress | None = None
        self.task = None
        self.rows = 0  # table rows since the heading was last printed

    def on_start(self, cfg: Config, first_step: int, total_steps: int, device: torch.device, n_train: int) -> None:
        if self.ui.verbosity < 0:
            return
        self.ui.detail("Configuration (as run):\n" + to_toml(cfg))
        share = None
        if device.type == "cpu":
            from rnnmnist.machine import current_cpu_share

            share = current_cpu_share()
        for text in header_lines(cfg, first_step, total_steps, str(device), n_train, share, self.ui.width):
            self.ui.line(text)
        if self.ui.fancy:
            self._start_progress(first_step, total_steps)

    def _start_progress(self, first_step: int, total_steps: int) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.ui.console,
            transient=True,
        )
        self.task = self.progress.add_task("training", total=total_steps, completed=first_step - 1)
        self.progress.start()
        self.progress.console.print(_log_row(None))

    @property
    def rows_per_heading(self) -> int:
        # One screen less the heading, the progress bar and a line of context.
        return max(MIN_ROWS_PER_HEADING, self.ui.console.size.height - 3)

    def on_log(self, r: LogRecord) -> None:
        if self.ui.verbosity < 0:
            return
        if self.progress is None:
            self.ui.line(_log_line(r))
            return
        if self.rows >= self.rows_per_heading:  # a long table keeps its heading on screen
            self.progress.console.print(_log_row(None))
            self.rows = 0
        self.progress.console.print(_log_row(_log_cells(r)))
        self.rows += 1
        self.progress.update(self.task, completed=r.step)

    def on_validate(self, step: int, accuracy: float, loss: float, best: bool) -> None:
        if self.ui.verbosity < 0:
            return
        note = "  (best so far: best.pt)" if best else ""
        text = f"validation at step {step:,}: accuracy {pct(accuracy)}, loss {loss:.4f}{note}"
        if self.progress is not None:
            self.progress.console.print(text, markup=False)
        else:
            self.ui.line(text)

    def on_phase(self, phase: str) -> None:
        if self.ui.verbosity < 0:
            return
        if self.progress is not None:
            self.progress.update(self.task, description=phase)
        else:
            self.ui.line(f"{phase}...")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
