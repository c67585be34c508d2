"""train --seeds / --repeat: a run folder per seed, statistics in summary.json, continuing where it stopped."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnmnist.cli.main import cli
from rnnmnist.config import Config
from rnnmnist.errors import RnnmnistError
from rnnmnist.experiments.seeds import parse_seeds
from rnnmnist.training import checkpoint
from rnnmnist.training.events import LogRecord, StopEarly, TrainCallbacks
from rnnmnist.training.lifecycle import Plan, train
from rnnmnist.training.synthetic import tiny_train_args

SHORT = ("--iters", "251", "--no-download")  # 10 steps
# As the command line resolves it: a run this short takes an eighth of non-digits.
TINY = Config(hidden_size=16, batch_size=25, iters=251, val_size=100, log_every=5, device="cpu", outlier_share=0.125)


class StopAtFirstLog(TrainCallbacks):
    def on_log(self, record: LogRecord) -> None:
        raise StopEarly


def _seeds(data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_args(data, out, *SHORT, *extra)


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5, 1, 3") == [3, 4, 5, 1]
    with pytest.raises(RnnmnistError, match="'x' is not a seed"):
        parse_seeds("0,x")
    assert parse_seeds("0-999, 0-999, 5") == list(range(1000))  # distinct seeds count, in order
    with pytest.raises(RnnmnistError, match=r"too many seeds \(max 1000\)"):
        parse_seeds("0-1000")
    with pytest.raises(RnnmnistError, match=r"too many seeds \(max 1000\)"):
        parse_seeds("0-999,2000")
    with pytest.raises(RnnmnistError, match="5-3 is an empty range"):
        parse_seeds("5-3")


def test_a_huge_seed_range_is_refused_at_once() -> None:
    """A typo (0-99999999999) must not expand 10**11 seeds first: a regression fails here, it does not hang."""
    code = "from rnnmnist.experiments.seeds import parse_seeds\nparse_seeds('0-99999999999')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "too many seeds (max 1000)" in done.stderr


def test_seeds_summary_and_continuing(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    runner = CliRunner()
    result = runner.invoke(cli, [*_seeds(tiny_data, out, "--seeds", "0,1"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text()) | {"summary_file": str(out / "summary.json")}
    accuracies = [r["test_accuracy"] for r in summary["runs"]]
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    assert summary["test_accuracy"]["values"] == accuracies
    assert summary["test_accuracy"]["mean"] == pytest.approx(statistics.fmean(accuracies))
    assert summary["test_accuracy"]["std"] == pytest.approx(statistics.stdev(accuracies))
    assert summary["test_loss"]["min"] == min(r["test_loss"] for r in summary["runs"])
    for seed in (0, 1):
        ckpt = checkpoint.load(out / f"seed-{seed}" / "checkpoint.pt")
        assert ckpt.config.seed == seed and ckpt.training is None
    assert "seed" not in summary["config"] and summary["config"]["hidden_size"] == 16

    # Seed 2 was interrupted (a resumable checkpoint after 5 steps), seed 3 died before saving anything.
    cfg = replace(TINY, seed=2)
    with pytest.raises(StopEarly):
        train(Plan(out / "seed-2", cfg, data_dir=tiny_data, download=False), StopAtFirstLog(), time.perf_counter())
    assert checkpoint.load(out / "seed-2" / "checkpoint.pt").training["step"] == 5
    (out / "seed-3").mkdir()
    (out / "seed-3" / "config.toml").write_text("# killed\n")
    (out / "seed-3" / "metrics.jsonl").write_text('{"step": 5}\n')
    done_before = (out / "seed-0" / "checkpoint.pt").stat().st_mtime_ns

    result = runner.invoke(cli, _seeds(tiny_data, out, "--repeat", "4"))
    assert result.exit_code == 0, result.output
    assert "seed 0 " not in result.output and "seed 2 (3 of 4): resuming" in result.output
    assert "seed 3 (4 of 4): training" in result.output and "mean ± std" in result.output
    assert (out / "seed-0" / "checkpoint.pt").stat().st_mtime_ns == done_before
    steps = [json.loads(line)["step"] for line in (out / "seed-2" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10]  # resumed at step 5, not started again
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2, 3] and summary["test_accuracy"]["n"] == 4

    # Continuing with another config is refused, naming the difference.
    result = runner.invoke(cli, [*_seeds(tiny_data, out, "--seeds", "0,1"), "--lr", "0.003"])
    assert result.exit_code == 1
    assert f"was trained with another config (lr {Config().lr} (not 0.003))" in result.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--seeds", "0,1", "--repeat", "2"), "give --seeds or --repeat, not both"),
        (("--seeds", "0,1", "--seed", "3"), "give --seed or --seeds"),
        (("--seeds", "0,a"), "'a' is not a seed"),
        (("--seeds", "0-99999999999"), "too many seeds (max 1000)"),
        (("--repeat", "99999999999"), "--repeat 99999999999: too many seeds (max 1000)"),
    ],
)
def test_seed_flags_are_checked(tiny_data: Path, tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, _seeds(tiny_data, tmp_path / "s", *flags))
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "s").exists()


def test_the_seed_limit_is_in_the_help() -> None:
    from rnnmnist.experiments.seeds import MAX_SEEDS

    help_text = " ".join(CliRunner().invoke(cli, ["train", "--help"]).output.split())
    assert f"at most {MAX_SEEDS} seeds" in help_text


def test_seeds_refuse_resume(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "r"), "--seeds", "0,1"])
    assert result.exit_code == 2 and "without --resume" in result.output


@pytest.mark.slow
def test_seeds_with_nproc(tiny_data: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "seeds"
    args = tiny_train_args(
        tiny_data, out, "--iters", "261", "--batch-size", "26", "--outlier-share", "0.25", "--no-download"
    )
    done = subprocess.run(
        [sys.executable, "-m", "rnnmnist", *args, "--seeds", "0", "--nproc", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # the ranks' own output went to stderr
    assert summary["seeds"] == [0] and summary["test_accuracy"]["std"] is None
    assert checkpoint.load(out / "seed-0" / "checkpoint.pt").training is None


def test_summary_file_is_standard_json_when_a_figure_is_not_a_number(tmp_path: Path) -> None:
    """A seed whose loss came out NaN: summary.json says null (standard JSON), never a bare NaN."""
    from rnnmnist.experiments.seeds import seed_folder, summarise
    from rnnmnist.training.model import SequenceClassifier

    cfg = Config(hidden_size=8, precision="fp32")
    for seed, loss in ((0, 0.5), (1, float("nan"))):
        folder = seed_folder(tmp_path, seed)
        folder.mkdir(parents=True)
        metrics = {"test_accuracy": 0.9, "test_loss": loss, "val_accuracy": 0.9}
        metrics |= {"train_seconds": 1.0, "wall_seconds": 2.0}
        checkpoint.save(folder / "checkpoint.pt", cfg, SequenceClassifier(cfg), metrics)
    summarise(cfg, [0, 1], tmp_path)

    def refuse(constant: str) -> None:
        raise AssertionError(f"summary.json holds a bare {constant}")

    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert [r["test_loss"] for r in summary["runs"]] == [0.5, None]
