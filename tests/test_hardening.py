"""The second hardening round: each reproduction a careful adversarial user found, as a test.

Each test names the item of issue 13 it covers. They run the real CLI, in process
(click's runner) where that is enough and as a subprocess where the process
itself matters (signals, closed or full streams, locks).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from rnnmnist.cli.main import cli
from rnnmnist.training import checkpoint
from rnnmnist.training.rundir import RunDir
from rnnmnist.training.synthetic import TEST_FILES, TRAIN_FILES, idx_bytes, tiny_train_args


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="rnnmnist", env=env)


# Without RNNMNIST_DATA_DIR (CI sets it to the real MNIST): these tests use tiny data, given by
# --data-dir or remembered by the run folder.
ENV = {k: v for k, v in os.environ.items() if k != "RNNMNIST_DATA_DIR"}


def rnnmnist(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rnnmnist", *args], capture_output=True, text=True, timeout=900, env=ENV, **kwargs
    )


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run folder (with a resumable checkpoint.pt kept aside as resumable.pt)."""
    out = tmp_path_factory.mktemp("hardening") / "run"
    result = invoke(*tiny_train_args(tiny_data, out), "--save-every", "10", "--iters", str(25 * 30 + 1))
    assert result.exit_code == 0, result.output
    return out


# --- 1-4: data loss


def test_1_export_never_overwrites_its_input(run: Path, tmp_path: Path) -> None:
    before = (run / "checkpoint.pt").read_bytes()
    result = invoke(
        "export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", str(run / "checkpoint.pt")
    )
    assert result.exit_code == 1 and "over its input" in result.output
    # Another spelling of the same file, and the default output path of an input named *.ts.
    (tmp_path / "model.ts").write_bytes(before)
    other = tmp_path / "sub" / ".." / "model.ts"
    (tmp_path / "sub").mkdir()
    assert invoke("export", str(tmp_path / "model.ts"), "--format", "torchscript", "--out", str(other)).exit_code == 1
    assert invoke("export", str(tmp_path / "model.ts"), "--format", "torchscript").exit_code == 1
    assert (run / "checkpoint.pt").read_bytes() == before == (tmp_path / "model.ts").read_bytes()


def test_2_only_rnnmnists_own_leftovers_are_removed_and_only_on_force(tiny_data: Path, tmp_path: Path) -> None:
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
def test_3_out_that_is_empty_here_above_root_or_home_is_a_usage_error(
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


def test_4_force_removes_everything_an_earlier_run_wrote_and_nothing_else(tiny_data: Path, tmp_path: Path) -> None:
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


# --- 6, 7: streams and unbounded reads


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--print-config"),
        ("eval", "{ckpt}", "--data-dir", "{data}"),
        ("predict", "{ckpt}", "--json", "--index", "0", "--data-dir", "{data}"),
    ],
    ids=["print-config", "eval", "predict"],
)
def test_6_full_or_closed_stdout_is_one_line(run: Path, tiny_data: Path, args: tuple[str, ...]) -> None:
    args = tuple(a.format(ckpt=run / "checkpoint.pt", data=tiny_data) for a in args)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "rnnmnist", *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300
        )
    assert done.returncode == 1
    assert "cannot write to standard output: No space left on device" in one_error_line(done.stderr)
    closed = subprocess.run(
        [sys.executable, "-m", "rnnmnist", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
        timeout=300,
    )
    assert closed.returncode == 1
    assert "standard output" in one_error_line(closed.stderr)


def test_7_eval_of_an_endless_file_is_refused(tmp_path: Path) -> None:
    done = rnnmnist("eval", "/dev/zero")
    assert done.returncode == 1
    assert "over the 2 GiB limit" in one_error_line(done.stderr)


# --- 8: damaged training state


def _damage(state: dict, what: str) -> None:
    order = state["data_order"]
    n = order["permutation"].numel()
    if what == "index past the split":
        order["permutation"][0] = n + 5
    elif what == "float permutation":
        order["permutation"] = order["permutation"].double()
    elif what == "short permutation":
        order["permutation"] = order["permutation"][:-3]
    elif what == "negative position":
        order["position"] = -4
    elif what == "moment of another shape":
        first = next(iter(state["optimizer"]["state"].values()))
        first["exp_avg"] = torch.zeros(3, 3)
    elif what == "string step":
        state["step"] = "10"
    elif what == "no rng":
        del state["rng"]
    elif what == "best step after step":
        state["best_step"] = 10**6


DAMAGES = (
    "index past the split",
    "float permutation",
    "short permutation",
    "negative position",
    "moment of another shape",
    "string step",
    "no rng",
    "best step after step",
)


@pytest.fixture(scope="module")
def stopped(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A run stopped by SIGTERM at some step: its resumable checkpoint's bytes."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    args = tiny_train_args(tiny_data, out)
    i = args.index("--iters")
    args[i + 1] = str(25 * 4000 + 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args, "--log-every", "1"], stderr=subprocess.PIPE, env=ENV
    )
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and metrics.stat().st_size > 0):
        assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    return out, (out / "checkpoint.pt").read_bytes()


def copy_of(stopped: tuple[Path, bytes], out: Path, checkpoint_bytes: bytes | None = None) -> Path:
    """A copy of the stopped run's folder at ``out`` (its checkpoint, or the bytes given instead)."""
    folder, good = stopped
    out.mkdir()
    for name in ("config.toml", "metrics.jsonl", "run.json"):
        (out / name).write_bytes((folder / name).read_bytes())
    (out / "checkpoint.pt").write_bytes(good if checkpoint_bytes is None else checkpoint_bytes)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("what", DAMAGES)
