"""`rnnmnist predict` as a real process: closed and endless stdin, signals, worker processes, a hostile batch."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from clitools import device_node
from hostile import random_hostile_images
from tinymodel import tiny_checkpoint

from rnnmnist.cli.main import cli
from rnnmnist.images.decode import MAX_STREAM_BYTES, Failed, prepare
from rnnmnist.images.inputs import InputImages, read_stdin
from rnnmnist.images.redraw import draw_shape, random_style, redraw
from rnnmnist.signals import Interrupted, interrupting

COMMAND = [sys.executable, "-m", "rnnmnist", "predict"]


@pytest.fixture(scope="module")
def model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_checkpoint(tiny_data, tmp_path_factory))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 drawn digits: enough for worker processes."""
    folder = tmp_path_factory.mktemp("pages")
    rng = np.random.default_rng(0)
    for i in range(80):
        style = random_style(rng)
        style.canvas, style.fmt = (96, 96), "PNG"
        (folder / f"{i:02d}.png").write_bytes(redraw(draw_shape("017"[i % 3]), style, seed=i))
    return folder


def one_line_errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    lines = stderr.splitlines()
    assert all(line.startswith("Error: ") for line in lines), stderr
    return lines


# --- stdin


def test_stdin_is_read_only_for_dash(tmp_path: Path) -> None:
    def untouchable() -> None:
        raise AssertionError("stdin was touched without - among the inputs")

    with InputImages([str(tmp_path / "missing.png")], stdin=untouchable) as images:
        assert images.results() == [(str(tmp_path / "missing.png"), Failed("no such file"))]
    with InputImages(["-", "-"], stdin=None) as images:
        assert images.results() == [("-", Failed("stdin is closed")), ("-", Failed("standard input given twice"))]
    with InputImages(["-"], stdin=lambda: io.BytesIO(b"")) as images:
        assert images.results() == [("-", Failed("stdin is empty"))]


def test_stdin_is_capped() -> None:
    exactly = read_stdin(lambda: io.BytesIO(bytes(MAX_STREAM_BYTES)))
    assert isinstance(exactly, bytes) and len(exactly) == MAX_STREAM_BYTES
    assert read_stdin(lambda: io.BytesIO(bytes(MAX_STREAM_BYTES + 1))) == Failed(
        "stdin holds more than 64 MiB, the limit for one image"
    )


def test_endless_stdin_ends_quickly(model: str, tmp_path: Path) -> None:
    with open(device_node(tmp_path, "zero"), "rb") as zeros:  # `predict C - < /dev/zero`, in this process
        start = time.monotonic()
        result = CliRunner().invoke(cli, ["predict", model, "-", "--json"], input=zeros)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"input": "-", "error": "stdin holds more than 64 MiB, the limit for one image"}
    assert one_line_errors(result.stderr) == ["Error: -: stdin holds more than 64 MiB, the limit for one image"]
    assert time.monotonic() - start < 20  # one 64 MiB read, not a fill of memory


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="names pipes as /dev/fd/N")
def test_pipes_given_by_name_are_capped_too(pages: Path, tmp_path: Path) -> None:
    """`predict C <(cat digit.png)` works; `predict C <(cat /dev/zero)` ends (Pillow reads a pipe whole)."""
    with subprocess.Popen(["cat", str(pages / "00.png")], stdout=subprocess.PIPE) as cat:
        digit = prepare(Path(f"/dev/fd/{cat.stdout.fileno()}"))
    assert isinstance(digit, np.ndarray) and digit.shape == (28, 28)
    with subprocess.Popen(["cat", str(device_node(tmp_path, "zero"))], stdout=subprocess.PIPE) as cat:
        endless = prepare(Path(f"/dev/fd/{cat.stdout.fileno()}"))
        cat.kill()
    assert endless == Failed("holds more than 64 MiB, the limit for one image")


