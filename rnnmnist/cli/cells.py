"""How one value reads in a table cell or a line: a percentage, a duration, a date, a user-given name made safe.

Shared by the presentation modules; plain text in, plain text out (no rich, no torch).
"""

from __future__ import annotations

import time


def safe_name(text: str) -> str:
    """A user-given name (a path) as one safe line: control characters (newlines) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals; ``-`` for none."""
    return "-" if x is None else f"{100 * x:.2f}%"


def seconds(x: float | None) -> str:
    """A duration in the unit that reads best: seconds up to ten minutes, minutes up to ten hours, then hours."""
    if x is None:
        return "-"
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min" if x < 36000 else f"{x / 3600:.1f} h"


def short_date(stamp: float | None) -> str:
    """A time stamp as month, day and local time: a run's start, in a table of runs."""
    return "-" if stamp is None else time.strftime("%m-%d %H:%M", time.localtime(stamp))


def number(value: object) -> str:
    """A searched or configured value as it reads in a table: a float in four significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
