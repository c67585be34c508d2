"""All terminal rendering, through one rich Console.

Human output goes to stdout, or to stderr when ``--json`` puts a JSON document on
stdout. On a terminal, training shows table rows and a progress bar; elsewhere
(CI logs, pipes) it prints plain lines. NO_COLOR is honoured by rich.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from rich.color import Color
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.style import Style
from rich.table import Table
from rich.text import Text

from rnnmnist.config import to_toml
from rnnmnist.datasets import DIGITS, SPECS
from rnnmnist.train import LogRecord, TrainCallbacks

if TYPE_CHECKING:
    import torch

    from rnnmnist.config import Config
    from rnnmnist.evaluate import EvalResult
    from rnnmnist.predict import Prediction
    from rnnmnist.train import TrainSummary

ASCII_RAMP = " .:-=+*#%@"  # dark to light
SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
TRACE_BAR = 10  # characters for a probability of 1
LOG_COLUMNS = (("Step", 7), ("Iteration", 10), ("Loss", 8), ("Accuracy", 8), ("LR", 9), ("Examples/s", 10))


def _name(text: str) -> str:
    """A user-given name (a path) as one safe line: control characters (newlines) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _sparkline(values: Sequence[float]) -> str:
    """Values in [0, 1] as block heights, one character each."""
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v * len(SPARKS)))] for v in values)


def _bar(value: float, width: int = TRACE_BAR) -> str:
    """A value in [0, 1] as a horizontal bar ``width`` characters long at 1, in eighths of a character."""
    eighths = round(value * width * 8)
    return ("█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")).ljust(width)


def _step_name(mode: str, steps: int) -> str:
    return "row" if mode == "rows" else "pixel"


