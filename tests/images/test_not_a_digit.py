"""Is it one digit? The decision on predict's JSON, table and exit codes, and in the Python API.

The tiny model is barely trained: its largest probability stays far under the fallback's 0.80, so under
the fallback everything it reads is "not like any digit". A checkpoint holding a stored check with a very
low energy threshold passes every image the image checks pass; one with a very high threshold refuses all.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from digitchecks import with_keys, with_threshold, without_check
from PIL import Image
from tinymodel import tiny_checkpoint

from rnnmnist.cli.main import cli
from rnnmnist.images.redraw import draw_shape, random_style, redraw
from rnnmnist.training.digitcheck import FALLBACK, NO_INK, SEVERAL, UNLIKE, DigitCheck

DECISION = {"is_digit", "reason", "digit_score", "digit_score_kind", "digit_threshold"}


@pytest.fixture(scope="module")
def tiny(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tiny_data, tmp_path_factory)


@pytest.fixture(scope="module")
def models(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("checks")
    low = DigitCheck(score="energy", threshold=-1e9, keep=0.98, calibrated_on=100).to_dict()
    return {
        "fallback": without_check(tiny, folder / "fallback.pt"),
        "low": with_threshold(tiny, folder / "low.pt", -1e9),
        "high": with_threshold(tiny, folder / "high.pt", 1e9),
        "fashion": with_keys(tiny, folder / "fashion.pt", dataset="fashion-mnist"),
        "damaged": with_keys(tiny, folder / "damaged.pt", digit_check={**low, "threshold": "high"}),
    }


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    paper = np.full((100, 100), 255, np.uint8)
    two = paper.copy()
    two[20:80, 10:20] = 0  # two bars far apart: a "11", two characters
    two[20:80, 60:70] = 0
    style = random_style(np.random.default_rng(0))
    files = {
        "seven": redraw(draw_shape("7"), style, seed=0),
        "blank": _png(paper),
        "two": _png(two),
    }
    for name, data in files.items():
        (folder / f"{name}.png").write_bytes(data)
    return {name: str(folder / f"{name}.png") for name in files}


def predict(*args: str):
    return CliRunner().invoke(cli, ["predict", *args])


def _refuse(word: str) -> None:
    raise ValueError(f"not standard JSON: {word}")


def records(*args: str) -> list[dict]:
    """predict --json's records, read as standard JSON (no bare NaN or Infinity)."""
    result = predict(*args, "--json")
    assert result.exit_code in (0, 1, 3), result.output
    return [json.loads(line, parse_constant=_refuse) for line in result.stdout.splitlines()]


def test_json_says_whether_each_image_is_one_digit(models: dict[str, str], images: dict[str, str]) -> None:
    seven, blank, two = records(models["low"], images["seven"], images["blank"], images["two"])
    assert seven["is_digit"] is True and seven["reason"] is None
    assert isinstance(seven["prediction"], int) and seven["class_name"] == str(seven["prediction"])
    assert seven["digit_score_kind"] == "energy" and seven["digit_threshold"] == -1e9
    assert isinstance(seven["digit_score"], float)
    for refused, reason in ((blank, NO_INK), (two, SEVERAL)):
        assert refused["is_digit"] is False and refused["reason"] == reason
        assert refused["prediction"] is None and refused["class_name"] is None
        # what the network would have said stays, for a person to see
        assert len(refused["probabilities"]) == 10 and refused["top3"][0][1] == pytest.approx(refused["confidence"])


def test_the_stored_threshold_decides_and_the_fallback_differs(models: dict[str, str], images: dict[str, str]) -> None:
    (high,) = records(models["high"], images["seven"])
    assert high["is_digit"] is False and high["reason"] == UNLIKE and high["prediction"] is None
    assert high["digit_score"] < 1e9
    (fallback,) = records(models["fallback"], images["seven"])
    assert fallback["digit_score_kind"] == "msp" and fallback["digit_threshold"] == FALLBACK.threshold
    assert fallback["digit_score"] == pytest.approx(fallback["confidence"], abs=1e-5)  # msp: the largest probability
    assert fallback["confidence"] < 0.8  # the barely trained model: so the fallback refuses what "low" passes
    assert fallback["is_digit"] is False and fallback["reason"] == UNLIKE
    (low,) = records(models["low"], images["seven"])
    assert low["is_digit"] is True and low["probabilities"] == fallback["probabilities"]


