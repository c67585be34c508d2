"""Errors a user can cause. The CLI prints their message as one line and exits."""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """The program's exit codes, in one place: the CLI reference (docs/reference/cli.md) renders them, and
    tests/test_docs.py checks that the error classes and the signals end with exactly these."""

    SUCCESS = 0
    FAILURE = 1
    USAGE = 2
    NOT_A_DIGIT = 3
    INTERRUPTED = 128 + signal.SIGINT
    TERMINATED = 128 + signal.SIGTERM

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    @classmethod
    def for_signal(cls, signum: int) -> int:
        """128 + the signal's number, as a shell reports a process a signal ended."""
        return 128 + signum


_MEANINGS = {
    ExitCode.SUCCESS: "success",
    ExitCode.FAILURE: "a failure the user can fix: data missing or malformed, a checkpoint that cannot be used, "
    "a gate not met (eval --min-accuracy), an output that cannot be written",
    ExitCode.USAGE: "a usage error: an unknown flag, a value out of range, a config file or preset that cannot be used",
    ExitCode.NOT_A_DIGIT: "predict --strict: an input is not a single digit (no ink, more than one character, not "
    "like any digit); an input that failed to read exits 1 instead",
    ExitCode.INTERRUPTED: "interrupted by SIGINT (Ctrl-C); files already written are intact",
    ExitCode.TERMINATED: "terminated by SIGTERM; files already written are intact",
}


class RnnmnistError(Exception):
    """A failure the user can act on (missing data, bad checkpoint, ...); exit code 1."""

    exit_code: int = ExitCode.FAILURE


class DataError(RnnmnistError):
    """MNIST files missing, unreadable or malformed."""


class CheckpointError(RnnmnistError):
    """A checkpoint that cannot be read, trusted or used."""


# Finite weights can still overflow in a forward pass (a tampered or diverged checkpoint): every answer
# drawn from such outputs (a class, a probability, a loss) would be noise.
NOT_FINITE_OUTPUTS = "the model's outputs are not finite numbers (its weights overflow)"


class BadValueError(RnnmnistError):
    """A flag value found out of range only once the data is known; a usage error (exit code 2)."""

    exit_code: int = ExitCode.USAGE


def one_line(what: BaseException | str, limit: int = 200) -> str:
    """A message (or an exception's) as one line of at most ``limit`` characters, cut between words.

    An exception with no message is named by its type.
    """
    text = " ".join(str(what).split()) or (type(what).__name__ if isinstance(what, BaseException) else "")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def shown(value: object, limit: int = 60) -> str:
    """A value for an error message: short, one line (a tensor by its type and shape, not its numbers)."""
    if type(value).__name__ == "Tensor":  # without importing torch (config must stay torch-free)
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"  # type: ignore[attr-defined]
    return one_line(repr(value), limit)
