"""What ``rnnmnist eval`` shows: accuracy and loss, per-class accuracy, and the confusion matrix, as rich tables.

Builds the tables; :class:`rnnmnist.cli.ui.Ui` prints them. Imports no torch (the figures come
as an :class:`~rnnmnist.training.evaluate.EvalResult`, read through its methods).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.markup import escape
from rich.table import Table

from rnnmnist.cli.cells import pct
from rnnmnist.training.datasets import DIGITS

if TYPE_CHECKING:
    from rnnmnist.training.evaluate import EvalResult


def headline_table(result: EvalResult) -> Table:
    """Accuracy (with the count it comes from) and loss."""
    head = Table(show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    head.add_row("Accuracy", f"{pct(result.accuracy)} ({result.correct:,} of {result.n:,})")
    head.add_row("Loss", f"{result.loss:.4f}")
    return head


def per_class_table(result: EvalResult, classes: Sequence[str] = DIGITS) -> Table:
    """A row per class: its images, how many were right, and the accuracy."""
    per_class = Table()
    named = tuple(classes) != DIGITS
    for name in ("Class" if named else "Digit", "Images", "Correct", "Accuracy"):
        per_class.add_column(name, justify="right")
    totals = result.confusion.sum(dim=1).tolist()
    for d, acc in enumerate(result.per_class_accuracy):
        label = f"{d} {escape(classes[d])}" if named else str(d)
        per_class.add_row(label, f"{totals[d]:,}", f"{int(result.confusion[d, d]):,}", pct(acc))
    return per_class


def confusion_table(result: EvalResult, classes: Sequence[str] = DIGITS) -> Table:
    """The confusion matrix: the diagonal in bold, mistakes in red, zeros as dots."""
    named = tuple(classes) != DIGITS
    # Without vertical rules: 11 columns of up to 4 digits fit in 60 columns.
    confusion = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    confusion.add_column("", style="bold", justify="right")
    for d in range(10):
        confusion.add_column(str(d), justify="right")
    for true, row in enumerate(result.confusion.tolist()):
        cells = [f"[bold]{n}[/]" if pred == true else (f"[red]{n}[/]" if n else "·") for pred, n in enumerate(row)]
        confusion.add_row(f"{escape(classes[true])} {true}" if named else str(true), *cells)
    return confusion