def test_strict_exit_codes(models: dict[str, str], images: dict[str, str], tmp_path: Path) -> None:
    assert predict(models["low"], images["seven"], "--strict").exit_code == 0
    assert predict(models["low"], images["seven"], images["two"]).exit_code == 0  # without --strict: as before
    assert predict(models["low"], images["seven"], images["two"], "--strict").exit_code == 3
    assert predict(models["high"], images["seven"], "--strict", "--json").exit_code == 3
    missing = str(tmp_path / "missing.png")
    failed = predict(models["low"], images["two"], missing, "--strict")
    assert failed.exit_code == 1  # an input that failed wins over one that is not a digit
    assert failed.stderr.strip() == f"Error: {missing}: no such file"


def test_the_table_says_not_a_digit(models: dict[str, str], images: dict[str, str]) -> None:
    result = predict(models["low"], images["seven"], images["two"], images["blank"], "--show")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    two = next(i for i, line in enumerate(lines) if line.lstrip().startswith(images["two"]))
    assert "not a digit" in lines[two] and "several characters" in lines[two + 1]
    seven = next(line for line in lines if line.lstrip().startswith(images["seven"]))
    assert "not a digit" not in seven
    titles = [line for line in lines if ": not a digit (" in line]  # --show's, names shortened to fit
    assert len(titles) == 2
    assert "two.png: not a digit (more than one" in titles[0]  # the rest may wrap
    assert "blank.png: not a digit (no ink); closest " in titles[1]


def test_trace_decides_from_the_same_logits(models: dict[str, str], images: dict[str, str]) -> None:
    (plain,) = records(models["high"], images["seven"])
    traced = predict(models["high"], images["seven"], "--trace")
    assert traced.exit_code == 0, traced.output
    assert f"{images['seven']}: not a digit; read as " in traced.stdout.replace("\n", " ").replace("  ", " ")
    (as_json,) = records(models["high"], images["seven"], "--trace")
    assert as_json["is_digit"] is False and as_json["digit_score"] == pytest.approx(plain["digit_score"], abs=1e-4)


def test_test_set_images_are_judged_too(models: dict[str, str], tiny_data: Path) -> None:
    rows = records(models["high"], "--index", "0", "--index", "1", "--data-dir", str(tiny_data))
    assert [(r["is_digit"], r["reason"], r["label"]) is not None for r in rows] == [True, True]
    assert all(r["is_digit"] is False and r["reason"] == UNLIKE for r in rows)


def test_a_model_of_another_data_set_makes_no_decision(models: dict[str, str], images: dict[str, str]) -> None:
    (record,) = records(models["fashion"], images["two"])
    assert not DECISION & set(record)
    assert set(record) == {"input", "prediction", "class_name", "confidence", "probabilities", "top3"}
    assert isinstance(record["prediction"], int)
    blank = predict(models["fashion"], images["blank"], "--json")
    assert blank.exit_code == 1 and json.loads(blank.stdout)["error"] == "no ink found: the image is blank"
    strict = predict(models["fashion"], images["two"], "--strict")
    assert strict.exit_code == 2
    assert strict.stderr.strip() == "Error: --strict needs a model of digits; this one was trained on fashion-mnist"


def test_a_damaged_stored_check_is_one_clear_line(models: dict[str, str], images: dict[str, str]) -> None:
    result = predict(models["damaged"], images["seven"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {models['damaged']}: damaged checkpoint, digit_check: threshold is not a number"
    ]


def test_python_api(models: dict[str, str]) -> None:
    from rnnmnist.images.decode import Failed
    from rnnmnist.images.predict import predict_digits
    from rnnmnist.training.checkpoint import load_model

    model, ckpt = load_model(models["low"])
    one = np.zeros((28, 28), np.float32)
    one[4:24, 13:15] = 1.0
    two = one.copy()
    two[4:24, 20:22] = 1.0  # a second stroke apart from the first
    named = [("one", one), ("two", two), ("empty", np.zeros((28, 28), np.float32)), ("bad", Failed("why"))]
    got = predict_digits(model, "fp32", named, check=ckpt.digit_check)
    assert [(r.is_digit, r.reason) for r in got] == [(True, None), (False, SEVERAL), (False, NO_INK), (None, None)]
    assert got[3].error == "why" and got[0].digit_score is not None
    assert all(r.is_digit is None for r in predict_digits(model, "fp32", named[:2]))  # no check: no decision


def test_trace_decides_as_without_it(models: dict[str, str], images: dict[str, str]) -> None:
    """--trace shows the per-step head's probabilities, but the decision scores the plain pass, as without it."""
    plain = records(models["fallback"], images["seven"], images["two"])
    traced = records(models["fallback"], images["seven"], images["two"], "--trace")
    assert [r["digit_score"] for r in traced] == [r["digit_score"] for r in plain]
    assert [r["is_digit"] for r in traced] == [r["is_digit"] for r in plain]
