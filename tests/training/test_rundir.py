"""The run folder (rnnmnist.training.rundir): what --out may name, which leftovers --force removes, the lock.

The real CLI runs in process where that is enough and as a subprocess where the process matters (the lock
is held by another process, or by one that was killed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import copy_of, device_node, invoke, one_error_line, rnnmnist

from rnnmnist.training import checkpoint
from rnnmnist.training.rundir import RunDir
from rnnmnist.training.synthetic import tiny_train_args


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run folder (30 steps, saved every 10)."""
    out = tmp_path_factory.mktemp("rundir") / "run"
    result = invoke(*tiny_train_args(tiny_data, out), "--save-every", "10", "--iters", str(25 * 30 + 1))
    assert result.exit_code == 0, result.output
    return out


def test_only_rnnmnists_own_leftovers_are_removed_and_only_with_force(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "u"
    out.mkdir()
    (out / ".draft.tmp").write_text("the user's")
    (out / ".checkpoint.pt.rnnmnist-x1y2.tmp").write_text("a killed write's")
    assert invoke(*tiny_train_args(tiny_data, out)).exit_code == 0
    assert (out / ".draft.tmp").exists() and (out / ".checkpoint.pt.rnnmnist-x1y2.tmp").exists()  # no --force
    assert invoke(*tiny_train_args(tiny_data, out), "--force").exit_code == 0
    assert (out / ".draft.tmp").read_text() == "the user's"
    assert not (out / ".checkpoint.pt.rnnmnist-x1y2.tmp").exists()


@pytest.mark.parametrize("out", ["", ".", "..", "/", "~"])
def test_out_that_is_empty_here_above_root_or_home_is_a_usage_error(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.toml").write_text("lr = 0.5\n")  # the user's own file
    monkeypatch.chdir(project)
    args = tiny_train_args(tiny_data, Path("x"))
    args[args.index("--out") + 1] = os.path.expanduser(out)
    result = invoke(*args, "--force")
    assert result.exit_code == 2, result.output
    assert (project / "config.toml").read_text() == "lr = 0.5\n"


def test_force_removes_everything_an_earlier_run_wrote_and_nothing_else(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke(*tiny_train_args(tiny_data, out)).exit_code == 0
    for name in ("curves.png", "confusion.png", "mistakes.png"):
        (out / name).write_bytes(b"old picture")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1").write_bytes(b"old events")
    (out / "notes.txt").write_text("mine")
    assert invoke(*tiny_train_args(tiny_data, out), "--force").exit_code == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"checkpoint.pt", "config.toml", "metrics.jsonl", "run.json", "notes.txt"}


@pytest.mark.parametrize("odd", ["fifo", "device", "dangling link", "link to a fifo"])
@pytest.mark.parametrize("name", ["config.toml", "checkpoint.pt", "reading.png"])
def test_a_run_files_name_held_by_something_else_is_refused_even_with_force(
    tiny_data: Path, tmp_path: Path, odd: str, name: str
) -> None:
    """--force removes what a run wrote, and a run writes only regular files: anything else under one of
    its names is refused before anything is removed, and left as it was."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")  # the user's other run file, which must survive the refusal
    held = out / name
    if odd == "fifo":
        os.mkfifo(held)
    elif odd == "device":
        device_node(out, "null").rename(held)
    elif odd == "dangling link":
        held.symlink_to(tmp_path / "missing")
    else:
        os.mkfifo(tmp_path / "pipe")
        held.symlink_to(tmp_path / "pipe")
    kind = os.lstat(held).st_mode
    for force in ([], ["--force"]):
        result = invoke(*tiny_train_args(tiny_data, out), *force)
        assert result.exit_code == 1, result.output
        assert f"cannot write {held}" in one_error_line(result.stderr)
    assert os.lstat(held).st_mode == kind and (out / "metrics.jsonl").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted({name, "metrics.jsonl"})


def test_resume_leaves_plots_names_alone_and_refuses_its_own_files_held_by_something_else(
    stopped_run: tuple[Path, bytes], tiny_data: Path, tmp_path: Path
) -> None:
    """A resumed run writes only training's files: what holds a picture's name is not its business."""
    run = copy_of(stopped_run, tmp_path / "run")
    (run / "curves.png").symlink_to(tmp_path / "missing.png")
    os.mkfifo(run / "mistakes.png")
    (run / "reading.png").mkdir()
    os.mkfifo(run / "run.json.fifo")
    (run / "run.json").rename(tmp_path / "run.json")
    (run / "run.json.fifo").rename(run / "run.json")
    refused = invoke("train", "--resume", str(run), "--data-dir", str(tiny_data))
    assert refused.exit_code == 1 and f"cannot write {run / 'run.json'}" in one_error_line(refused.stderr)
    (run / "run.json").unlink()
    (tmp_path / "run.json").rename(run / "run.json")
    folder = RunDir(run)
    folder.prepare_resume()  # what --resume does before it trains (training on is other tests' business)
    folder.lock.release()
    assert (run / "curves.png").is_symlink() and (run / "reading.png").is_dir()


def test_force_removes_a_link_with_a_run_files_name_and_keeps_what_it_names(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke(*tiny_train_args(tiny_data, out)).exit_code == 0
    mine = tmp_path / "my-log.jsonl"
    mine.write_text("the user's\n")
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(mine)
    assert invoke(*tiny_train_args(tiny_data, out), "--force").exit_code == 0
    assert mine.read_text() == "the user's\n"
    assert not (out / "metrics.jsonl").is_symlink()


def test_a_run_that_never_trained_is_replaced_by_a_plain_rerun(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("lr = 0.01\n")  # what a start interrupted before step 1 left
    (out / "metrics.jsonl").write_text("")
    assert invoke(*tiny_train_args(tiny_data, out)).exit_code == 0
    assert checkpoint.load(out / "checkpoint.pt").metrics["steps"] == 20


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not_stale(
    run: Path, stopped_run: tuple[Path, bytes], tiny_data: Path, tmp_path: Path
) -> None:
    resumable = copy_of(stopped_run, tmp_path / "resumable")
    before = {p.name: p.read_bytes() for p in resumable.iterdir()}
    holders = [RunDir(resumable), RunDir(run)]
    for holder in holders:
        holder.lock.acquire()  # as a training process writing there holds it
    try:
        for args in (("train", "--resume", str(resumable)), (*tiny_train_args(tiny_data, run), "--force")):
            done = rnnmnist(*args)
            assert done.returncode == 1
            assert "in use by another rnnmnist process" in one_error_line(done.stderr)
    finally:
        for holder in holders:
            holder.lock.release()
    assert {p.name: p.read_bytes() for p in resumable.iterdir()} == before  # the writer's files untouched
    # A process that holds the lock and is killed: the kernel releases it.
    code = f"from rnnmnist.training.rundir import RunDir; d = RunDir({str(run)!r}); d.lock.acquire()"
    code += "; print('held', flush=True)"
    code += "; input()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    again = RunDir(run)
    again.lock.acquire()
    again.lock.release()
