"""All terminal rendering, through one rich Console: every command prints through a :class:`Ui`.

Human output goes to stdout, or to stderr when ``--json`` puts a JSON document on
stdout. On a terminal, training shows table rows and a progress bar; elsewhere
(CI logs, pipes) it prints plain lines. NO_COLOR is honoured by rich.

The Ui owns the Console, the JSON document and plain lines; the tables are built by the
modules beside it, one per concern: :mod:`~rnnmnist.cli.render_train` (training),
:mod:`~rnnmnist.cli.render_eval` and :mod:`~rnnmnist.cli.render_predict` (a model's results),
:mod:`~rnnmnist.cli.render_experiments` (runs, compare, seeds, sweep). Imports no torch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from rnnmnist.cli import render_eval, render_experiments, render_predict
from rnnmnist.cli.cells import safe_name
from rnnmnist.cli.render_train import TrainDisplay, result_table
from rnnmnist.cli.textfit import fit_name, flow, words
from rnnmnist.training.datasets import DIGITS

if TYPE_CHECKING:
    import numpy as np

    from rnnmnist.experiments.runs import Comparison, RunInfo
    from rnnmnist.experiments.sweep import SweepResult
    from rnnmnist.images.predict import Prediction
    from rnnmnist.training.evaluate import EvalResult
    from rnnmnist.training.events import TrainCallbacks, TrainSummary

UNBOUNDED = 10**6  # the "width" of a pipe or a file: lines are never wrapped or shortened to fit one


class Ui:
    """Owns the Console; every command renders through one of these."""

    def __init__(self, json_mode: bool = False, verbosity: int = 0) -> None:
        self.json_mode = json_mode
        self.verbosity = verbosity  # -1 --quiet: results only; 1 --verbose: also settings and details
        self.console = Console(stderr=json_mode, highlight=False)

    @property
    def fancy(self) -> bool:
        return self.console.is_terminal

    @property
    def colour(self) -> bool:
        return not (self.console.no_color or self.console.color_system is None)

    @property
    def width(self) -> int:
        """The terminal's width; piped or in a log there is no screen to fit, and paths stay whole."""
        return self.console.width if self.console.is_terminal else UNBOUNDED

    def emit_json(self, payload: dict[str, Any]) -> None:
        """The one JSON document of a --json command, on stdout."""
        from rnnmnist import jsonout

        sys.stdout.write(jsonout.dumps(payload) + "\n")  # standard JSON: a NaN is null
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, emoji=False, soft_wrap=True)

    def note(self, *sentences: str, keep: Sequence[str] = ()) -> None:
        """Sentences wrapped to the terminal at spaces; the phrases in ``keep`` (commands) are never split."""
        for sentence in sentences:
            for text in flow(words(sentence, keep), self.width):
                self.line(text)

    def detail(self, text: str) -> None:
        """A line shown only with --verbose."""
        if self.verbosity > 0:
            self.line(text)

    def written(self, paths: Sequence[Path]) -> None:
        for path in paths:
            self.line(f"wrote {path}")

    @contextmanager
    def _wide(self, least: int) -> Iterator[int]:
        """Off a terminal (a log, a pipe: no screen to fit) the Console at least ``least`` wide while a table
        is drawn, so that rows stay on one line; on a terminal its own width. Yields the width to draw in."""
        screen = self.console.width
        if self.console.is_terminal:
            yield screen
            return
        self.console.width = max(screen, least)  # print() never draws wider than the console
        try:
            yield self.console.width
        finally:
            self.console.width = screen

    def _print_whole(self, table: Table) -> None:
        """A table on a terminal fits it; in a log or a pipe it is as wide as it needs (names whole, for grep)."""
        wide = self.console.options.update_width(10_000)
        with self._wide(0 if self.console.is_terminal else Measurement.get(self.console, wide, table).maximum):
            self.console.print(table)

    # --- train
    @contextmanager
    def training(self) -> Iterator[TrainCallbacks]:
        display = TrainDisplay(self)
        try:
            yield display
        finally:
            display.stop()

    def train_summary(self, summary: TrainSummary) -> None:
        self.console.print(result_table(summary))
        self.line("Checkpoint: " + fit_name(safe_name(str(summary.checkpoint)), self.width - len("Checkpoint: ")))

    # --- eval
    def evaluation(
        self, result: EvalResult, title: str, classes: Sequence[str] = DIGITS, checkpoint: str | None = None
    ) -> None:
        """``title`` follows ``checkpoint`` (a path, shortened in the middle to fit the terminal) on a line
        of its own: a table's title would wrap to the table's narrow width."""
        if checkpoint is not None:
            title = fit_name(safe_name(checkpoint), max(12, self.width - len(title) - 1)) + " " + title
        self.note(title)
        self.console.print(render_eval.headline_table(result))
        if self.verbosity < 0:
            return
        self.line("Per-class accuracy")
        self.console.print(render_eval.per_class_table(result, classes))
        self.note("Confusion matrix (rows: true, columns: predicted)")
        self.console.print(render_eval.confusion_table(result, classes))

    # --- predict
    def predictions(self, results: Sequence[Prediction], show: bool = False, trace_mode: str | None = None) -> None:
        """A table of the predictions (not with --json: the JSON lines are the output), a line on
        stderr per input that failed, with ``show`` each digit as art, and with ``trace_mode`` (the
        model's sequence mode) how each answer formed as the network read."""
        ok = [r for r in results if r.error is None]
        if ok and not self.json_mode:
            self._print_whole(render_predict.prediction_table(ok, show, trace_mode, self.width))
            if trace_mode is not None and self.verbosity >= 0:
                for r in ok:
                    self.console.print(self.reading(r, trace_mode))
        for r in results:
            if r.error is not None:
                click.echo(f"Error: {safe_name(r.input)}: {safe_name(r.error)}", err=True)
        if show:
            for r in ok:
                self.console.print(render_predict.art_title(r, self.width), markup=False)
                self.console.print(self.digit_art(r.digit))

    def reading(self, r: Prediction, mode: str) -> Text:
        """How one answer formed, a line per two image rows (see :func:`render_predict.reading`)."""
        return render_predict.reading(r, mode, self.width, self.colour)

    def digit_art(self, digit: np.ndarray) -> Text:
        """A 28x28 image in [0, 1] as terminal art: half blocks in shades of grey, or ASCII without colour."""
        return render_predict.digit_art(digit, self.colour)

    # --- runs, compare, train --seeds, sweep
    def runs(self, rows: list[RunInfo], folder: Path) -> None:
        """The table of run folders, and with --verbose why a folder is failed or damaged."""
        with self._wide(render_experiments.PIPE_WIDTH) as width:
            self.console.print(render_experiments.runs_table(rows, folder, width))
        for r in rows:
            if r.problem and self.verbosity > 0:
                self.line(f"{r.name}: {r.problem}")

    def comparison(self, result: Comparison) -> None:
        with self._wide(render_experiments.PIPE_WIDTH):
            self.console.print(render_experiments.compare_table(result))

    def seeds_summary(self, summary: dict[str, Any], out: Path) -> None:
        self.console.print(render_experiments.seeds_table(summary, out))
        self.line(f"wrote {out / 'summary.json'} (std: the sample standard deviation, n - 1)")

    @contextmanager
    def sweep_trial(self, number: int, params: dict[str, Any], folder: Path) -> Iterator[TrainCallbacks]:
        """One trial of a sweep: its line, then its training display."""
        if self.verbosity >= 0:
            self.line(render_experiments.trial_line(number, params, folder))
        with self.training() as display:
            yield display

    def sweep_summary(self, result: SweepResult, names: list[str]) -> None:
        with self._wide(render_experiments.PIPE_WIDTH):
            self.console.print(render_experiments.sweep_table(result, names))
        for text in render_experiments.sweep_lines(result):
            self.line(text)