def test_8_damaged_training_state_is_one_line_on_resume(stopped: tuple[Path, bytes], tmp_path: Path, what: str) -> None:
    folder, good = stopped
    payload = torch.load(__import__("io").BytesIO(good), weights_only=True)
    _damage(payload["training"], what)
    out = copy_of(stopped, tmp_path / "run")
    torch.save(payload, out / "checkpoint.pt")
    done = rnnmnist("train", "--resume", str(out))  # the data folder comes from run.json
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr)
    assert "training state is damaged" in line or (what == "short permutation" and "unless its checkpoint" in line)
    assert (out / "metrics.jsonl").read_bytes() == (folder / "metrics.jsonl").read_bytes()


# --- 9: impossible sizes, empty data, odd metrics


def test_9_a_model_that_cannot_fit_is_refused_before_any_folder(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "huge"
    args = tiny_train_args(tiny_data, out)
    i = args.index("--hidden-size")
    args[i + 1] = "4096"
    result = invoke(*args, "--layers", "16", "--bidirectional")
    assert result.exit_code == 2, result.output
    assert "GiB to train" in result.output
    assert not out.exists()


def test_9_idx_file_with_no_images(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    empty = torch.zeros(0, 28, 28, dtype=torch.uint8)
    for images, labels in (TRAIN_FILES, TEST_FILES):
        (raw / images).write_bytes(idx_bytes(empty))
        (raw / labels).write_bytes(idx_bytes(torch.zeros(0, dtype=torch.uint8)))
    result = invoke(*tiny_train_args(tmp_path, tmp_path / "run"))
    assert result.exit_code == 1 and "holds no images" in result.output


def test_9_plot_of_a_metrics_line_without_loss(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "examples": 25, "accuracy": 0.5}) + "\n")
    result = invoke("plot", str(folder))
    assert result.exit_code == 1 and "it needs numbers for examples, loss, accuracy, lr" in result.output


# --- 11, 12: signals outside training, the run folder lock


def test_11_sigterm_while_reading_a_checkpoint_is_one_line(tmp_path: Path) -> None:
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
def test_11_sigint_during_the_final_evaluation_saves_and_resume_finishes(tmp_path: Path) -> None:
    from rnnmnist.training.synthetic import make_tiny_mnist

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


def test_12_a_second_writer_is_refused_and_a_dead_ones_lock_is_not_stale(
    run: Path, stopped: tuple[Path, bytes], tiny_data: Path, tmp_path: Path
) -> None:
    resumable = copy_of(stopped, tmp_path / "resumable")
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


# --- 13-15


def test_13_flags_win_over_the_environment(tiny_data: Path, tmp_path: Path) -> None:
    env = {"RNNMNIST_TRAIN_ITERS": "1000"}
    result = invoke("train", "--print-config", "--epochs", "1", env=env)
    assert result.exit_code == 0, result.output
    assert "\nepochs = 1.0\n" in result.output
    both = invoke("train", "--print-config", "--epochs", "1", "--iters", "500", env=env)
    assert both.exit_code == 2 and "not both" in both.output


def test_13_environment_settings_do_not_block_resume(stopped: tuple[Path, bytes], tmp_path: Path) -> None:
    out = copy_of(stopped, tmp_path / "run")
    result = invoke("train", "--resume", str(out), "--print-config", env={"RNNMNIST_TRAIN_LR": "0.5"})
    assert result.exit_code == 0, result.output
    assert "\nlr = 0.5\n" not in result.output


def test_14_evaluating_nothing_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "noval"
    args = tiny_train_args(tiny_data, out)
    args[args.index("--val-size") + 1] = "0"
    assert invoke(*args).exit_code == 0
    result = invoke(
        "eval", str(out / "checkpoint.pt"), "--split", "val", "--data-dir", str(tiny_data), "--min-accuracy", "0"
    )
    assert result.exit_code == 1 and "no validation split" in result.output


def test_15_a_run_that_never_trained_is_replaced_by_a_plain_rerun(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("lr = 0.01\n")  # what a start interrupted before step 1 left
    (out / "metrics.jsonl").write_text("")
    assert invoke(*tiny_train_args(tiny_data, out)).exit_code == 0
    assert checkpoint.load(out / "checkpoint.pt").metrics["steps"] == 20


def test_5_file_names_with_markup_or_newlines_print_as_they_are(run: Path, tmp_path: Path) -> None:
    """A file name is data: rich markup in it is not interpreted, a newline does not split a line."""
    source = Path(__file__).parent.parent / "examples" / "seven.png"
    marked = tmp_path / "x[bold]y[red].png"
    marked.write_bytes(source.read_bytes())
    broken = tmp_path / "two\nlines.png"
    broken.write_bytes(b"not an image")
    result = invoke("predict", str(run / "checkpoint.pt"), str(marked), str(broken))
    assert result.exit_code == 1, result.output
    assert "x[bold]y[red].png" in result.stdout
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "two\\nlines.png: not an image" in error[0]


def test_resume_on_other_data_says_which_data_the_run_needs(stopped: tuple[Path, bytes], tmp_path: Path) -> None:
    from rnnmnist.training.synthetic import make_tiny_mnist

    out = copy_of(stopped, tmp_path / "run")
    other = make_tiny_mnist(tmp_path / "other", n_train=400)
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(other))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "was trained on 500 training images" in line and "holds 300" in line and "--data-dir " in line
