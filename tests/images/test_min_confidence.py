"""`rnnmnist predict --min-confidence X`: low-confidence predictions are marked for a person to check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from digitchecks import with_threshold

from rnnmnist.cli.main import cli
from rnnmnist.training.synthetic import tiny_train_args

INDICES = ("--index", "0", "--index", "1", "--index", "2", "--index", "3", "--index", "4", "--index", "5")


@pytest.fixture(scope="module")
def model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("uncertain") / "run"
    result = CliRunner().invoke(cli, tiny_train_args(tiny_data, out))
    assert result.exit_code == 0, result.output
    # a stored check that passes every image as a digit: the table shows their answers and confidences
    return with_threshold(out / "checkpoint.pt", out / "digits.pt", -1e9)


def predict(model: str, tiny_data: Path, *args: str):
    return CliRunner().invoke(cli, ["predict", model, *INDICES, "--data-dir", str(tiny_data), *args])


def test_json_marks_what_is_below_the_threshold(model: str, tiny_data: Path) -> None:
    plain = [json.loads(line) for line in predict(model, tiny_data, "--json").stdout.splitlines()]
    assert len(plain) == 6 and all("uncertain" not in r for r in plain)  # no flag: no key
    confidences = sorted(r["confidence"] for r in plain)
    threshold = (confidences[2] + confidences[3]) / 2  # half of them below
    result = predict(model, tiny_data, "--json", "--min-confidence", str(threshold))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["uncertain"] for r in rows] == [r["confidence"] < threshold for r in rows]
    assert sum(r["uncertain"] for r in rows) == 3
    nothing = [
        json.loads(line) for line in predict(model, tiny_data, "--json", "--min-confidence", "0").stdout.splitlines()
    ]
    assert [r["uncertain"] for r in nothing] == [False] * 6


def test_table_shows_uncertain_predictions(model: str, tiny_data: Path) -> None:
    every = predict(model, tiny_data, "--min-confidence", "1")
    assert every.exit_code == 0, every.output
    assert every.stdout.count("uncertain") == 6
    none = predict(model, tiny_data, "--min-confidence", "0", "--show")
    assert none.exit_code == 0 and "uncertain" not in none.stdout
    shown = predict(model, tiny_data, "--min-confidence", "1", "--show")
    assert shown.stdout.count(", uncertain)") == 6  # the --show lines say it too


def test_threshold_out_of_range_is_a_usage_error(model: str, tiny_data: Path) -> None:
    result = predict(model, tiny_data, "--min-confidence", "1.5")
    assert result.exit_code == 2
    assert "--min-confidence" in result.stderr and "Traceback" not in result.output
