"""SIGINT and SIGTERM at each phase of a command: the exit code, one line, no process left, files whole.

Each phase is reached deterministically, not by timing: loading waits on a named
pipe, training on a logged step, the final evaluation on its "evaluating" line,
predict on its worker processes. All but the quick one (SIGTERM while eval reads a
checkpoint) are in the slow suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import ENV, one_error_line, rnnmnist

from rnnmnist.training import checkpoint
from rnnmnist.training.synthetic import make_tiny_mnist, tiny_train_args

SIGNALS = [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc: no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def finish(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    kids = children(proc.pid)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)  # returns only when nobody holds the pipes any more
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{k}").exists() for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [k for k in kids if Path(f"/proc/{k}").exists()], "worker processes outlived the command"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return proc.returncode, lines[0]


@pytest.fixture(scope="module")
def model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signals") / "run"
    done = subprocess.run([sys.executable, "-m", "rnnmnist", *tiny_train_args(tiny_data, out)], capture_output=True)
    assert done.returncode == 0
    return out / "checkpoint.pt"


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "name"), SIGNALS)
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_signal_while_loading_a_checkpoint_is_one_line_and_writes_nothing(
    tmp_path: Path, command: str, sig: int, code: int, name: str
) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    extra = {"eval": [], "predict": ["--index", "0"], "export": ["--format", "torchscript"]}[command]
    proc = start(command, str(fifo), *extra)
    writer = os.open(fifo, os.O_WRONLY)  # the command is now reading the checkpoint
    try:
        returncode, line = finish(proc, sig)
    finally:
        os.close(writer)
    assert returncode == code
    assert line == f"Error: interrupted ({name}); files already written are intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # nothing written


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "name"), SIGNALS)
def test_a_signal_while_training_leaves_a_whole_resumable_checkpoint(
    tiny_data: Path, tmp_path: Path, sig: int, code: int, name: str
) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(tiny_data, out)
    args[args.index("--iters") + 1] = str(25 * 5000 + 1)
    proc = start(*args)
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size):
        assert proc.poll() is None
        time.sleep(0.01)
    returncode, line = finish(proc, sig)
    assert returncode == code
    assert line.startswith(f"Error: interrupted ({name}) at step ")
    assert checkpoint.load(out / "checkpoint.pt").training is not None  # whole and resumable


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "name"), SIGNALS)
def test_a_signal_during_the_final_evaluation_leaves_a_run_that_resumes(
    tmp_path: Path, sig: int, code: int, name: str
) -> None:
    data = make_tiny_mnist(tmp_path / "data", n_train=300, n_test=60_000)
    out = tmp_path / "run"
    proc = start(*tiny_train_args(data, out), "--val-size", "50", "--hidden-size", "256")
    for line in proc.stdout:
        if line.startswith("evaluating"):
            break
    returncode, line = finish(proc, sig)
    if returncode == 0:
        pytest.skip("the evaluation ended before the signal arrived")
    assert returncode == code
    assert f"interrupted ({name}) during the final evaluation" in line
    done = rnnmnist("train", "--resume", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 20


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "name"), SIGNALS)
def test_a_signal_during_predict_ends_its_worker_processes(
    model: Path, tmp_path: Path, sig: int, code: int, name: str
) -> None:
    from PIL import Image

    from rnnmnist.images.redraw import draw_shape

    folder = tmp_path / "images"
    folder.mkdir()
    image = Image.fromarray((255 - draw_shape("0") * 255).astype("uint8")).resize((400, 400))
    for i in range(300):
        image.save(folder / f"{i:03}.png")
    proc = start("predict", str(model), str(folder))
    deadline = time.monotonic() + 60
    while len(children(proc.pid)) < 2 and time.monotonic() < deadline:  # the worker pool is up
        time.sleep(0.01)
    returncode, line = finish(proc, sig)
    if returncode in (0, 1):
        pytest.skip("predict finished before the signal arrived")
    assert returncode == code
    assert line.startswith(f"Error: interrupted ({name})")


def test_sigterm_while_eval_reads_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)  # reading it blocks: the process is certainly in its loading phase
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", "eval", str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    writer = os.open(fifo, os.O_WRONLY)  # returns once eval has opened it
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    os.close(writer)
    assert proc.returncode == 143
    assert one_error_line(stderr) == "Error: interrupted (SIGTERM); files already written are intact"


@pytest.mark.slow
def test_sigint_during_the_final_evaluation_saves_and_resume_finishes_it(tmp_path: Path) -> None:
    data = make_tiny_mnist(tmp_path / "data", n_train=300, n_test=60_000)  # a long final evaluation
    out = tmp_path / "run"
    args = [*tiny_train_args(data, out), "--val-size", "50", "--hidden-size", "256"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    for line in proc.stdout:
        if line.startswith("evaluating"):
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the evaluation ended before the signal arrived")
    assert proc.returncode == 130
    assert "during the final evaluation" in one_error_line(stderr)
    assert checkpoint.load(out / "checkpoint.pt").training is not None
    done = rnnmnist("train", "--resume", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["test_n"] == 60_000
