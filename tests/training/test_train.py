from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rnnmnist import config
from rnnmnist.config import Config
from rnnmnist.errors import BadValueError, RnnmnistError
from rnnmnist.training import checkpoint
from rnnmnist.training.data import load_mnist
from rnnmnist.training.device import DISABLE_BF16_ENV, bf16_runs
from rnnmnist.training.evaluate import evaluate, evaluate_checkpoint
from rnnmnist.training.events import LogRecord, TrainCallbacks
from rnnmnist.training.lifecycle import Plan, train
from rnnmnist.training.rundir import RunDir

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
    return train(Plan(out, cfg, data_dir=tiny_data, download=False), callbacks, time.perf_counter())


needs_bf16 = pytest.mark.skipif(
    not bf16_runs(torch.device("cpu")),
    reason=f"this CPU cannot run bf16 LSTMs (no AVX-512 BF16/AMX, or {DISABLE_BF16_ENV} is set)",
)


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


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16)])
def test_precision_is_kept_and_eval_reproduces_it(tiny_data: Path, tmp_path: Path, precision: str) -> None:
    cfg = replace(TINY, precision=precision)
    summary = _run(tiny_data, tmp_path / "run", cfg)
    model, ckpt = checkpoint.load_model(summary.checkpoint)
    assert ckpt.config.precision == precision
    test = load_mnist(tiny_data, 100, download=False).test
    again = evaluate(model, test, 1000, ckpt.config.precision)
    assert again.accuracy == summary.test.accuracy
    assert torch.equal(again.predictions, summary.test.predictions)


@pytest.mark.precision
def test_bf16_where_it_cannot_run_is_one_clear_usage_error(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DISABLE_BF16_ENV, "1")  # as on a CPU without AVX-512
    with pytest.raises(BadValueError, match=r"--precision bf16: .*use --precision fp32"):
        _run(tiny_data, tmp_path / "run", replace(TINY, precision="bf16"))
    assert not (tmp_path / "run").exists()  # refused before any folder was made
    auto = _run(tiny_data, tmp_path / "auto", replace(TINY, precision="auto"))
    assert auto.config.precision == "fp32"


@pytest.mark.precision
def test_a_bf16_checkpoint_evaluates_in_fp32_where_bf16_cannot_run(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bf16-trained model file, as an AVX-512 machine writes it (the weights are fp32 either way).
    summary = _run(tiny_data, tmp_path / "run", replace(TINY, precision="fp32"))
    ckpt = checkpoint.load(summary.checkpoint)
    model = ckpt.build_model()
    bf16_file = tmp_path / "bf16.pt"
    checkpoint.save(bf16_file, replace(ckpt.config, precision="bf16"), model, ckpt.metrics)
    monkeypatch.setenv(DISABLE_BF16_ENV, "1")
    done = evaluate_checkpoint(bf16_file, "test", tiny_data, download=False, device="cpu")
    assert done.precision.name == "fp32"
    assert "trained in bf16" in done.precision.note
    assert torch.equal(done.result.predictions, summary.test.predictions)  # it trained in fp32: identical


def test_out_dir_with_a_run_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    _run(tiny_data, tmp_path / "run")
    with pytest.raises(RnnmnistError, match="already holds a run"):
        RunDir(tmp_path / "run").prepare_new(force=False)
    again = RunDir(tmp_path / "run")
    again.prepare_new(force=True)
    again.lock.release()
    assert list((tmp_path / "run").iterdir()) == []  # the old run is gone, not mixed with the new one


def test_first256_is_computed_on_the_first_images(tiny_data: Path, tmp_path: Path) -> None:
    summary = _run(tiny_data, tmp_path / "run")
    data = load_mnist(tiny_data, 100, download=False)
    expected = (summary.test.predictions[:256] == data.test.labels[:256]).float().mean().item()
    assert summary.test_accuracy_first256 == expected


# --- interrupted runs: found again, and their time accounted per process


class _StopAt(TrainCallbacks):
    """Stops the run (resumable, as Ctrl-C does) at its first log step at or after ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, record: LogRecord) -> None:
        if record.step >= self.step:
            from rnnmnist.training.events import StopEarly

            raise StopEarly


def _interrupted(tiny_data: Path, out: Path, cfg: Config = TINY, step: int = 10) -> None:
    from rnnmnist.training.events import StopEarly

    with pytest.raises(StopEarly):
        _run(tiny_data, out, cfg, _StopAt(step))


def test_a_resumed_run_counts_training_time_per_process(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _interrupted(tiny_data, out)
    before = checkpoint.load(out / "checkpoint.pt").training["train_seconds"]
    assert before > 0
    summary = train(Plan(out, None, resume=True, data_dir=tiny_data, download=False), None, time.perf_counter())
    assert summary.resumed_seconds == before
    assert summary.train_seconds == pytest.approx(before + summary.train_seconds_this_process)
    # This process's training is part of this process's wall time; the total across processes need not be.
    assert 0 < summary.train_seconds_this_process <= summary.wall_seconds


def test_interrupted_runs_of_a_config_are_found(tiny_data: Path, tmp_path: Path) -> None:
    from rnnmnist.experiments.interrupted import interrupted_runs

    runs = tmp_path / "runs"
    _interrupted(tiny_data, runs / "20260101-000000")
    _interrupted(tiny_data, runs / "20260102-000000", step=5)
    _interrupted(tiny_data, runs / "other", replace(TINY, lr=0.005))
    _run(tiny_data, runs / "finished")
    found = interrupted_runs(runs, replace(TINY, precision="auto"))
    assert [(f.folder.name, f.step, f.total) for f in found] == [
        ("20260102-000000", 5, 20),
        ("20260101-000000", 10, 20),
    ]
    assert interrupted_runs(runs, replace(TINY, hidden_size=8)) == []
    assert interrupted_runs(tmp_path / "none", TINY) == []


def test_the_same_command_again_names_the_interrupted_run(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from rnnmnist.cli.main import cli
    from rnnmnist.training.synthetic import tiny_train_args

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNMNIST_DATA_DIR", raising=False)  # CI's real MNIST: the run resumes on its own data
    args = [a for a in tiny_train_args(tiny_data, Path("x")) if a not in ("--out", "x")]  # runs/DATE-TIME
    first = CliRunner().invoke(cli, [*args, "--json"])
    assert first.exit_code == 0, first.output
    done = Path(json.loads(first.stdout)["out_dir"])
    stored = config.from_dict(config.read_toml(done / "config.toml"))
    _interrupted(tiny_data, Path("runs/00000000-interrupted"), stored)  # as Ctrl-C leaves it

    again = CliRunner().invoke(cli, args, env={"COLUMNS": "80"})
    assert again.exit_code == 0, again.output
    said = " ".join(again.output.split())
    command = "rnnmnist train --resume runs/00000000-interrupted"
    assert "An interrupted run of this config is in runs/00000000-interrupted (step 10 of 20)" in said
    assert f"resume it with {command}" in said and "This starts a new run in runs/" in said
    assert any(command in line for line in again.output.splitlines())  # the command is never split
    quiet = CliRunner().invoke(cli, [*args, "-q"])
    assert quiet.exit_code == 0 and "interrupted" not in quiet.output

    resumed = CliRunner().invoke(cli, command.split()[1:])
    assert resumed.exit_code == 0, resumed.output
    assert "Training time, this process" in resumed.output and "Wall time, this process" in resumed.output
    assert "An interrupted run" not in resumed.output