class Ui:
    """Owns the Console; every command renders through one of these."""

    def __init__(self, json_mode: bool = False, verbosity: int = 0) -> None:
        self.json_mode = json_mode
        self.verbosity = verbosity  # -1 --quiet: results only; 1 --verbose: also settings and details
        self.console = Console(stderr=json_mode, highlight=False)

    @property
    def fancy(self) -> bool:
        return self.console.is_terminal

    def emit_json(self, payload: dict[str, Any]) -> None:
        """The one JSON document of a --json command, on stdout."""
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, soft_wrap=True)

    def detail(self, text: str) -> None:
        """A line shown only with --verbose."""
        if self.verbosity > 0:
            self.line(text)

    def written(self, paths: Sequence[Path]) -> None:
        for path in paths:
            self.line(f"wrote {path}")

    # --- train
    @contextmanager
    def training(self) -> Iterator[TrainCallbacks]:
        display = _TrainDisplay(self)
        try:
            yield display
        finally:
            display.stop()

    def train_summary(self, summary: TrainSummary) -> None:
        m = summary.metrics()
        table = Table(title="Result", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row(f"Test accuracy ({summary.test.n:,} images)", _pct(m["test_accuracy"]))
        table.add_row("Test loss", f"{m['test_loss']:.4f}")
        table.add_row("Test accuracy, first 256 (the notebook's)", _pct(m["test_accuracy_first256"]))
        if summary.val is not None:
            table.add_row(f"Validation accuracy ({summary.val.n:,} images)", _pct(m["val_accuracy"]))
        if summary.best:
            b = summary.best
            table.add_row(
                f"Best on validation (step {b['step']:,}, best.pt)",
                f"val {_pct(b['val_accuracy'])}, test {_pct(b['test_accuracy'])}",
            )
        table.add_row("Steps / examples seen", f"{m['steps']:,} / {m['examples']:,}")
        table.add_row("Training time", f"{m['train_seconds']:.1f} s")
        table.add_row("Wall time", f"{summary.wall_seconds:.1f} s")
        if summary.phases:
            p = summary.phases
            table.add_row(
                "  start-up, data, evaluation, saving",
                ", ".join(f"{p[k]:.2f}" for k in ("startup", "data", "evaluate", "save")) + " s",
            )
        table.add_row("Checkpoint", str(summary.checkpoint))
        self.console.print(table)

    # --- eval
    def evaluation(self, result: EvalResult, title: str, classes: Sequence[str] = DIGITS) -> None:
        head = Table(title=title, show_header=False, title_justify="left")
        head.add_column(style="bold")
        head.add_column(justify="right")
        head.add_row("Accuracy", f"{_pct(result.accuracy)} ({result.correct:,} of {result.n:,})")
        head.add_row("Loss", f"{result.loss:.4f}")
        self.console.print(head)
        if self.verbosity < 0:
            return

        per_class = Table(title="Per-class accuracy", title_justify="left")
        words = tuple(classes) != DIGITS
        for name in ("Class" if words else "Digit", "Images", "Correct", "Accuracy"):
            per_class.add_column(name, justify="right")
        totals = result.confusion.sum(dim=1).tolist()
        for d, acc in enumerate(result.per_class_accuracy):
            label = f"{d} {escape(classes[d])}" if words else str(d)
            per_class.add_row(label, f"{totals[d]:,}", f"{int(result.confusion[d, d]):,}", _pct(acc))
        self.console.print(per_class)

        confusion = Table(title="Confusion matrix (rows: true, columns: predicted)", title_justify="left")
        confusion.add_column("", style="bold", justify="right")
        for d in range(10):
            confusion.add_column(str(d), justify="right")
        for true, row in enumerate(result.confusion.tolist()):
            cells = [f"[bold]{n}[/]" if pred == true else (f"[red]{n}[/]" if n else "·") for pred, n in enumerate(row)]
            confusion.add_row(f"{escape(classes[true])} {true}" if words else str(true), *cells)
        self.console.print(confusion)

    # --- predict
    def predictions(self, results: Sequence[Prediction], show: bool = False, trace_mode: str | None = None) -> None:
        """A table of the predictions (not with --json: the JSON lines are the output), a line on
        stderr per input that failed, with ``show`` each digit as art, and with ``trace_mode`` (the
        model's sequence mode) how each answer formed as the network read."""
        ok = [r for r in results if r.error is None]
        if ok and not self.json_mode:
            table = Table(title="Predictions", title_justify="left")
            words = any(not c.isdigit() for c in ok[0].classes)
            head = "Class" if words else "Digit"
            columns = [("Input", "left"), (head, "right"), ("Confidence", "right"), ("Top 3", "left")]
            for name, justify in columns[:3] if trace_mode else columns:  # the trace takes Top 3's room
                table.add_column(name, justify=justify, overflow="fold")
            with_labels = any(r.label is not None for r in ok)
            if with_labels:
                table.add_column("True", justify="right")
            if trace_mode is not None:
                table.add_column("Decided", justify="right", no_wrap=True)
                table.add_column("p(answer) as it reads", justify="left", no_wrap=True)
            for r in ok:
                # Uncertain predictions (below --min-confidence) are flagged for a person to check.
                flag = "[yellow]?[/] " if r.uncertain else ""
                confidence = f"[yellow]{_pct(r.confidence)} uncertain[/]" if r.uncertain else _pct(r.confidence)
                cells = [escape(_name(r.input)), f"{flag}{escape(r.class_name)}", confidence]
                if not trace_mode:
                    cells.append("  ".join(f"{escape(r.classes[d])}:{100 * p:.1f}%" for d, p in r.top()))
                if with_labels:
                    color = "green" if r.label == r.prediction else "red"
                    cells.append("" if r.label is None else f"[{color}]{escape(r.classes[r.label])}[/]")
                if trace_mode is not None:
                    from rnnmnist.trace import shown_steps

                    steps = len(r.trace)
                    cells.append(f"{_step_name(trace_mode, steps)} {r.decided_at}")
                    cells.append(_sparkline([float(r.trace[t - 1, r.prediction]) for t in shown_steps(steps)]))
                table.add_row(*cells, end_section=show)
            self.console.print(table)
            if trace_mode is not None and self.verbosity >= 0:
                for r in ok:
                    self.console.print(self.reading(r, trace_mode))
        for r in results:
            if r.error is not None:
                click.echo(f"Error: {_name(r.input)}: {_name(r.error)}", err=True)
        if show:
            for r in ok:
                note = ", uncertain" if r.uncertain else ""
                self.console.print(f"{_name(r.input)}: {r.class_name} ({_pct(r.confidence)}{note})", markup=False)
                self.console.print(self.digit_art(r.digit))

    def reading(self, r: Prediction, mode: str) -> Text:
        """How one answer formed: per row (every 28th step for pixel models) the image row read,
        the top class then and its probability, and a bar of the final answer's probability."""
        from rnnmnist.trace import shown_steps

        steps, answer = len(r.trace), r.prediction
        unit = _step_name(mode, steps)
        text = Text(f"{r.input}: {answer} ({_pct(r.confidence)}), decided at {unit} {r.decided_at} of {steps}")
        if mode == "pixels":
            text.append(f" (image row {(r.decided_at - 1) // 28 + 1})")
        elif mode == "permuted":
            text.append(" (in the model's permuted reading order: the image is not read row by row)")
        art = mode != "permuted"
        text.append(f"\n  {'read':>6}  " + ("image row".ljust(28) + "  " if art else "") + f"top  prob  p({answer})\n")
        colour = not (self.console.no_color or self.console.color_system is None)
        shown = shown_steps(steps)
        for row, t in enumerate(shown):
            probs = r.trace[t - 1]  # (10,)
            top = int(probs.argmax())
            text.append(f"  {t:>6}  ")
            if art:
                for v in r.digit[row]:
                    if colour:
                        grey = round(255 * float(v))
                        text.append(" ", Style(bgcolor=Color.from_rgb(grey, grey, grey)))
                    else:
                        text.append(ASCII_RAMP[min(len(ASCII_RAMP) - 1, int(v * len(ASCII_RAMP)))])
                text.append("  ")
            text.append(f"{top:>3}  {100 * float(probs[top]):>3.0f}%  ", style="bold" if top == answer else "")
            text.append(_bar(float(probs[answer])), style="green" if top == answer else "")
            decided = t >= r.decided_at and (row == 0 or shown[row - 1] < r.decided_at)
            text.append("  ◀ decided" if decided else "")
            text.append("\n")
        return text

    def digit_art(self, digit: np.ndarray) -> Text:
        """A 28x28 image in [0, 1] as terminal art: half blocks in shades of grey, or ASCII without colour."""
        text = Text()
        if self.console.no_color or self.console.color_system is None:
            for row in digit:
                text.append("".join(ASCII_RAMP[min(len(ASCII_RAMP) - 1, int(v * len(ASCII_RAMP)))] * 2 for v in row))
                text.append("\n")
            return text
        for top, bottom in zip(digit[0::2], digit[1::2]):
            for t, b in zip(top, bottom):
                fg, bg = (round(255 * float(v)) for v in (t, b))
                text.append("▀", Style(color=Color.from_rgb(fg, fg, fg), bgcolor=Color.from_rgb(bg, bg, bg)))
            text.append("\n")
        return text


class _TrainDisplay(TrainCallbacks):
    def __init__(self, ui: Ui) -> None:
        self.ui = ui
        self.progress: Progress | None = None
        self.task = None

    def on_start(self, cfg: Config, first_step: int, total_steps: int, device: torch.device, n_train: int) -> None:
        if self.ui.verbosity < 0:
            return
        self.ui.detail("Configuration (as run):\n" + to_toml(cfg))
        c = cfg
        shape = f"{c.cell.upper()} {c.hidden_size}" + (f"x{c.layers}" if c.layers > 1 else "")
        resuming = f", resuming at step {first_step:,}" if first_step > 1 else ""
        data = "" if c.dataset == "mnist" else f"{SPECS[c.dataset].title} "
        self.ui.line(
            f"Training {shape} on {n_train:,} {data}images ({c.mode}), {total_steps:,} steps of {c.batch_size} "
            f"on {device} ({c.precision}), lr {c.lr:g} {c.schedule}{resuming}"
        )
        if self.ui.fancy:
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
            self.progress.console.print(self._row(None))

    def _row(self, cells: Sequence[str] | None) -> Table:
        table = Table(box=None, show_header=cells is None, pad_edge=False, header_style="bold")
        for name, width in LOG_COLUMNS:
            table.add_column(name, justify="right", width=width, no_wrap=True)
        if cells is not None:
            table.add_row(*cells)
        return table

    def on_log(self, r: LogRecord) -> None:
        if self.ui.verbosity < 0:
            return
        if self.progress is not None:
            cells = (
                f"{r.step:,}",
                f"{r.examples:,}",
                f"{r.loss:.4f}",
                _pct(r.accuracy),
                f"{r.lr:.2e}",
                f"{r.examples_per_s:,.0f}",
            )
            self.progress.console.print(self._row(cells))
            self.progress.update(self.task, completed=r.step)
        else:
            self.ui.line(
                f"step {r.step}/{r.total_steps}  Iteration: {r.examples}  loss: {r.loss:.4f}  "
                f"accuracy: {r.accuracy:.4f}  lr: {r.lr:.2e}  examples/s: {r.examples_per_s:.0f}"
            )

    def on_validate(self, step: int, accuracy: float, loss: float, best: bool) -> None:
        if self.ui.verbosity < 0:
            return
        note = "  (best so far: best.pt)" if best else ""
        text = f"validation at step {step:,}: accuracy {_pct(accuracy)}, loss {loss:.4f}{note}"
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
