"""Where a training run's wall time goes: start-up, data, training, evaluation, saving.

``rnnmnist train --json`` reports these as ``phases`` so that users (and
``bench/run.py --sections phases``) see the seconds spent outside the training loop.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

PHASES = ("startup", "data", "train", "evaluate", "save")
_IMPORTED = time.perf_counter()  # the fallback start: when rnnmnist's CLI imported this module


def process_started() -> float:
    """When this process started, on the ``time.perf_counter()`` clock (Linux: from /proc, to 10 ms).

    Elsewhere, or if /proc cannot be read, the moment rnnmnist's CLI module was imported,
    which leaves out the interpreter's own start (a few tens of milliseconds).
    """
    with contextlib.suppress(OSError, ValueError, IndexError, AttributeError):
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, after "pid (comm)"
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        if 0 <= age < 10**7:
            return time.perf_counter() - age
    return _IMPORTED


class Phases:
    """Wall seconds per phase of one run, measured from ``started`` (a ``time.perf_counter()`` value).

    ``startup`` is whatever time from ``started`` to the first training step is not
    in another phase: imports, config, device, model, run folder.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._training_began: float | None = None

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        if phase == "train" and self._training_began is None:
            self._training_began = time.perf_counter()
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - begun

    def as_dict(self) -> dict[str, float]:
        """The phases so far, rounded to microseconds (a small data set loads in under a millisecond);
        startup once training has begun."""
        seconds = dict(self.seconds)
        if self._training_began is not None:
            seconds["startup"] = max(0.0, self._training_began - self.started - seconds["data"])
        return {k: round(v, 6) for k, v in seconds.items()}

    def wall(self) -> float:
        return time.perf_counter() - self.started