# --- signals and worker processes


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop this test makes
def test_a_signal_raises_interrupted_even_where_python_drops_it() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, interrupting():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # not reached
    assert (caught.value.name, caught.value.signum) == ("SIGTERM", 15)

    class Dropping:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs in here, where Python prints and drops exceptions

    with pytest.raises(Interrupted) as caught, interrupting():
        Dropping()
    assert (caught.value.name, caught.value.signum) == ("SIGINT", 2)
    assert signal.getsignal(signal.SIGTERM) is before


def _group(pgid: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, state) of the live processes in process group ``pgid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in "ZX":
            found.append((int(entry), int(ppid), state))
    return found


def _start_with_workers(model: str, pages: Path) -> subprocess.Popen[str]:
    """`predict` on 80 images in its own process group, returned once its worker processes run."""
    proc = subprocess.Popen(
        [*COMMAND, model, str(pages), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can find (and clean up) every process it made
    )
    deadline = time.monotonic() + 60
    while not any(ppid == proc.pid for _, ppid, _ in _group(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, "no worker processes started"
        time.sleep(0.01)
    return proc


def _ends_whole(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Its stdout and stderr, read to their end (nobody holds them), and no process of its group left."""
    try:
        out, err = proc.communicate(timeout=30)
        deadline = time.monotonic() + 5
        while _group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _group(proc.pid) == [], "processes left behind"
    finally:
        if _group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
    return out, err


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_predict_and_its_workers(model: str, pages: Path, signum: signal.Signals) -> None:
    proc = _start_with_workers(model, pages)
    proc.send_signal(signum)
    _, err = _ends_whole(proc)
    assert proc.returncode == 128 + signum
    lines = one_line_errors(err)
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted") and signum.name in lines[0]


@needs_proc
def test_workers_die_with_a_killed_parent(model: str, pages: Path) -> None:
    proc = _start_with_workers(model, pages)
    proc.kill()  # nothing can be cleaned up: the workers must go by themselves and let go of the pipes
    _ends_whole(proc)
    assert proc.returncode == -signal.SIGKILL


def test_a_dead_worker_fails_only_the_images_it_had_not_done(pages: Path) -> None:
    with InputImages([str(pages)], workers=2) as images:
        workers = multiprocessing.active_children()
        assert workers
        os.kill(workers[0].pid, signal.SIGKILL)  # as a decoder crash or the OOM killer would
        results = images.results()
    assert len(results) == 80
    died = Failed("a worker process died before preparing this image")
    assert all(isinstance(r, np.ndarray) or r == died for _, r in results)
    assert any(isinstance(r, Failed) and r == died for _, r in results)


# --- a batch of hostile files, one process


def test_hostile_batch_with_closed_stdin_in_one_process(model: str, tmp_path: Path, pages: Path) -> None:
    for i, (suffix, data) in enumerate(random_hostile_images(72, seed=2)):
        (tmp_path / f"{i:03d}{suffix}").write_bytes(data)
    (tmp_path / "good.png").write_bytes((pages / "00.png").read_bytes())
    done = subprocess.run(  # `predict C FOLDER - 0<&-`: stdin closed, as under some supervisors
        ["bash", "-c", 'exec "$@" 0<&-', "bash", *COMMAND, model, str(tmp_path), "-", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 74
    assert rows[-1] == {"input": "-", "error": "stdin is closed"}
    assert "prediction" in next(r for r in rows if r["input"].endswith("good.png"))
    failed = [r for r in rows if "error" in r]
    assert all(set(r) == {"input", "error"} and "\n" not in r["error"] for r in failed)
    assert all("prediction" in r for r in rows if "error" not in r)
    assert one_line_errors(done.stderr) == [f"Error: {r['input']}: {r['error']}" for r in failed]


def test_inference_loads_without_the_command_lines_input_machinery() -> None:
    """The server predicts with rnnmnist.images.predict too: it must not bring the CLI's worker pool and signal code."""
    code = "import sys, rnnmnist.images.predict; print('rnnmnist.images.inputs' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
