"""Errors a user can cause. The CLI prints their message as one line and exits."""


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
