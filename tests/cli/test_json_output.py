"""--json output is standard JSON: no bare NaN or Infinity, dates as ISO text; --print-config --json is JSON."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnmnist import config
from rnnmnist.cli.main import cli


def _strict(text: str) -> object:
    def refuse(word: str) -> None:
        raise ValueError(f"not standard JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_print_config_json_is_the_resolved_config_as_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--print-config", "--json", "--lr", "0.005", "--cell", "gru"])
    assert result.exit_code == 0, result.output
    printed = _strict(result.stdout)
    assert printed == {**config.DEFAULTS.to_dict(), "lr": 0.005, "cell": "gru"}
    assert config.build(("printed", printed)) == config.build(("flags", {"lr": 0.005, "cell": "gru"}))
    toml = CliRunner().invoke(cli, ["train", "--print-config", "--lr", "0.005"])  # without --json: TOML, as before
    assert toml.exit_code == 0 and "lr = 0.005" in toml.stdout


def test_the_commands_json_is_standard_json(capsys: pytest.CaptureFixture[str]) -> None:
    from rnnmnist.cli.ui import Ui

    Ui(json_mode=True).emit_json({"loss": float("nan"), "top": [math.inf, 1.5], "day": datetime.date(2026, 1, 2)})
    assert _strict(capsys.readouterr().out) == {"loss": None, "top": [None, 1.5], "day": "2026-01-02"}
