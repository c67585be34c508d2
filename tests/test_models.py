"""Cells, sequence modes and training aids, each through train, eval and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rnnmnist.cli.main import cli
from rnnmnist.config import CELLS, MODES
from rnnmnist.images.redraw import draw_shape, random_style, redraw
from rnnmnist.training import checkpoint
from rnnmnist.training.augment import random_affine
from rnnmnist.training.model import fixed_permutation
from rnnmnist.training.synthetic import tiny_train_args


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    args = tiny_train_args(data, out, "--json", *extra)
    i = args.index("--iters")
    args[i + 1] = "51"  # two steps of 25
    i = args.index("--hidden-size")
    args[i + 1] = "8"
    return args


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_cell_and_mode_round_trip(cell: str, mode: str, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    trained = json.loads(invoke(*tiny_args(tiny_data, out, "--cell", cell, "--mode", mode)).stdout)
    assert trained["steps"] == 2
    ckpt = checkpoint.load(out / "checkpoint.pt")
    assert (ckpt.config.cell, ckpt.config.mode) == (cell, mode)
    report = json.loads(invoke("eval", str(out / "checkpoint.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    assert report["accuracy"] == trained["test_accuracy"]
    image = tmp_path / "seven.png"
    image.write_bytes(redraw(draw_shape("7"), random_style(np.random.default_rng(0))))
    args = ("predict", str(out / "checkpoint.pt"), str(image), "--index", "0", "--data-dir", str(tiny_data), "--json")
    rows = [json.loads(line) for line in invoke(*args).stdout.splitlines()]
    assert len(rows) == 2 and all(0 <= r["prediction"] <= 9 for r in rows)


def test_permutation_lives_in_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    invoke(*tiny_args(tiny_data, out, "--mode", "permuted"))
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert torch.equal(payload["model"]["permutation"], fixed_permutation(1234))
    before = json.loads(invoke("eval", str(out / "checkpoint.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    # A different stored permutation must change what the model reads: eval takes it from the file.
    payload["model"]["permutation"] = torch.arange(784)
    torch.save(payload, out / "checkpoint.pt")
    after = json.loads(invoke("eval", str(out / "checkpoint.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    assert after["loss"] != before["loss"]


def test_bidirectional_stacked_with_dropout(tiny_data: Path, tmp_path: Path) -> None:
    extra = ("--bidirectional", "--layers", "2", "--dropout", "0.3", "--cell", "gru")
    trained = json.loads(invoke(*tiny_args(tiny_data, tmp_path / "run", *extra)).stdout)
    report = json.loads(invoke("eval", trained["checkpoint"], "--data-dir", str(tiny_data), "--json").stdout)
    assert report["accuracy"] == trained["test_accuracy"]  # dropout is off in evaluation


def test_training_aids_are_applied(tiny_data: Path, tmp_path: Path) -> None:
    extra = ("--optimizer", "adamw", "--weight-decay", "0.05", "--label-smoothing", "0.1", "--grad-clip", "1.0")
    extra += ("--schedule", "cosine", "--warmup", "0.1", "--augment")
    out = tmp_path / "run"
    invoke(*tiny_args(tiny_data, out, *extra))
    stored = checkpoint.load(out / "checkpoint.pt").config
    assert (stored.optimizer, stored.weight_decay, stored.label_smoothing) == ("adamw", 0.05, 0.1)
    assert (stored.grad_clip, stored.schedule, stored.augment) == (1.0, "cosine", True)
    plain = tmp_path / "plain"
    invoke(*tiny_args(tiny_data, plain))
    a, b = (checkpoint.load(p / "checkpoint.pt").model_state for p in (out, plain))
    assert not torch.equal(a["head.weight"], b["head.weight"])


def test_best_checkpoint_on_validation(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(tiny_data, out, "--json", "--eval-every", "5", "--iters", "1001")
    result = invoke(*args)
    trained = json.loads(result.stdout)
    best = trained["best"]
    assert best["step"] in (5, 10, 15, 20, 25, 30, 35, 40)
    assert best["checkpoint"] == str(out / "best.pt")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in lines if "val_accuracy" in r]
    assert [r["step"] for r in val] == [5, 10, 15, 20, 25, 30, 35]  # the last step's is the final evaluation
    assert best["val_accuracy"] == max([r["val_accuracy"] for r in val] + [trained["val_accuracy"]])
    report = json.loads(invoke("eval", str(out / "best.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    assert report["accuracy"] == best["test_accuracy"]
    assert "validation at step 5: accuracy" in result.stderr


def test_eval_every_needs_validation_images(tiny_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--eval-every", "10", "--val-size", "0"])
    assert result.exit_code == 2
    assert "eval_every needs a validation split" in result.stderr


def test_random_affine_is_small_and_seeded() -> None:
    images = torch.zeros(64, 28, 28)
    images[:, 8:20, 12:16] = 1.0
    torch.manual_seed(0)
    a = random_affine(images)
    torch.manual_seed(0)
    b = random_affine(images)
    assert torch.equal(a, b)
    assert a.shape == images.shape
    assert not torch.equal(a, images)
    mass = a.sum(dim=(1, 2)) / images.sum(dim=(1, 2))
    assert ((mass > 0.75) & (mass < 1.3)).all()  # scaled by at most 10% per side: mass by at most ~21%
