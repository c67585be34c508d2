"""rnnmnist runs / compare: run folders read without weights (peek), statuses, filters, side by side."""

from __future__ import annotations

import io
import json
import pickle
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnmnist import checkpoint, config
from rnnmnist.cli import cli
from rnnmnist.config import Config
from rnnmnist.errors import CheckpointError
from rnnmnist.peek import TensorStub, peek
from rnnmnist.run import Plan, train
from rnnmnist.rundir import RunLock
from rnnmnist.train import LogRecord, StopEarly, TrainCallbacks

TINY = Config(hidden_size=16, batch_size=25, iters=251, val_size=100, log_every=5, device="cpu", eval_every=5)


class StopAtFirstLog(TrainCallbacks):
    def on_log(self, record: LogRecord) -> None:
        raise StopEarly


@pytest.fixture(scope="module")
def runs_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fast/ and slow/ finished (the default lr and 0.003), stopped/ resumable, group/killed/ failed."""
    root = tmp_path_factory.mktemp("runs")
    for name, cfg in (("fast", TINY), ("slow", replace(TINY, lr=0.003))):
        train(Plan(root / name, cfg, data_dir=tiny_data, download=False), None, time.perf_counter())
    with pytest.raises(StopEarly):
        train(Plan(root / "stopped", TINY, data_dir=tiny_data, download=False), StopAtFirstLog(), time.perf_counter())
    killed = root / "group" / "killed"
    killed.mkdir(parents=True)
    (killed / "config.toml").write_text('cell = "gru"\n')
    (killed / "metrics.jsonl").write_text('{"step": 5, "elapsed": 1.5}\n{"step": 10, "elapsed": 2.5}\n')
    return root


def _runs(*args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["runs", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["runs"]


def test_peek_reads_what_load_reads_without_the_weights(runs_dir: Path) -> None:
    for name in ("fast", "stopped"):
        path = runs_dir / name / "checkpoint.pt"
        raw, ckpt = peek(path), checkpoint.load(path)
        assert raw["config"] == ckpt.config.to_dict() and raw["metrics"] == ckpt.metrics
        assert raw["model"]["head.weight"] == TensorStub((10, 16))
    assert peek(runs_dir / "stopped" / "checkpoint.pt")["training"]["step"] == 5


def test_peek_refuses_what_a_checkpoint_never_holds(tmp_path: Path) -> None:
    class Shell:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"format": "rnnmnist-checkpoint", "x": Shell()}))
    with pytest.raises(CheckpointError, match=r"refusing posix\.system"):
        peek(evil)
    assert not (tmp_path / "owned").exists()
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(CheckpointError, match="not an rnnmnist checkpoint"):
        peek(tmp_path / "text.pt")
    foreign = io.BytesIO()
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weights": 1}))
    (tmp_path / "foreign.pt").write_bytes(foreign.getvalue())
    with pytest.raises(CheckpointError, match="no rnnmnist format marker"):
        peek(tmp_path / "foreign.pt")


def test_runs_lists_statuses_and_figures(runs_dir: Path) -> None:
    rows = {r["name"]: r for r in _runs(str(runs_dir))}
    assert set(rows) == {"fast", "slow", "stopped", "group/killed"}
    fast = rows["fast"]
    metrics = checkpoint.load(runs_dir / "fast" / "checkpoint.pt").metrics
    assert fast["status"] == "finished" and fast["steps"] == 10
    assert fast["test_accuracy"] == metrics["test_accuracy"]
    assert fast["best_test_accuracy"] == metrics["best"]["test_accuracy"]
    assert fast["wall_seconds"] == metrics["wall_seconds"]
    assert fast["config_diff"]["hidden_size"] == 16 and "precision" not in fast["config_diff"]
    assert rows["slow"]["config_diff"]["lr"] == 0.003
    assert rows["stopped"]["status"] == "resumable" and rows["stopped"]["steps"] == 5
    assert rows["stopped"]["test_accuracy"] is None
    killed = rows["group/killed"]
    assert killed["status"] == "failed" and killed["steps"] == 10 and killed["train_seconds"] == 2.5
    assert killed["config_diff"] == {"cell": "gru"} and "no checkpoint.pt" in killed["problem"]


def test_runs_sees_a_running_run_without_taking_its_lock(runs_dir: Path) -> None:
    lock = RunLock(runs_dir / "stopped")
    lock.acquire()
    try:
        assert {r["name"]: r["status"] for r in _runs(str(runs_dir))}["stopped"] == "running"
    finally:
        lock.release()


def test_runs_where_and_sort(runs_dir: Path) -> None:
    assert [r["name"] for r in _runs(str(runs_dir), "--where", "status=finished", "--sort", "lr")] == ["slow", "fast"]
    assert [r["name"] for r in _runs(str(runs_dir), "--where", "cell=gru")] == ["group/killed"]
    assert [r["name"] for r in _runs(str(runs_dir), "--where", "lr=0.003", "--where", "hidden-size=16")] == ["slow"]
    ranked = _runs(str(runs_dir), "--sort", "test_accuracy")
    accuracies = [r["test_accuracy"] for r in ranked if r["test_accuracy"] is not None]
    assert accuracies == sorted(accuracies, reverse=True) and ranked[-1]["test_accuracy"] is None
    table = CliRunner().invoke(cli, ["runs", str(runs_dir)])
    assert table.exit_code == 0 and "resumable" in table.output and "cell=gru" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--where", "colour=red"), "'colour' is not a config key or status"),
        (("--where", "status=done"), "status is one of finished, running, resumable, failed"),
        (("--where", "lr=fast"), "lr=fast"),
        (("--sort", "speed"), "sort by one of"),
    ],
)
def test_runs_bad_filters_are_one_line(runs_dir: Path, args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["runs", str(runs_dir), *args])
    assert result.exit_code == 2 and message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")


def test_compare_shows_what_differs_and_plots(runs_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "compare.png"
    folders = [str(runs_dir / name) for name in ("fast", "slow", "stopped")]
    result = CliRunner().invoke(cli, ["compare", *folders, "--plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["differing_keys"] == ["lr"]
    assert [r["config_differing"]["lr"] for r in report["runs"]] == [config.DEFAULTS.lr, 0.003, config.DEFAULTS.lr]
    assert report["files"] == [str(png)] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = CliRunner().invoke(cli, ["compare", *folders[:2]])
    assert "0.003" in table.output and "test accuracy" in table.output
    one = CliRunner().invoke(cli, ["compare", folders[0]])
    assert one.exit_code == 2 and "at least two" in one.output
