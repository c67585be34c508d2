"""Data-parallel training: two CPU processes with gloo, through `rnnmnist train --nproc 2`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnmnist.training import checkpoint

# fp32 and no dropout or augmentation: two processes then compute what one does, up to float rounding.
BASE = ("--val-size", "100", "--batch-size", "50", "--hidden-size", "16", "--log-every", "5", "--device", "cpu")
BASE += ("--precision", "fp32", "--no-augment")


def rnnmnist(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rnnmnist", *args], capture_output=True, text=True, timeout=timeout)


def train(data: Path, out: Path, *extra: str, nproc: int = 1) -> dict:
    args = ["train", "--data-dir", str(data), "--out", str(out), "--json", *BASE, *extra]
    done = rnnmnist(*args, *(["--nproc", str(nproc)] if nproc > 1 else []))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_two_processes_match_one(tiny_data: Path, tmp_path: Path) -> None:
    """Same global batch: DDP averages the two halves' gradients, which is the whole batch's gradient.
    Not bit for bit: the reductions add in a different order."""
    one = train(tiny_data, tmp_path / "one", "--iters", "1001")
    two = train(tiny_data, tmp_path / "two", "--iters", "1001", nproc=2)
    assert two["steps"] == one["steps"] == 20
    a = checkpoint.load(tmp_path / "one" / "checkpoint.pt").model_state
    b = checkpoint.load(tmp_path / "two" / "checkpoint.pt").model_state
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4, rtol=1e-4), key
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-3)
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 1 / 200  # at most one of 200 images flips
    # One run folder, written by rank 0; eval reads its checkpoint and agrees with what training reported.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoint.pt", "config.toml", "metrics.jsonl", "run.json",
    ]  # fmt: skip
    done = rnnmnist("eval", two["checkpoint"], "--data-dir", str(tiny_data), "--json")
    assert json.loads(done.stdout)["accuracy"] == two["test_accuracy"]
    logged = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [5, 10, 15, 20]  # logged once, not once per rank


def _ranks(launcher: int) -> list[int]:
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


@pytest.mark.slow
def test_a_dead_rank_ends_the_run_with_an_error(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(tiny_data), "--out", str(out), *BASE, "--iters", "500001", "--nproc", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "rnnmnist", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # generous: a loaded 2-core machine is slow, and a pass returns early
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.1)
    ranks = _ranks(proc.pid)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)  # an error, not a hang
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    assert "rank 1 was killed (SIGKILL)" in stderr


@pytest.mark.slow
def test_distributed_resume(tiny_data: Path, tmp_path: Path) -> None:
    long = ("--iters", "10001", "--save-every", "10", "--hidden-size", "48")  # 200 steps
    whole = train(tiny_data, tmp_path / "whole", *long, nproc=2)
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(tiny_data), "--out", str(out), *BASE, *long]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args, "--nproc", "2"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600  # generous: a loaded 2-core machine is slow, and a pass returns early
    while not (out / "checkpoint.pt").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint was written"
        time.sleep(0.05)
    for rank in _ranks(proc.pid):  # the ranks first: killing the launcher first would orphan them
        os.kill(rank, signal.SIGKILL)
    proc.kill()
    proc.wait()
    state = checkpoint.load(out / "checkpoint.pt").training
    assert state is not None and len(state["rng"]) == 2  # one RNG state per rank
    wrong = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data))
    assert wrong.returncode == 1
    assert "written by a run of 2 process(es); resume it with as many (--nproc 2)" in wrong.stderr
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data), "--nproc", "2", "--json")
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt").model_state
    b = checkpoint.load(out / "checkpoint.pt").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_digits_must_divide_among_processes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"  # 26 divides among 2, but 0.2 of 26 is 5 non-digits, which do not
    done = rnnmnist(
        "train", "--data-dir", str(tiny_data), "--batch-size", "26", "--outlier-share", "0.2", "--nproc", "2",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 2
    assert "the batch's 5 generated non-digits (--outlier-share 0.2 of --batch-size 26) do not divide" in done.stderr
    assert not out.exists()


def test_batch_must_divide_among_processes(tiny_data: Path, tmp_path: Path) -> None:
    done = rnnmnist(
        "train", "--data-dir", str(tiny_data), "--batch-size", "25", "--nproc", "2", "--out", str(tmp_path / "r")
    )
    assert done.returncode == 2
    assert "does not divide among 2 processes" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ctrl_c_to_a_distributed_run_saves_and_exits_130_in_one_line(tiny_data: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches the launcher and every rank (one process group): the ranks save, the launcher says
    nothing more (no traceback of torchrun's agent) and exits as interrupted."""
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(tiny_data), "--out", str(out), *BASE, "--iters", "500001", "--nproc", "2", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 600  # generous: a loaded 2-core machine is slow, and a pass returns early
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()  # neither a traceback nor torchrun's own log lines
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted (SIGINT)"), stderr
    assert "resume with: rnnmnist train --resume" in stderr
    assert checkpoint.load(out / "checkpoint.pt").training is not None
