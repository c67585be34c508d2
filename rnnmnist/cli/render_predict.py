"""What ``rnnmnist predict`` shows: the table of predictions, digits drawn in the terminal, and the reading trace.

A digit is drawn with half-block characters, two image rows a line, so that a pixel is about as
wide as it is tall: in shades of grey where the terminal has colour, else in ASCII or block
characters. Builds rich tables and texts; :class:`rnnmnist.cli.ui.Ui` prints them. Imports no
torch and no numpy (the images and traces come inside each :class:`~rnnmnist.images.predict.Prediction`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.color import Color
from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text

from rnnmnist.cli.cells import pct, safe_name
from rnnmnist.cli.textfit import Name, fit_name, flow, words

if TYPE_CHECKING:
    import numpy as np

    from rnnmnist.images.predict import Prediction

ASCII_RAMP = " .:-=+*#%@"  # dark to light
SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
TRACE_BAR = 10  # characters for a probability of 1
NARROW = 80  # terminals narrower than this get the compact trace sparkline
SPARK_NARROW = 14  # its characters: one per two rows read
PERMUTED_NOTE = "(in the model's permuted reading order: the image is not read row by row)"
HALF_BLOCK_INK = 0.4  # without colour, a pixel at least this bright is drawn as ink
NOT_A_DIGIT = "not a digit"
# The decision's reasons (rnnmnist.training.digitcheck.REASONS) in the table's words.
SHORT_REASONS = {"no ink": "no ink", "more than one character": "several characters", "not like any digit": ""}


def refusal(r: Prediction) -> str | None:
    """ "not a digit (why)" for an image the decision says is not one digit, else None."""
    if r.is_digit is not False:
        return None
    why = r.reason or ""
    return f"{NOT_A_DIGIT} ({why})" if why and why != "not like any digit" else NOT_A_DIGIT


def _sparkline(values: Sequence[float]) -> str:
    """Values in [0, 1] as block heights, one character each; ``?`` for a value that is not a number
    (a damaged model's)."""
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v * len(SPARKS)))] if math.isfinite(v) else "?" for v in values)


def _bar(value: float, width: int = TRACE_BAR) -> str:
    """A value in [0, 1] as a horizontal bar ``width`` characters long at 1, in eighths of a character;
    ``?`` for a value that is not a number."""
    if not math.isfinite(value):
        return "?".ljust(width)
    eighths = round(value * width * 8)
    return ("█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")).ljust(width)


def _step_name(mode: str) -> str:
    return "row" if mode == "rows" else "pixel"


def _grey(top: float, bottom: float) -> Style:
    """The upper half block's style: the top pixel's grey as foreground, the bottom's as background."""
    fg, bg = round(255 * top), round(255 * bottom)
    return Style(color=Color.from_rgb(fg, fg, fg), bgcolor=Color.from_rgb(bg, bg, bg))


def _half_blocks(text: Text, top: Sequence[float], bottom: Sequence[float] | None, colour: bool) -> None:
    """Two image rows as one line of characters: in colour the upper half block in two greys; without
    colour ▀ ▄ █ or a space for the pixels that hold ink."""
    below = bottom if bottom is not None else [0.0] * len(top)
    for t, b in zip(top, below):
        if colour:
            text.append("▀", _grey(float(t), float(b)))
        else:
            text.append(" ▄▀█"[2 * (float(t) >= HALF_BLOCK_INK) + (float(b) >= HALF_BLOCK_INK)])


def digit_art(digit: np.ndarray, colour: bool) -> Text:
    """A 28x28 image in [0, 1] as terminal art: half blocks in shades of grey, or ASCII without colour."""
    text = Text()
    if not colour:
        for row in digit:
            text.append("".join(ASCII_RAMP[min(len(ASCII_RAMP) - 1, int(v * len(ASCII_RAMP)))] * 2 for v in row))
            text.append("\n")
        return text
    for top, bottom in zip(digit[0::2], digit[1::2]):
        for t, b in zip(top, bottom):
            text.append("▀", _grey(float(t), float(b)))
        text.append("\n")
    return text


def art_title(r: Prediction, width: int) -> str:
    """The line above a drawn digit: its name (shortened to fit) and what the network said."""
    note = ", uncertain" if r.uncertain else ""
    said = f": {r.class_name} ({pct(r.confidence)}{note})"
    if r.is_digit is False:
        said = f": {refusal(r)}; closest {r.class_name} ({pct(r.confidence)})"
    return fit_name(safe_name(r.input), width - len(said)) + said


