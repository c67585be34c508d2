from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rnnmnist import checkpoint, config
from rnnmnist.config import Config
from rnnmnist.data import load_mnist
from rnnmnist.errors import RnnmnistError
from rnnmnist.evaluate import evaluate
from rnnmnist.rundir import RunDir
from rnnmnist.train import LogRecord, TrainCallbacks, run

TINY = Config(hidden_size=16, batch_size=25, iters=501, val_size=100, log_every=5, device="cpu")


class Recorder(TrainCallbacks):
    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.phases: list[str] = []

    def on_log(self, record: LogRecord) -> None:
        self.records.append(record)

    def on_phase(self, phase: str) -> None:
        self.phases.append(phase)


def _run(tiny_data: Path, out: Path, cfg: Config = TINY, callbacks: TrainCallbacks | None = None):
    run_dir = RunDir(out)
    run_dir.prepare_new(force=False)
    data = load_mnist(tiny_data, cfg.val_size, download=False)
    return run(cfg, data, run_dir, torch.device("cpu"), callbacks)


def test_run_writes_the_run_folder(tiny_data: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    summary = _run(tiny_data, tmp_path / "run", callbacks=recorder)
    assert summary.steps == 20  # (501 - 1) // 25
    assert summary.examples == 500
    # A log line every 5 steps, with the notebook's Iteration (examples seen).
    assert [r.step for r in recorder.records] == [5, 10, 15, 20]
    assert [r.examples for r in recorder.records] == [125, 250, 375, 500]
    assert recorder.phases == ["evaluating", "saving"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10, 15, 20]
    assert set(json.loads(lines[0])) >= {"step", "examples", "loss", "accuracy", "lr", "examples_per_s"}
    # config.toml is the resolved config ("auto" precision made concrete) and reads back to it.
    assert summary.config == replace(TINY, precision=summary.config.precision)
    assert summary.config.precision in ("fp32", "bf16")
    assert config.build(("c", config.read_toml(tmp_path / "run" / "config.toml"))) == summary.config
    ckpt = checkpoint.load(summary.checkpoint)
    assert ckpt.config == summary.config
    assert ckpt.metrics["test_accuracy"] == summary.test.accuracy
    assert ckpt.metrics["steps"] == 20


def test_learns_the_tiny_digits(tiny_data: Path, tmp_path: Path) -> None:
    # Without augmentation (on by default): warped, thickened tiny digits need more than 60 steps.
    cfg = config.build(("t", {**TINY.to_dict(), "iters": 25 * 60 + 1, "hidden_size": 32, "augment": False}))
    summary = _run(tiny_data, tmp_path / "run", cfg)
    assert summary.test.accuracy >= 0.9
    assert summary.test.loss < 0.5


def test_same_seed_same_weights(tiny_data: Path, tmp_path: Path) -> None:
    a = _run(tiny_data, tmp_path / "a")
    b = _run(tiny_data, tmp_path / "b")
    c = _run(tiny_data, tmp_path / "c", config.build(("t", {**TINY.to_dict(), "seed": 1})))
    wa, wb, wc = (checkpoint.load(s.checkpoint).model_state for s in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.test.loss == b.test.loss


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_is_kept_and_eval_reproduces_it(tiny_data: Path, tmp_path: Path, precision: str) -> None:
    cfg = replace(TINY, precision=precision)
    summary = _run(tiny_data, tmp_path / "run", cfg)
    model, ckpt = checkpoint.load_model(summary.checkpoint)
    assert ckpt.config.precision == precision
    test = load_mnist(tiny_data, 100, download=False).test
    again = evaluate(model, test, 1000, ckpt.config.precision)
    assert again.accuracy == summary.test.accuracy
    assert torch.equal(again.predictions, summary.test.predictions)


def test_out_dir_with_a_run_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    _run(tiny_data, tmp_path / "run")
    with pytest.raises(RnnmnistError, match="already holds a run"):
        RunDir(tmp_path / "run").prepare_new(force=False)
    RunDir(tmp_path / "run").prepare_new(force=True)
    assert list((tmp_path / "run").iterdir()) == []  # the old run is gone, not mixed with the new one


def test_first256_is_computed_on_the_first_images(tiny_data: Path, tmp_path: Path) -> None:
    summary = _run(tiny_data, tmp_path / "run")
    data = load_mnist(tiny_data, 100, download=False)
    expected = (summary.test.predictions[:256] == data.test.labels[:256]).float().mean().item()
    assert summary.test_accuracy_first256 == expected
