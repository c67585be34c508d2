"""JSON as rnnmnist prints it: standard JSON only, whatever the files it read held.

Python's ``json`` writes a bare ``NaN`` or ``Infinity`` for a non-finite float, which
strict parsers (jq, JavaScript's JSON.parse) refuse, and refuses a TOML date. Here a
non-finite float becomes ``null``, a date, time or datetime its ISO text, a path its
text, and ``json.dumps(..., allow_nan=False)`` makes any value missed an error rather
than invalid output.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import PurePath
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with every part JSON can hold as standard JSON (see the module's docstring)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int)) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any, **kwargs: Any) -> str:
    """``value`` as standard JSON text (``kwargs`` as for :func:`json.dumps`)."""
    return json.dumps(plain(value), allow_nan=False, **kwargs)
