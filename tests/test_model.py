from __future__ import annotations

import math

import pytest
import torch

from rnnmnist.config import CELLS, MODES, Config
from rnnmnist.training.model import SequenceClassifier, sequence_shape


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_shapes(cell: str, mode: str) -> None:
    model = SequenceClassifier(Config(cell=cell, mode=mode, hidden_size=8))
    images = torch.rand(3, 28, 28)
    steps, features = sequence_shape(mode)
    assert model.to_sequence(images).shape == (3, steps, features)
    assert model(images).shape == (3, 10)


def test_bidirectional_multilayer_head_sees_both_directions() -> None:
    model = SequenceClassifier(Config(hidden_size=8, layers=2, bidirectional=True, dropout=0.2))
    assert model.head.in_features == 16
    assert model.eval()(torch.rand(2, 28, 28)).shape == (2, 10)


def test_unidirectional_uses_last_output() -> None:
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


def test_forget_bias_on_torch_init() -> None:
    torch.manual_seed(0)
    plain = SequenceClassifier(Config(hidden_size=32, forget_bias=0.0))
    torch.manual_seed(0)
    biased = SequenceClassifier(Config(hidden_size=32, forget_bias=1.0))
    diff = biased.rnn.bias_ih_l0 - plain.rnn.bias_ih_l0  # gate order: input, forget, cell, output
    assert torch.allclose(diff[32:64], torch.ones(32))
    assert torch.equal(diff[:32], torch.zeros(32)) and torch.equal(diff[64:], torch.zeros(64))


def test_tf_init_is_the_notebooks() -> None:
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
