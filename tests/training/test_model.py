"""The model (rnnmnist.training.model): cells, sequence modes, directions and initialisations, in process
and through train, eval and predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import invoke, invoke_ok, two_step_train_args

from rnnmnist.config import CELLS, MODES, Config
from rnnmnist.images.redraw import draw_shape, random_style, redraw
from rnnmnist.training import checkpoint
from rnnmnist.training.model import SequenceClassifier, fixed_permutation, sequence_shape
from rnnmnist.training.synthetic import tiny_train_args


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_and_mode_reads_its_sequence_shape_and_gives_ten_logits(cell: str, mode: str) -> None:
    model = SequenceClassifier(Config(cell=cell, mode=mode, hidden_size=8))
    images = torch.rand(3, 28, 28)
    steps, features = sequence_shape(mode)
    assert model.to_sequence(images).shape == (3, steps, features)
    assert model(images).shape == (3, 10)


def test_bidirectional_multilayer_head_sees_both_directions() -> None:
    model = SequenceClassifier(Config(hidden_size=8, layers=2, bidirectional=True, dropout=0.2))
    assert model.head.in_features == 16
    assert model.eval()(torch.rand(2, 28, 28)).shape == (2, 10)


def test_a_unidirectional_model_classifies_from_its_last_output() -> None:
    model = SequenceClassifier(Config(hidden_size=8)).eval()
    images = torch.rand(4, 28, 28)
    out, _ = model.rnn(images)
    assert torch.allclose(model(images), model.head(out[:, -1]))


def test_rows_mode_reads_rows_top_to_bottom() -> None:
    model = SequenceClassifier(Config(hidden_size=4))
    images = torch.arange(2 * 784, dtype=torch.float32).view(2, 28, 28)
    assert torch.equal(model.to_sequence(images)[:, 3], images[:, 3, :])


def test_permuted_mode_uses_a_fixed_stored_permutation() -> None:
    a = SequenceClassifier(Config(mode="permuted", hidden_size=4, seed=1))
    b = SequenceClassifier(Config(mode="permuted", hidden_size=4, seed=2))
    assert torch.equal(a.permutation, b.permutation)  # the same for every run
    assert "permutation" in a.state_dict()
    assert sorted(a.permutation.tolist()) == list(range(784))
    images = torch.rand(1, 28, 28)
    assert torch.equal(a.to_sequence(images)[0, :, 0], images.view(784)[a.permutation])


def test_forget_bias_adds_to_the_forget_gate_on_torchs_init() -> None:
    torch.manual_seed(0)
    plain = SequenceClassifier(Config(hidden_size=32, forget_bias=0.0))
    torch.manual_seed(0)
    biased = SequenceClassifier(Config(hidden_size=32, forget_bias=1.0))
    diff = biased.rnn.bias_ih_l0 - plain.rnn.bias_ih_l0  # gate order: input, forget, cell, output
    assert torch.allclose(diff[32:64], torch.ones(32))
    assert torch.equal(diff[:32], torch.zeros(32)) and torch.equal(diff[64:], torch.zeros(64))


def test_tf_init_is_the_notebooks_glorot_kernel_and_forget_bias() -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(Config(hidden_size=128, init="tf"))
    limit = math.sqrt(6 / ((28 + 128) + 4 * 128))  # glorot over the joint [input; hidden] kernel
    for w in (model.rnn.weight_ih_l0, model.rnn.weight_hh_l0):
        assert w.abs().max() <= limit
        assert w.abs().max() > 0.99 * limit
    expected_bias = torch.zeros(512)
    expected_bias[128:256] = 1.0
    assert torch.equal(model.rnn.bias_ih_l0, expected_bias)
    assert torch.equal(model.rnn.bias_hh_l0, torch.zeros(512))
    assert 0.9 < model.head.weight.std() < 1.1  # tf.random_normal: N(0, 1)


# --- through train, eval and predict


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_and_mode_trains_evaluates_and_predicts(
    cell: str, mode: str, tiny_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    trained = json.loads(invoke_ok(*two_step_train_args(tiny_data, out, "--cell", cell, "--mode", mode)).stdout)
    assert trained["steps"] == 2
    ckpt = checkpoint.load(out / "checkpoint.pt")
    assert (ckpt.config.cell, ckpt.config.mode) == (cell, mode)
    report = json.loads(invoke_ok("eval", str(out / "checkpoint.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    assert report["accuracy"] == trained["test_accuracy"]
    image = tmp_path / "seven.png"
    image.write_bytes(redraw(draw_shape("7"), random_style(np.random.default_rng(0))))
    args = ("predict", str(out / "checkpoint.pt"), str(image), "--index", "0", "--data-dir", str(tiny_data), "--json")
    rows = [json.loads(line) for line in invoke_ok(*args).stdout.splitlines()]
    assert len(rows) == 2 and all(0 <= r["top3"][0][0] <= 9 for r in rows)  # a digit or not


def test_eval_reads_the_permutation_stored_in_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    invoke_ok(*two_step_train_args(tiny_data, out, "--mode", "permuted"))
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert torch.equal(payload["model"]["permutation"], fixed_permutation(1234))
    before = json.loads(invoke_ok("eval", str(out / "checkpoint.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    # A different stored permutation must change what the model reads: eval takes it from the file.
    payload["model"]["permutation"] = torch.arange(784)
    torch.save(payload, out / "checkpoint.pt")
    after = json.loads(invoke_ok("eval", str(out / "checkpoint.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    assert after["loss"] != before["loss"]


def test_a_stacked_bidirectional_model_with_dropout_evaluates_as_it_trained(tiny_data: Path, tmp_path: Path) -> None:
    extra = ("--bidirectional", "--layers", "2", "--dropout", "0.3", "--cell", "gru")
    trained = json.loads(invoke_ok(*two_step_train_args(tiny_data, tmp_path / "run", *extra)).stdout)
    report = json.loads(invoke_ok("eval", trained["checkpoint"], "--data-dir", str(tiny_data), "--json").stdout)
    assert report["accuracy"] == trained["test_accuracy"]  # dropout is off in evaluation


def test_a_model_that_cannot_fit_is_refused_before_any_folder(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "huge"
    args = tiny_train_args(tiny_data, out)
    i = args.index("--hidden-size")
    args[i + 1] = "4096"
    result = invoke(*args, "--layers", "16", "--bidirectional")
    assert result.exit_code == 2, result.output
    assert "GiB to train" in result.output
    assert not out.exists()
