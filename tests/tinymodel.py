"""One tiny checkpoint per test session, for tests that need a model but not a good one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnmnist.training.synthetic import tiny_train_args

_made: dict[Path, Path] = {}


def tiny_checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint of a one-step run on ``tiny_data`` (made on the first call, then reused)."""
    if tiny_data not in _made:
        from rnnmnist.cli.main import cli

        out = tmp_path_factory.mktemp("tiny-model") / "run"
        result = CliRunner().invoke(cli, tiny_train_args(tiny_data, out, "--iters", "26", "--precision", "fp32"))
        assert result.exit_code == 0, result.output
        _made[tiny_data] = out / "checkpoint.pt"
    return _made[tiny_data]
