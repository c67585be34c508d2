"""Interrupts, kills, resume, divergence and failing disks, through the real CLI as a subprocess."""

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
from rnnmnist.training.synthetic import tiny_train_args

# 600 steps of 25 tiny images with an LSTM 64: long enough (a second or more) to be hit mid-run.
STEPS = 600
LONG = ("--iters", str(25 * STEPS + 1), "--hidden-size", "64", "--save-every", "20", "--seed", "3")
# Augmentation draws random numbers and validation keeps best.pt: a resume must restore both.
LONG += ("--augment", "--eval-every", "50", "--dropout", "0.1")


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    args = tiny_train_args(data, out, *extra)
    i = args.index("--iters")
    del args[i : i + 2]
    i = args.index("--hidden-size")
    del args[i : i + 2]
    return [*args, *LONG]


def rnnmnist(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rnnmnist", *args], capture_output=True, text=True, timeout=900, **kwargs
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_step(proc: subprocess.Popen[str], metrics: Path, step: int) -> None:
    """Wait until the run has logged ``step``."""
    deadline = time.monotonic() + 600  # generous: a loaded 2-core machine is slow, and a pass returns early
    while time.monotonic() < deadline:
        if metrics.exists():
            # Only whole lines: the run may be writing the last one right now.
            text = metrics.read_text()
            lines = text[: text.rfind("\n") + 1].splitlines()
            if lines and json.loads(lines[-1]).get("step", 0) >= step:
                return
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()}"
        time.sleep(0.002)
    raise AssertionError(f"the run did not reach step {step}")


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path).model_state


def curve(out: Path) -> list[tuple]:
    """metrics.jsonl without its timings."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [tuple(v for k, v in sorted(r.items()) if k not in ("examples_per_s", "elapsed")) for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("whole") / "run"
    done = rnnmnist(*train_args(tiny_data, out, "--json"))
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


def assert_same_run(resumed: Path, resumed_result: dict, whole: tuple[Path, dict]) -> None:
    out, result = whole
    a, b = weights(out / "checkpoint.pt"), weights(resumed / "checkpoint.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    for key in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "steps", "examples", "best"):
        if key == "best":
            assert {k: v for k, v in resumed_result[key].items() if k != "checkpoint"} == {
                k: v for k, v in result[key].items() if k != "checkpoint"
            }
        else:
            assert resumed_result[key] == result[key], key
    assert curve(resumed) == curve(out)
    best_a, best_b = weights(out / "best.pt"), weights(resumed / "best.pt")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tiny_data: Path, tmp_path: Path, uninterrupted) -> None:
    out = tmp_path / "run"
    proc = start(*train_args(tiny_data, out))
    wait_for_step(proc, out / "metrics.jsonl", 233)
    proc.kill()  # SIGKILL: no handler runs, the process is gone at whatever instant it was
    proc.wait()
    ckpt = checkpoint.load(out / "checkpoint.pt")  # a complete file, whatever the instant
    # Saved every 20 steps and killed after step 233 was logged, however fast or slow the machine.
    assert ckpt.training is not None and ckpt.training["step"] >= 220
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data), "--json")
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.tmp"))
    assert_same_run(out, json.loads(done.stdout), uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_signal_saves_then_resume_is_identical(
    tiny_data: Path, tmp_path: Path, uninterrupted, sig: int, code: int, name: str
) -> None:
    out = tmp_path / "run"
    proc = start(*train_args(tiny_data, out))
    wait_for_step(proc, out / "metrics.jsonl", 100)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code
    line = one_line(stderr)
    assert line.startswith(f"Error: interrupted ({name}) at step ")
    assert f"resume with: rnnmnist train --resume {out}" in line
    step = checkpoint.load(out / "checkpoint.pt").training["step"]
    assert f"at step {step} of {STEPS}" in line
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data), "--json")
    assert done.returncode == 0, done.stderr
    assert_same_run(out, json.loads(done.stdout), uninterrupted)


@pytest.mark.slow
def test_second_sigint_stops_at_once(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(*train_args(tiny_data, out))
    wait_for_step(proc, out / "metrics.jsonl", 50)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert not list(out.glob(".*.tmp"))
    # Saved at step 20 and 40 before the signals (or by the first one): complete either way.
    assert checkpoint.load(out / "checkpoint.pt").training["step"] >= 40


@pytest.mark.slow
def test_resume_rules(tiny_data: Path, tmp_path: Path, uninterrupted) -> None:
    whole, _ = uninterrupted
    done = rnnmnist("train", "--resume", str(whole), "--data-dir", str(tiny_data))
    assert done.returncode == 1
    assert "finished run; there is nothing to resume" in one_line(done.stderr)
    done = rnnmnist("train", "--resume", str(whole), "--lr", "0.1")
    assert done.returncode == 2
    assert "--resume continues a run with its stored config" in one_line(done.stderr)
    done = rnnmnist("train", "--resume", str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert "no such run folder" in one_line(done.stderr)
    (tmp_path / "empty").mkdir()
    done = rnnmnist("train", "--resume", str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "no checkpoint.pt there" in one_line(done.stderr)
    done = rnnmnist(*train_args(tiny_data, whole))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "already holds a run" in line and "--resume" in line and "--force" in line


def interrupted(data: Path, out: Path, step: int, sig: int = signal.SIGINT) -> dict:
    """Run, stop with ``sig`` after ``step``, and return the saved checkpoint's payload."""
    proc = start(*train_args(data, out))
    wait_for_step(proc, out / "metrics.jsonl", step)
    proc.send_signal(sig)
    proc.communicate(timeout=300)
    return torch.load(out / "checkpoint.pt", weights_only=True)


