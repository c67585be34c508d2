"""Running the CLI in tests: in process through click's runner, or as a real `python -m rnnmnist` process.

Tests run the CLI in process where that is enough and as a subprocess where the process itself
matters (signals, closed or full streams, locks, hangs). The subprocess runs without
RNNMNIST_DATA_DIR (CI sets it to the real MNIST): tests use tiny data, given by --data-dir or
remembered by the run folder.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rnnmnist.cli.main import cli
from rnnmnist.training.synthetic import tiny_train_args

ENV = {k: v for k, v in os.environ.items() if k != "RNNMNIST_DATA_DIR"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """``rnnmnist ARGS`` in process; ``env`` adds to (never removes from) the environment."""
    return CliRunner().invoke(cli, list(args), prog_name="rnnmnist", env=env)


def invoke_ok(*args: str) -> Result:
    """``rnnmnist ARGS`` in process, which must succeed."""
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def two_step_train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """``train`` for two steps of 25 images on a hidden size of 8, printing its JSON summary."""
    args = tiny_train_args(data, out, "--json", *extra)
    i = args.index("--iters")
    args[i + 1] = "51"  # two steps of 25
    i = args.index("--hidden-size")
    args[i + 1] = "8"
    return args


def rnnmnist(*args: str, timeout: float = 900, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m rnnmnist ARGS`` as a real process, without RNNMNIST_DATA_DIR."""
    return subprocess.run(
        [sys.executable, "-m", "rnnmnist", *args], capture_output=True, text=True, timeout=timeout, env=ENV, **kwargs
    )


def one_error_line(stderr: str, *fragments: str) -> str:
    """The single ``Error: ...`` line ``stderr`` must be (no traceback), holding each of ``fragments``."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def refusal_line(result: Result) -> str:
    """The one ``Error:`` line of an in-process run that ended with exit code 1 and no stray exception."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return one_error_line(result.output)


def copy_of(stopped: tuple[Path, bytes], out: Path, checkpoint_bytes: bytes | None = None) -> Path:
    """A copy of the stopped run's folder at ``out`` (its checkpoint, or the bytes given instead)."""
    folder, good = stopped
    out.mkdir()
    for name in ("config.toml", "metrics.jsonl", "run.json"):
        (out / name).write_bytes((folder / name).read_bytes())
    (out / "checkpoint.pt").write_bytes(good if checkpoint_bytes is None else checkpoint_bytes)
    return out


# Linux's memory devices by (major, minor): made in a test's own folder, never used from /dev.
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7)}


def device_node(folder: Path, name: str) -> Path:
    """A character device like /dev/``name`` (null, zero or full), created as ``folder/name``."""
    path = folder / name
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(*DEVICES[name]))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    return path
