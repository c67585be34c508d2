"""SIGINT and SIGTERM in one place: their names, the one exception they raise, and the one way to handle them.

Every handler rnnmnist installs for a while goes through :func:`handling` (the CLI's process-wide
opt-in is :func:`raise_on_signals`; :func:`default_signals` and a worker's :func:`left_to_parent`
give the signals back to the system), and every interruption unwinds as :class:`Interrupted`: the
CLI's boundary turns it into one line and exit code 128 + the signal's number. Who decides what a
signal means:

- the ``rnnmnist`` program: unwind (:func:`raise_on_signals`), so cleanup runs and nothing half-written stays;
- training: finish the current step and save a resumable checkpoint (:class:`GracefulStop`); a second
  signal unwinds at once (``Interrupted(at_once=True)``);
- ``predict``: :func:`interrupting` in the main process, which survives Python dropping the exception
  while it forks its workers (:func:`held`); the workers leave signals to it (:func:`left_to_parent`);
- ``serve``: uvicorn shuts down gracefully, then re-raises the signal into :func:`handling`'s handler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from rnnmnist.errors import ExitCode

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

Handler = Callable[[int, FrameType | None], Any]


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, or ``signal N`` for any other number."""
    return NAMES.get(signum, f"signal {signum}")  # type: ignore[call-overload]


class Interrupted(BaseException):
    """SIGINT or SIGTERM unwinding the process (``at_once``: a second one, during a graceful stop).

    A BaseException, like KeyboardInterrupt, so that only the CLI's boundary catches it.
    """

    def __init__(self, signum: int, at_once: bool = False) -> None:
        super().__init__(signum)
        self.signum = signum
        self.at_once = at_once

    @property
    def name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        return ExitCode.for_signal(self.signum)


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """The handler that unwinds: raises :class:`Interrupted`."""
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def handling(handler: Handler) -> Iterator[None]:
    """Inside: SIGINT and SIGTERM call ``handler``; the previous handlers are back afterwards.

    Only the main thread can take signals; elsewhere this installs nothing.
    """
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def raise_on_signals() -> None:
    """For the whole process (the CLI's opt-in): SIGINT and SIGTERM raise :class:`Interrupted`."""
    for s in SIGNALS:
        signal.signal(s, raise_interrupted)


def default_signals() -> None:
    """Once a command has ended (and said so), a late signal must not interrupt the interpreter's own
    shutdown with a traceback: it gets its default action again."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_DFL)


@contextlib.contextmanager
def interrupting() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM raise :class:`Interrupted` in the main thread.

    Should Python drop that exception (one raised in a ``__del__`` or an at-fork hook is
    only printed), the block still ends with it.
    """
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise Interrupted(signum)

    with handling(handle):
        yield
    if received:  # reached only when the block ended normally: the exception was dropped on the way
        raise Interrupted(received[0])


@contextlib.contextmanager
def held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (blocked, not lost) until the end of this block, in the main thread.

    Python runs a signal handler at the next line of Python code, and right after a fork
    that is an at-fork hook whose exceptions are printed and dropped: a handler that
    raises (:func:`interrupting`) would be lost there. Held, the signal arrives after
    the forks, in code that lets the exception through.
    """
    if not hasattr(signal, "pthread_sigmask") or not _main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def left_to_parent() -> None:
    """In a worker process: Ctrl-C (sent to the whole process group) is the parent's to decide, SIGTERM
    simply stops it, and nothing stays blocked from :func:`held`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the parent's handler
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


class GracefulStop:
    """Training's handling: calling it answers the first signal's number (or None); a second one
    raises ``Interrupted(at_once=True)`` (atomic writes under way clean up; finished files stay)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._handling = handling(self._handle)

    def __call__(self) -> int | None:
        return self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum, at_once=True)
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        self._handling.__enter__()
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._handling.__exit__(kind, value, tb)