def test_divergence_stops_naming_the_step_and_keeps_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    payload = interrupted(tiny_data, out, 60)
    # Adam's moments as a runaway learning rate leaves them: the next update sends the weights to inf.
    for moments in payload["training"]["optimizer"]["state"].values():
        moments["exp_avg"].fill_(3e38)  # near float32's largest: any step from it overflows
        moments["exp_avg_sq"].zero_()
    torch.save(payload, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    step = payload["training"]["step"]
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data))
    assert done.returncode == 1
    line = one_line(done.stderr)
    next_log = (step // 5 + 1) * 5  # log_every 5 in the tiny arguments
    assert f"training diverged at step {next_log}: the loss is nan" in line
    assert f"the last good checkpoint is kept in {out / 'checkpoint.pt'}" in line
    assert (out / "checkpoint.pt").read_bytes() == before


def test_non_finite_weights_are_refused_on_resume(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    payload = interrupted(tiny_data, out, 60)
    payload["model"]["head.weight"].fill_(float("inf"))
    torch.save(payload, out / "checkpoint.pt")
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data))
    assert done.returncode == 1
    assert "weight head.weight holds NaN or infinite values" in one_line(done.stderr)


def test_unwritable_out_folder(tiny_data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = rnnmnist(*tiny_train_args(tiny_data, blocker / "run"))
    assert done.returncode == 1
    assert "cannot prepare run folder" in one_line(done.stderr)


def _limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_full_disk_leaves_no_partial_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(tiny_data, out, "--hidden-size", "64")
    done = rnnmnist(*args, preexec_fn=_limit_file_size)
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"cannot write {out / 'checkpoint.pt'}" in line
    assert not (out / "checkpoint.pt").exists()
    assert not list(out.glob(".*.tmp"))
    assert (out / "config.toml").exists()  # what was written before is whole


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from rnnmnist.files import write_atomic\n"
        "from rnnmnist.errors import RnnmnistError\n"
        f"p = Path({str(target)!r})\n"
        "write_atomic(p, b'old' * 1000, owner='run')\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))\n"
        "try:\n"
        "    write_atomic(p, b'new' * 100_000, owner='run')\n"
        "except RnnmnistError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "File too large" in done.stdout, done.stderr
    assert target.read_bytes() == b"old" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t10k-images-idx3-ubyte", b"\x00\x00\x08\x01" + bytes(20), "wrong magic number"),
        ("t10k-images-idx3-ubyte", None, "truncated or corrupt"),
        ("t10k-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02", "200 images but"),
    ],
)
def test_corrupt_data_files_through_the_cli(tiny_data: Path, tmp_path: Path, name: str, content, message: str) -> None:
    data = tmp_path / "data"
    raw = data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (tiny_data / "MNIST" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    original = (raw / name).read_bytes()
    (raw / name).write_bytes(content if content is not None else original[: len(original) // 2])
    done = rnnmnist(*tiny_train_args(data, tmp_path / "run"))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert message in line and name in line
    assert not (tmp_path / "run").exists()


def test_resume_checks_the_training_state(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    payload = interrupted(tiny_data, out, 30, signal.SIGTERM)
    del payload["training"]["optimizer"]
    torch.save(payload, out / "checkpoint.pt")
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data))
    assert done.returncode == 1
    assert "training state is damaged" in one_line(done.stderr)


@pytest.mark.slow
def test_kill_leaves_stale_temporaries_that_resume_removes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(*train_args(tiny_data, out))
    wait_for_step(proc, out / "metrics.jsonl", 40)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (out / ".checkpoint.pt.rnnmnist-abc123.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(tiny_data))
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.tmp"))
