"""Errors a user can cause. The CLI prints their message as one line and exits."""

# The program's exit codes, in one place: the CLI reference (docs/reference/cli.md) renders this table and
# tests/test_docs.py checks the error classes' codes and the signal codes against it.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "a failure the user can fix: data missing or malformed, a checkpoint that cannot be used, "
    "a gate not met (eval --min-accuracy), an output that cannot be written",
    2: "a usage error: an unknown flag, a value out of range, a config file or preset that cannot be used",
    130: "interrupted by SIGINT (Ctrl-C); files already written are intact",
    143: "terminated by SIGTERM; files already written are intact",
}


class RnnmnistError(Exception):
    """A failure the user can act on (missing data, bad checkpoint, ...); exit code 1."""

    exit_code = 1


class DataError(RnnmnistError):
    """MNIST files missing, unreadable or malformed."""


class CheckpointError(RnnmnistError):
    """A checkpoint that cannot be read, trusted or used."""


class BadValueError(RnnmnistError):
    """A flag value found out of range only once the data is known; a usage error (exit code 2)."""

    exit_code = 2


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
