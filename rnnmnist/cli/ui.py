"""All terminal rendering, through one rich Console.

Human output goes to stdout, or to stderr when ``--json`` puts a JSON document on
stdout. On a terminal, training shows table rows and a progress bar; elsewhere
(CI logs, pipes) it prints plain lines. NO_COLOR is honoured by rich.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from rich import box
from rich.color import Color
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.style import Style
from rich.table import Table
from rich.text import Text

from rnnmnist.cli.textfit import Name, fit_name, flow, words
from rnnmnist.config import to_toml
from rnnmnist.training.datasets import DIGITS, SPECS
from rnnmnist.training.events import LogRecord, TrainCallbacks

if TYPE_CHECKING:
    import torch

    from rnnmnist.config import Config
    from rnnmnist.images.predict import Prediction
    from rnnmnist.machine import CpuShare
    from rnnmnist.training.evaluate import EvalResult
    from rnnmnist.training.events import TrainSummary

ASCII_RAMP = " .:-=+*#%@"  # dark to light
SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
TRACE_BAR = 10  # characters for a probability of 1
# "Examples" is the notebook's "Iteration": examples seen so far (metrics.jsonl keeps the key "examples").
LOG_COLUMNS = (("Step", 7), ("Examples", 10), ("Loss", 8), ("Accuracy", 8), ("LR", 9), ("Examples/s", 10))
MIN_ROWS_PER_HEADING = 10  # the training table repeats its heading once a screen, never more often than this
NARROW = 80  # terminals narrower than this get the compact trace sparkline
SPARK_NARROW = 14  # its characters: one per two rows read
UNBOUNDED = 10**6  # the "width" of a pipe or a file: lines are never wrapped or shortened to fit one


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


PERMUTED_NOTE = "(in the model's permuted reading order: the image is not read row by row)"
HALF_BLOCK_INK = 0.4  # without colour, a pixel at least this bright is drawn as ink


def _half_blocks(text: Text, top: np.ndarray, bottom: np.ndarray | None, colour: bool) -> None:
    """Two image rows as one line of characters, so a pixel is about as wide as it is tall: in colour the
    upper half block with the top pixel's grey as foreground and the bottom's as background; without
    colour ▀ ▄ █ or a space for the pixels that hold ink."""
    below = bottom if bottom is not None else np.zeros_like(top)
    for t, b in zip(top, below):
        if colour:
            fg, bg = (round(255 * float(v)) for v in (t, b))
            text.append("▀", Style(color=Color.from_rgb(fg, fg, fg), bgcolor=Color.from_rgb(bg, bg, bg)))
        else:
            text.append(" ▄▀█"[2 * (float(t) >= HALF_BLOCK_INK) + (float(b) >= HALF_BLOCK_INK)])


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
        from rnnmnist import jsonout

        sys.stdout.write(jsonout.dumps(payload) + "\n")  # standard JSON: a NaN is null
        sys.stdout.flush()

    @property
    def width(self) -> int:
        """The terminal's width; piped or in a log there is no screen to fit, and paths stay whole."""
        return self.console.width if self.console.is_terminal else UNBOUNDED

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, soft_wrap=True)

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
        table.add_row("Test accuracy, first 256 (notebook)", _pct(m["test_accuracy_first256"]))
        if summary.val is not None:
            table.add_row(f"Validation accuracy ({summary.val.n:,} images)", _pct(m["val_accuracy"]))
        if summary.best:
            b = summary.best
            table.add_row(f"best.pt (step {b['step']:,}): validation", _pct(b["val_accuracy"]))
            table.add_row("best.pt: test", _pct(b["test_accuracy"]))
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
        self.console.print(table)
        self.line("Checkpoint: " + fit_name(_name(str(summary.checkpoint)), self.width - len("Checkpoint: ")))

    # --- eval
    def evaluation(
        self, result: EvalResult, title: str, classes: Sequence[str] = DIGITS, checkpoint: str | None = None
    ) -> None:
        """``title`` follows ``checkpoint`` (a path, shortened in the middle to fit the terminal) on a line
        of its own: a table's title would wrap to the table's narrow width."""
        if checkpoint is not None:
            title = fit_name(_name(checkpoint), max(12, self.width - len(title) - 1)) + " " + title
        self.note(title)
        head = Table(show_header=False)
        head.add_column(style="bold")
        head.add_column(justify="right")
        head.add_row("Accuracy", f"{_pct(result.accuracy)} ({result.correct:,} of {result.n:,})")
        head.add_row("Loss", f"{result.loss:.4f}")
        self.console.print(head)
        if self.verbosity < 0:
            return

        self.line("Per-class accuracy")
        per_class = Table()
        named = tuple(classes) != DIGITS
        for name in ("Class" if named else "Digit", "Images", "Correct", "Accuracy"):
            per_class.add_column(name, justify="right")
        totals = result.confusion.sum(dim=1).tolist()
        for d, acc in enumerate(result.per_class_accuracy):
            label = f"{d} {escape(classes[d])}" if named else str(d)
            per_class.add_row(label, f"{totals[d]:,}", f"{int(result.confusion[d, d]):,}", _pct(acc))
        self.console.print(per_class)

        # Without vertical rules: 11 columns of up to 4 digits fit in 60 columns.
        self.note("Confusion matrix (rows: true, columns: predicted)")
        confusion = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        confusion.add_column("", style="bold", justify="right")
        for d in range(10):
            confusion.add_column(str(d), justify="right")
        for true, row in enumerate(result.confusion.tolist()):
            cells = [f"[bold]{n}[/]" if pred == true else (f"[red]{n}[/]" if n else "·") for pred, n in enumerate(row)]
            confusion.add_row(f"{escape(classes[true])} {true}" if named else str(true), *cells)
        self.console.print(confusion)

    # --- predict
    def _print_whole(self, table: Table) -> None:
        """A table on a terminal fits it; in a log or a pipe it is as wide as it needs (names whole, for grep)."""
        if self.console.is_terminal:
            self.console.print(table)
            return
        from rich.measure import Measurement

        screen = self.console.width  # print() never draws wider than the console, so widen it for this table
        self.console.width = max(
            screen, Measurement.get(self.console, self.console.options.update_width(10_000), table).maximum
        )
        try:
            self.console.print(table)
        finally:
            self.console.width = screen

    def predictions(self, results: Sequence[Prediction], show: bool = False, trace_mode: str | None = None) -> None:
        """A table of the predictions (not with --json: the JSON lines are the output), a line on
        stderr per input that failed, with ``show`` each digit as art, and with ``trace_mode`` (the
        model's sequence mode) how each answer formed as the network read."""
        ok = [r for r in results if r.error is None]
        if ok and not self.json_mode:
            # Without vertical rules the trace's columns fit in 60 terminal columns.
            table = Table(
                title="Predictions", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0)
            )
            named = any(not c.isdigit() for c in ok[0].classes)
            head = "Class" if named else "Digit"
            columns = [("Input", "left"), (head, "right"), ("Confidence", "right"), ("Top 3", "left")]
            for name, justify in columns[:3] if trace_mode else columns:  # the trace takes Top 3's room
                # Numbers and names never break; a Top 3 or an "uncertain" wraps at its spaces.
                table.add_column(name, justify=justify, no_wrap=name in (head, "Input"), min_width=len(name))
            with_labels = any(r.label is not None for r in ok)
            if with_labels:
                table.add_column("True", justify="right")
            if trace_mode is not None:
                table.add_column("Decided", justify="right", no_wrap=True)
                table.add_column("p(answer) as it reads", justify="left", min_width=SPARK_NARROW)
            for r in ok:
                # Uncertain predictions (below --min-confidence) are flagged for a person to check.
                flag = "[yellow]?[/] " if r.uncertain else ""
                confidence = f"[yellow]{_pct(r.confidence)} uncertain[/]" if r.uncertain else _pct(r.confidence)
                cells = [Name(_name(r.input)), f"{flag}{escape(r.class_name)}", confidence]
                if not trace_mode:
                    cells.append("  ".join(f"{escape(r.classes[d])}:{100 * p:.1f}%" for d, p in r.top()))
                if with_labels:
                    color = "green" if r.label == r.prediction else "red"
                    cells.append("" if r.label is None else f"[{color}]{escape(r.classes[r.label])}[/]")
                if trace_mode is not None:
                    from rnnmnist.images.trace import shown_steps

                    steps = len(r.trace)
                    cells.append(f"{_step_name(trace_mode, steps)} {r.decided_at}")
                    shown = shown_steps(steps)[1::2] if self.width < NARROW else shown_steps(steps)  # room for Input
                    cells.append(_sparkline([float(r.trace[t - 1, r.prediction]) for t in shown]))
                table.add_row(*cells, end_section=show)
            self._print_whole(table)
            if trace_mode is not None and self.verbosity >= 0:
                for r in ok:
                    self.console.print(self.reading(r, trace_mode))
        for r in results:
            if r.error is not None:
                click.echo(f"Error: {_name(r.input)}: {_name(r.error)}", err=True)
        if show:
            for r in ok:
                note = ", uncertain" if r.uncertain else ""
                said = f": {r.class_name} ({_pct(r.confidence)}{note})"
                self.console.print(fit_name(_name(r.input), self.width - len(said)) + said, markup=False)
                self.console.print(self.digit_art(r.digit))

    def reading(self, r: Prediction, mode: str) -> Text:
        """How one answer formed, a line per two image rows (half-block characters keep the digit's shape):
        the steps read by the end of the second row (every 28th step for pixel models), the image rows,
        the top class then and its probability, and a bar of the final answer's probability."""
        from rnnmnist.images.trace import shown_steps

        steps, answer = len(r.trace), r.prediction
        unit = _step_name(mode, steps)
        said = f": {answer} ({_pct(r.confidence)}), decided at {unit} {r.decided_at} of {steps}"
        if mode == "pixels":
            said += f" (image row {(r.decided_at - 1) // 28 + 1})"
        title = fit_name(_name(r.input), max(12, self.width - len(said))) + said
        text = Text("\n".join(flow(words(title, keep=[f"{unit} {r.decided_at} of {steps}"]), self.width)))
        if mode == "permuted":
            text.append("\n" + "\n".join(flow(words(PERMUTED_NOTE), self.width)))
        art = mode != "permuted"
        # read (6) + image rows (28) + top (3) + prob (4) + separators (10): the bar and the marker get the rest.
        room = self.width - (2 + 6 + 2 + (30 if art else 0) + 3 + 2 + 4 + 2)
        marker = "  ◀ decided" if room >= TRACE_BAR + 11 else " ◀"
        bar = max(4, min(TRACE_BAR, room - len(marker)))
        text.append(f"\n  {'read':>6}  " + ("image rows".ljust(28) + "  " if art else "") + f"top  prob  p({answer})\n")
        colour = not (self.console.no_color or self.console.color_system is None)
        shown = shown_steps(steps)
        for pair in range(0, len(shown), 2):
            t = shown[min(pair + 1, len(shown) - 1)]  # the step after the pair's second row
            probs = r.trace[t - 1]  # (10,)
            top = int(probs.argmax())
            text.append(f"  {t:>6}  ")
            if art:
                _half_blocks(text, r.digit[pair], r.digit[pair + 1] if pair + 1 < len(r.digit) else None, colour)
                text.append("  ")
            text.append(f"{top:>3}  {100 * float(probs[top]):>3.0f}%  ", style="bold" if top == answer else "")
            text.append(_bar(float(probs[answer]), bar), style="green" if top == answer else "")
            before = shown[pair - 1] if pair else 0  # the step the previous line showed
            decided = before < r.decided_at <= t
            text.append(marker if decided else "")
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


class _TrainDisplay(TrainCallbacks):
    def __init__(self, ui: Ui) -> None:
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

    @property
    def rows_per_heading(self) -> int:
        # One screen less the heading, the progress bar and a line of context.
        return max(MIN_ROWS_PER_HEADING, self.ui.console.size.height - 3)

    def _row(self, cells: Sequence[str] | None) -> Table:
        # One space between columns: the six fit in 60 terminal columns, every number right-aligned.
        table = Table(box=None, show_header=cells is None, padding=(0, 0, 0, 1), pad_edge=False, header_style="bold")
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
            if self.rows >= self.rows_per_heading:  # a long table keeps its heading on screen
                self.progress.console.print(self._row(None))
                self.rows = 0
            self.progress.console.print(self._row(cells))
            self.rows += 1
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
