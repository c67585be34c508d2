"""SIGINT/SIGTERM during training: the first asks the loop to stop after the current step
(it then saves a resumable checkpoint); a second stops at once."""

from __future__ import annotations

import signal
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedAtOnce(BaseException):
    """A second signal: unwinds immediately (atomic writes under way clean up; finished files stay)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class GracefulStop:
    """A context that catches the signals; calling it answers the first one's number, or None."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> int | None:
        return self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise StoppedAtOnce(signum)
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
