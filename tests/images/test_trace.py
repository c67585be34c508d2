"""The reading trace: per-step probabilities, `predict --trace`, and plot's reading.png."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import Result
from clitools import invoke, one_error_line
from PIL import Image

from rnnmnist.cli import render_predict
from rnnmnist.config import Config
from rnnmnist.images.predict import probabilities
from rnnmnist.images.trace import accuracy_by_step, decided_at, reading, shown_steps
from rnnmnist.training import checkpoint
from rnnmnist.training.model import SequenceClassifier
from rnnmnist.training.synthetic import tiny_train_args


def tiny(**fields) -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(Config(hidden_size=8, **fields)).eval()


@pytest.mark.parametrize(
    "fields", [{}, {"cell": "gru", "layers": 2}, {"mode": "pixels", "cell": "rnn"}, {"mode": "permuted"}]
)
def test_last_step_of_the_trace_is_the_prediction(fields: dict) -> None:
    model = tiny(**fields)
    images = torch.rand(3, 28, 28)
    trace = reading(model, images, "fp32")
    steps = 28 if model.mode == "rows" else 784
    assert trace.shape == (3, steps, 10)
    assert torch.allclose(trace.sum(-1), torch.ones(3, steps), atol=1e-5)
    assert torch.allclose(trace[:, -1], probabilities(model, images, "fp32"), atol=1e-6)
    # An earlier step is what the model says on the image cut there: the network cannot see ahead.
    if model.mode == "rows":
        cut = images.clone()
        cut[:, 10:] = torch.rand(3, 18, 28)
        assert torch.allclose(reading(model, cut, "fp32")[:, :10], trace[:, :10], atol=1e-6)


def test_bidirectional_models_have_no_trace() -> None:
    with pytest.raises(Exception, match="bidirectional"):
        reading(tiny(bidirectional=True), torch.rand(1, 28, 28), "fp32")


def one_hot_trace(tops: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(tops), 10).float() * 0.9 + 0.01


def test_decided_at_is_where_the_final_answer_became_and_stayed_top() -> None:
    assert decided_at(one_hot_trace([7, 7, 7])) == 1
    assert decided_at(one_hot_trace([1, 2, 7, 7])) == 3
    assert decided_at(one_hot_trace([7, 7, 2, 7, 7])) == 4  # it wavered: decided only when it stayed
    assert decided_at(one_hot_trace([7, 7, 7, 3])) == 4


def test_compact_views_show_28_steps() -> None:
    assert shown_steps(28) == list(range(1, 29))
    assert shown_steps(784) == list(range(28, 785, 28))


def test_accuracy_by_step_ends_at_the_models_accuracy() -> None:
    model = tiny()
    images, labels = torch.rand(50, 28, 28), torch.randint(0, 10, (50,))
    result = accuracy_by_step(model, images, labels, "fp32")
    assert result.correct.shape == (28,) and result.n == 50
    final = int((probabilities(model, images, "fp32").argmax(1) == labels).sum())
    assert int(result.correct[-1]) == final


# --- the command line


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trace") / "run"
    result = invoke(*tiny_train_args(tiny_data, out))
    assert result.exit_code == 0, result.output
    return out


def saved(tmp_path: Path, **fields) -> str:
    cfg = Config(hidden_size=8, **fields)
    path = tmp_path / "model.pt"
    checkpoint.save(path, cfg, SequenceClassifier(cfg), {})
    return str(path)


def view_steps(output: str) -> list[int]:
    """The steps the view shows, from its lines ("  <step>  <two image rows>  <top>  <prob>%  <bar>")."""
    return [int(m.group(1)) for m in re.finditer(r"^ +(\d+) .*\d%", output, re.MULTILINE)]


def predict(*args: str) -> Result:
    return invoke("predict", *args)


def test_predict_trace_json_has_a_row_of_probabilities_per_step(run: Path, tiny_data: Path) -> None:
    result = predict(
        str(run / "checkpoint.pt"), "--index", "0", "--index", "3", "--data-dir", str(tiny_data), "--trace", "--json"
    )
    assert result.exit_code == 0, result.output
    for line in result.stdout.splitlines():
        r = json.loads(line)
        trace = torch.tensor(r["trace"])
        assert trace.shape == (28, 10)
        assert torch.allclose(trace.sum(1), torch.ones(28), atol=1e-3)
        assert trace[-1].tolist() == pytest.approx(r["probabilities"], abs=1e-4)
        assert 1 <= r["decided_at"] <= 28
        tops, answer = trace.argmax(1), r["top3"][0][0]  # the network's answer, a digit or not
        assert (tops[r["decided_at"] - 1 :] == answer).all()
        if r["decided_at"] > 1:
            assert tops[r["decided_at"] - 2] != answer
    plain = predict(str(run / "checkpoint.pt"), "--index", "0", "--data-dir", str(tiny_data), "--json")
    assert "trace" not in json.loads(plain.stdout)


def test_predict_trace_view_shows_where_the_model_decided(run: Path, tiny_data: Path) -> None:
    result = predict(str(run / "checkpoint.pt"), "--index", "0", "--data-dir", str(tiny_data), "--trace")
    assert result.exit_code == 0, result.output
    record = json.loads(
        predict(str(run / "checkpoint.pt"), "--index", "0", "--data-dir", str(tiny_data), "--trace", "--json").stdout
    )
    assert f"decided at row {record['decided_at']} of 28" in result.stdout
    assert view_steps(result.stdout) == list(range(2, 29, 2))  # a line per two rows (half blocks)
    assert "◀ decided" in result.stdout
    quiet = predict(str(run / "checkpoint.pt"), "--index", "0", "--data-dir", str(tiny_data), "--trace", "-q")
    assert f"row {record['decided_at']}" in quiet.stdout and "◀ decided" not in quiet.stdout


def test_pixel_models_are_summarised_every_28th_step(tmp_path: Path, tiny_data: Path) -> None:
    model = saved(tmp_path, mode="pixels")
    human = predict(model, "--index", "0", "--data-dir", str(tiny_data), "--trace")
    assert human.exit_code == 0, human.output
    assert "of 784 (image row" in human.stdout
    assert view_steps(human.stdout) == list(range(56, 785, 56))  # two image rows' worth a line
    record = json.loads(predict(model, "--index", "0", "--data-dir", str(tiny_data), "--trace", "--json").stdout)
    assert len(record["trace"]) == 784  # JSON keeps every step


def test_the_trace_of_a_bidirectional_model_is_one_line_error(tmp_path: Path, tiny_data: Path) -> None:
    result = predict(saved(tmp_path, bidirectional=True), "--index", "0", "--data-dir", str(tiny_data), "--trace")
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error:") and "bidirectional" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_plot_writes_reading_png(run: Path, tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    result = invoke("plot", str(run), "--data-dir", str(tiny_data), "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    files = [Path(f) for f in json.loads(result.stdout)["files"]]
    assert files[-1].name == "reading.png"
    with Image.open(files[-1]) as im:
        assert im.format == "PNG" and im.width > 1000 and im.height > 600


def test_a_model_whose_outputs_overflow_is_refused_by_every_reader(tmp_path: Path, tiny_data: Path) -> None:
    """Finite weights can still compute NaN (here 3e38 times outputs of about 1): predict, its trace and
    eval say so in one line (exit 1) rather than answer from noise; the rendering shows "?" for such a
    probability should one get that far."""
    cfg = Config(hidden_size=8)
    model = SequenceClassifier(cfg)
    with torch.no_grad():
        for name, weights in model.rnn.named_parameters():
            weights.fill_(50.0 if name.startswith("bias") else 0.0)  # every gate open: each output tanh(c) ~ 1
        model.head.weight.fill_(3e38)
    path = tmp_path / "overflow.pt"
    checkpoint.save(path, cfg, model, {})
    for args in ([], ["--trace"], ["--index", "1", "--json"]):
        result = predict(str(path), "--index", "0", *args, "--data-dir", str(tiny_data))
        assert result.exit_code == 1, result.output
        one_error_line(result.stderr, "the model's outputs are not finite numbers")
    result = invoke("eval", str(path), "--data-dir", str(tiny_data), "--json")
    assert result.exit_code == 1, result.output
    one_error_line(result.stderr, str(path), "the model's outputs are not finite numbers")
    assert render_predict._sparkline([0.5, float("nan")])[1] == "?" and render_predict._bar(float("nan"))[0] == "?"
