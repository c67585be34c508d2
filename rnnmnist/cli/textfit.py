"""Text fitted to a terminal's width: paths shortened in the middle, phrases flowed into lines unbroken.

Imports no torch (``rnnmnist runs`` uses it) and rich only when a table cell is drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

MIN_NAME = 12  # a path is never shortened below this many characters, where it can be avoided


def fit_name(text: str, width: int) -> str:
    """``text`` (a path) in at most ``width`` characters: whole when it fits, else with an ellipsis in the
    middle that keeps the file name (its last part) whole where it can. Never a cut word at the end."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    cut = text.rfind("/", 0, len(text) - 1)
    tail = text[cut:] if cut >= 0 else text
    if len(tail) + 2 > width:  # the file name itself does not fit: keep its start and its end
        head = (width - 1) // 2
        return text[:head] + "…" + text[len(text) - (width - 1 - head) :]
    return text[: width - 1 - len(tail)] + "…" + tail


def flow(chunks: Sequence[str], width: int, sep: str = " ", indent: str = "  ") -> list[str]:
    """Chunks laid out in lines of at most ``width`` characters, never splitting a chunk (a flag and its
    value, a command): continuation lines are indented. A chunk wider than a line gets one of its own,
    shortened in the middle."""
    lines: list[str] = []
    line = ""
    for chunk in chunks:
        joined = f"{line}{sep}{chunk}" if line else chunk
        if len(joined.rstrip()) <= width or not line:
            line = joined
        else:
            lines.append(line.rstrip())
            line = indent + chunk.lstrip()
        if len(line) > width:
            line = fit_name(line, width)
    if line:
        lines.append(line.rstrip())
    return lines


def words(text: str, keep: Sequence[str] = ()) -> list[str]:
    """``text`` split into words, except that each phrase in ``keep`` stays one chunk."""
    for phrase in keep:
        text = text.replace(phrase, phrase.replace(" ", "\0"))
    return [w.replace("\0", " ") for w in text.split(" ") if w]


class Name:
    """A path in a table cell: as wide as the table can give, shortened in the middle rather than folded."""

    def __init__(self, text: str, style: str = "") -> None:
        self.text, self.style = text, style

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        # Off a terminal (a log, a pipe) the name stays whole on one line, for grep and copy.
        least = len(self.text) if not console.is_terminal else min(len(self.text), MIN_NAME)
        return Measurement(least, len(self.text))

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.text import Text

        if not console.is_terminal:  # a log or a pipe: the whole name on one line, for grep and copy
            yield Text(self.text, style=self.style, no_wrap=True, overflow="ignore")
            return
        yield Text(fit_name(self.text, options.max_width), style=self.style, no_wrap=True, overflow="ignore")