def prediction_table(ok: Sequence[Prediction], show: bool, trace_mode: str | None, width: int) -> Table:
    """A row per prediction: input, answer, confidence, and the top 3, or with ``trace_mode`` (the model's
    sequence mode) the step it decided at and a sparkline of the answer's probability as it read."""
    # Without vertical rules the trace's columns fit in 60 terminal columns.
    table = Table(title="Predictions", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    named = any(not c.isdigit() for c in ok[0].classes)
    head = "Class" if named else "Digit"
    columns = [("Input", "left"), (head, "right"), ("Confidence", "right"), ("Top 3", "left")]
    # "not a digit" stays whole; the reason below it may wrap at its spaces on a narrow terminal.
    refused = any(r.is_digit is False for r in ok)
    for name, justify in columns[:3] if trace_mode else columns:  # the trace takes Top 3's room
        # Numbers and names never break; a Top 3 or an "uncertain" wraps at its spaces.
        whole = name in ("Input", head)
        wide = len(NOT_A_DIGIT) if refused and name == head else len(name)
        table.add_column(name, justify=justify, no_wrap=whole, min_width=wide)
    with_labels = any(r.label is not None for r in ok)
    if with_labels:
        table.add_column("True", justify="right")
    if trace_mode is not None:
        table.add_column("Decided", justify="right", no_wrap=True)
        table.add_column("p(answer) as it reads", justify="left", min_width=SPARK_NARROW)
    for r in ok:
        table.add_row(*_prediction_cells(r, with_labels, trace_mode, width), end_section=show)
    return table


def _prediction_cells(r: Prediction, with_labels: bool, trace_mode: str | None, width: int) -> list[Any]:
    # Uncertain predictions (below --min-confidence) are flagged for a person to check.
    flag = "[yellow]?[/] " if r.uncertain else ""
    confidence = f"[yellow]{pct(r.confidence)} uncertain[/]" if r.uncertain else pct(r.confidence)
    answer = f"{flag}{escape(r.class_name)}"
    if r.is_digit is False:  # no answer: what the network would have said stays in Top 3
        why = SHORT_REASONS.get(r.reason or "", r.reason or "")
        answer, confidence = f"[bold red]{NOT_A_DIGIT}[/]" + (f"\n[red]{escape(why)}[/]" if why else ""), "-"
    cells: list[Any] = [Name(safe_name(r.input)), answer, confidence]
    if not trace_mode:
        cells.append("  ".join(f"{escape(r.classes[d])}:{100 * p:.1f}%" for d, p in r.top()))
    if with_labels:
        color = "green" if r.label == r.prediction else "red"
        cells.append("" if r.label is None else f"[{color}]{escape(r.classes[r.label])}[/]")
    if trace_mode is not None:
        from rnnmnist.images.trace import shown_steps

        steps = len(r.trace)
        cells.append(f"{_step_name(trace_mode)} {r.decided_at}")
        shown = shown_steps(steps)[1::2] if width < NARROW else shown_steps(steps)  # room for Input
        cells.append(_sparkline([float(r.trace[t - 1, r.prediction]) for t in shown]))
    return cells


def reading(r: Prediction, mode: str, width: int, colour: bool) -> Text:
    """How one answer formed, a line per two image rows (half-block characters keep the digit's shape):
    the steps read by the end of the second row (every 28th step for pixel models), the image rows,
    the top class then and its probability, and a bar of the final answer's probability."""
    from rnnmnist.images.trace import shown_steps

    steps, answer = len(r.trace), r.prediction
    unit = _step_name(mode)
    said = f": {answer} ({pct(r.confidence)}), decided at {unit} {r.decided_at} of {steps}"
    if r.is_digit is False:
        said = f": {refusal(r)}; read as {answer} ({pct(r.confidence)}), decided at {unit} {r.decided_at} of {steps}"
    if mode == "pixels":
        said += f" (image row {(r.decided_at - 1) // 28 + 1})"
    title = fit_name(safe_name(r.input), max(12, width - len(said))) + said
    text = Text("\n".join(flow(words(title, keep=[f"{unit} {r.decided_at} of {steps}"]), width)))
    if mode == "permuted":
        text.append("\n" + "\n".join(flow(words(PERMUTED_NOTE), width)))
    art = mode != "permuted"
    # read (6) + image rows (28) + top (3) + prob (4) + separators (10): the bar and the marker get the rest.
    room = width - (2 + 6 + 2 + (30 if art else 0) + 3 + 2 + 4 + 2)
    marker = "  ◀ decided" if room >= TRACE_BAR + 11 else " ◀"
    bar = max(4, min(TRACE_BAR, room - len(marker)))
    text.append(f"\n  {'read':>6}  " + ("image rows".ljust(28) + "  " if art else "") + f"top  prob  p({answer})\n")
    shown = shown_steps(steps)
    for pair in range(0, len(shown), 2):
        _reading_line(text, r, shown, pair, colour, art, (marker, bar))
    return text


def _reading_line(
    text: Text, r: Prediction, shown: Sequence[int], pair: int, colour: bool, art: bool, look: tuple[str, int]
) -> None:
    """The trace's line for the ``pair``-th two rows: steps read, the rows, top class, its probability, a bar."""
    marker, bar = look
    answer = r.prediction
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
