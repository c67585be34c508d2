"""`rnnmnist predict` on image files, folders and stdin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tinymodel import tiny_checkpoint

from rnnmnist.cli.main import cli
from rnnmnist.images.redraw import draw_shape, random_style, redraw


@pytest.fixture(scope="module")
def model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_checkpoint(tiny_data, tmp_path_factory))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i, kind in enumerate("0171"):
        suffix = "jpg" if i % 2 else "png"
        style = random_style(rng)
        style.fmt = "JPEG" if suffix == "jpg" else "PNG"
        (tmp_path / f"{i}-{kind}.{suffix}").write_bytes(redraw(draw_shape(kind), style, seed=i))
    (tmp_path / "readme.txt").write_text("not an image, and not listed: wrong suffix")
    return tmp_path


def invoke(*args: str, stdin: bytes | None = None):
    return CliRunner().invoke(cli, ["predict", *args], input=stdin)


def test_folder_json_one_object_per_input(model: str, folder: Path) -> None:
    result = invoke(model, str(folder), "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["input"]).name for r in rows] == ["0-0.png", "1-1.jpg", "2-7.png", "3-1.jpg"]
    for r in rows:
        assert set(r) >= {"input", "prediction", "confidence", "probabilities"}
        answer = r["prediction"] if r["is_digit"] else r["top3"][0][0]  # not a digit: no answer, top3 stays
        assert isinstance(answer, int) and 0 <= answer <= 9
        assert (r["prediction"] is None) == (r["is_digit"] is False)
        assert len(r["probabilities"]) == 10
        assert abs(sum(r["probabilities"]) - 1) < 1e-4
        assert r["confidence"] == pytest.approx(max(r["probabilities"]), abs=1e-6)


def test_bad_inputs_fail_alone(model: str, folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "fake.png"
    bad.write_bytes(b"\x89PNG but not really")
    args = (model, str(folder / "0-0.png"), str(tmp_path / "missing.png"), str(bad), str(folder / "2-7.png"))
    human = invoke(*args)
    assert human.exit_code == 1
    assert "0-0.png" in human.stdout and "2-7.png" in human.stdout  # the good ones are still predicted
    errors = human.stderr.strip().splitlines()
    assert errors == [
        f"Error: {tmp_path / 'missing.png'}: no such file",
        f"Error: {bad}: not an image Pillow can read",
    ]
    assert "Traceback" not in human.output
    as_json = invoke(*args, "--json")
    assert as_json.exit_code == 1
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [sorted(r) for r in rows[1:3]] == [["error", "input"], ["error", "input"]]
    assert rows[1] == {"input": str(tmp_path / "missing.png"), "error": "no such file"}
    assert "prediction" in rows[0] and "prediction" in rows[3]


def test_blank_image_and_empty_folder(model: str, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (120, 80), (250, 248, 240)).save(tmp_path / "blank.png")
    (tmp_path / "empty").mkdir()
    result = invoke(model, str(tmp_path / "blank.png"), str(tmp_path / "empty"), "--json")
    assert result.exit_code == 1  # the empty folder
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["is_digit"] is False and rows[0]["reason"] == "no ink"  # a decision, not a failure
    assert rows[1] == {"input": str(tmp_path / "empty"), "error": "no images in this folder"}


def test_stdin(model: str, folder: Path) -> None:
    data = (folder / "2-7.png").read_bytes()
    result = invoke(model, "-", "--json", stdin=data)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["input"] == "-"
    from_file = json.loads(invoke(model, str(folder / "2-7.png"), "--json").stdout)
    assert row["probabilities"] == from_file["probabilities"]


def test_show_prints_what_the_network_sees(model: str, folder: Path) -> None:
    result = invoke(model, str(folder / "0-0.png"), "--show")
    assert result.exit_code == 0
    art = [line for line in result.stdout.splitlines() if len(line) == 56 and set(line) <= set(" .:-=+*#%@")]
    assert len(art) == 28  # 28 rows of 28 pixels, two characters each
    assert any("@" in line for line in art)


def test_images_and_test_indices_together(model: str, folder: Path, tiny_data: Path) -> None:
    result = invoke(model, str(folder / "0-0.png"), "--index", "3", "--data-dir", str(tiny_data), "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in rows] == [str(folder / "0-0.png"), "test[3]"]
    assert "label" in rows[1] and "label" not in rows[0]


def test_nothing_to_predict(model: str) -> None:
    result = invoke(model)
    assert result.exit_code == 2
    assert "nothing to predict" in result.stderr
