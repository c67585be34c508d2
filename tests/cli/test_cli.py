"""The CLI through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clitools import device_node, invoke, invoke_ok, one_error_line, rnnmnist, two_step_train_args

from rnnmnist import __version__
from rnnmnist.training import checkpoint
from rnnmnist.training.synthetic import tiny_train_args

COMMANDS = ("train", "eval", "predict")


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke(*tiny_train_args(tiny_data, out, "--json"))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- help, version, entry points


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from rnnmnist.cli.main import main\n"
        "commands = ('train', 'eval', 'predict', 'plot', 'export', 'serve', 'runs', 'compare', 'sweep', 'presets')\n"
        "for args in (['--help'], *([c, '--help'] for c in commands)):\n"
        "    sys.argv = ['rnnmnist', *args]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported for --help'\n"
        "assert 'rich' not in sys.modules, 'rich imported for --help'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_examples(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert f"rnnmnist {command}" in result.output


def test_version_names_torch_and_where_train_would_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnmnist.training.device import auto_precision, resolve_device

    result = invoke("--version")
    assert result.exit_code == 0
    device = resolve_device("auto")
    precision, why = auto_precision(device)
    where = f"would train on {device.type} in {precision}: {why}"
    assert result.output == f"rnnmnist {__version__} (torch {torch.__version__}; {where})\n"
    monkeypatch.setenv("RNNMNIST_DISABLE_BF16", "1")
    result = invoke("--version")
    assert result.output.endswith("in fp32: bf16 is turned off by RNNMNIST_DISABLE_BF16)\n")


def test_python_dash_m_runs_the_cli() -> None:
    done = rnnmnist("--help")
    assert done.returncode == 0
    assert "train" in done.stdout and "eval" in done.stdout and "predict" in done.stdout


# --- train, eval, predict


def test_train_json_reports_its_numbers_and_files(trained: dict) -> None:
    for key in ("test_accuracy", "test_loss", "test_accuracy_first256", "steps", "examples", "wall_seconds"):
        assert isinstance(trained[key], (int, float)), key
    assert trained["steps"] == 20 and trained["examples"] == 500
    out = Path(trained["out_dir"])
    assert Path(trained["checkpoint"]) == out / "checkpoint.pt"
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "config.toml", "metrics.jsonl", "run.json"}


def test_train_human_output_goes_to_stderr_with_json(tiny_data: Path, tmp_path: Path) -> None:
    result = invoke(*tiny_train_args(tiny_data, tmp_path / "r", "--json"))
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout is exactly one JSON document
    assert "Iteration: 125" in result.stderr
    assert "Test accuracy" in result.stderr


def test_train_plain_log_lines_without_a_terminal(tiny_data: Path, tmp_path: Path) -> None:
    result = invoke(*tiny_train_args(tiny_data, tmp_path / "r"))
    assert result.exit_code == 0
    log = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert len(log) == 4
    assert log[0].startswith("step 5/20  Iteration: 125  loss: ")
    assert "\x1b[" not in result.stdout  # no terminal escapes in logs


def test_flags_beat_the_config_file_and_the_file_beats_the_defaults(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('schedule = "constant"\nlr = 0.002\nhidden_size = 12\n')
    out = tmp_path / "r"
    result = invoke(*tiny_train_args(tiny_data, out, "--config", str(cfg), "--lr", "0.003"))
    assert result.exit_code == 0, result.output
    stored = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    # flags on the command line (hidden_size 16 in tiny args, lr) beat the file; the file beats defaults.
    assert (stored["schedule"], stored["lr"], stored["hidden_size"]) == ("constant", 0.003, 16)


def test_a_rerun_from_the_stored_config_reproduces_the_run(tiny_data: Path, tmp_path: Path, trained: dict) -> None:
    stored = Path(trained["out_dir"]) / "config.toml"
    result = invoke(
        "train", "--config", str(stored), "--data-dir", str(tiny_data), "--out", str(tmp_path / "again"), "--json"
    )
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["test_accuracy"] == trained["test_accuracy"]
    assert again["test_loss"] == trained["test_loss"]


def test_epochs_sets_the_number_of_steps(tiny_data: Path, tmp_path: Path) -> None:
    args = tiny_train_args(tiny_data, tmp_path / "r", "--json")
    i = args.index("--iters")
    del args[i : i + 2]
    result = invoke(*args, "--epochs", "2")
    assert result.exit_code == 0, result.output
    # An epoch is a pass over the digits: 25 - floor(25 * 0.25) = 19 of each batch of 25.
    assert json.loads(result.stdout)["steps"] == 2 * (500 // 19)


def test_training_aids_are_stored_and_change_the_weights(tiny_data: Path, tmp_path: Path) -> None:
    extra = ("--optimizer", "adamw", "--weight-decay", "0.05", "--label-smoothing", "0.1", "--grad-clip", "1.0")
    extra += ("--schedule", "cosine", "--warmup", "0.1", "--augment")
    out = tmp_path / "run"
    invoke_ok(*two_step_train_args(tiny_data, out, *extra))
    stored = checkpoint.load(out / "checkpoint.pt").config
    assert (stored.optimizer, stored.weight_decay, stored.label_smoothing) == ("adamw", 0.05, 0.1)
    assert (stored.grad_clip, stored.schedule, stored.augment) == (1.0, "cosine", True)
    plain = tmp_path / "plain"
    invoke_ok(*two_step_train_args(tiny_data, plain))
    a, b = (checkpoint.load(p / "checkpoint.pt").model_state for p in (out, plain))
    assert not torch.equal(a["head.weight"], b["head.weight"])


def test_the_best_checkpoint_on_validation_is_kept_as_best_pt(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(tiny_data, out, "--json", "--eval-every", "5", "--iters", "1001")
    result = invoke_ok(*args)
    trained = json.loads(result.stdout)
    best = trained["best"]
    assert best["step"] in (5, 10, 15, 20, 25, 30, 35, 40)
    assert best["checkpoint"] == str(out / "best.pt")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in lines if "val_accuracy" in r]
    assert [r["step"] for r in val] == [5, 10, 15, 20, 25, 30, 35]  # the last step's is the final evaluation
    assert best["val_accuracy"] == max([r["val_accuracy"] for r in val] + [trained["val_accuracy"]])
    report = json.loads(invoke_ok("eval", str(out / "best.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    assert report["accuracy"] == best["test_accuracy"]
    assert "validation at step 5: accuracy" in result.stderr


def test_eval_every_without_validation_images_is_a_usage_error(tiny_data: Path, tmp_path: Path) -> None:
    result = invoke("train", "--eval-every", "10", "--val-size", "0")
    assert result.exit_code == 2
    assert "eval_every needs a validation split" in result.stderr


def test_eval_reports_exactly_what_train_reported(trained: dict, tiny_data: Path) -> None:
    result = invoke("eval", trained["checkpoint"], "--data-dir", str(tiny_data), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accuracy"] == trained["test_accuracy"]
    assert report["n"] == 200
    assert len(report["per_class_accuracy"]) == 10
    confusion = report["confusion"]
    assert len(confusion) == 10 and all(len(row) == 10 for row in confusion)
    assert sum(map(sum, confusion)) == 200
    assert sum(confusion[d][d] for d in range(10)) == report["correct"]
    assert report["loss"] == pytest.approx(trained["test_loss"], rel=1e-6)


def test_eval_prints_accuracy_per_class_and_confusion_tables(trained: dict, tiny_data: Path) -> None:
    result = invoke("eval", trained["checkpoint"], "--data-dir", str(tiny_data))
    assert result.exit_code == 0
    for title in ("Accuracy", "Per-class accuracy", "Confusion matrix"):
        assert title in result.stdout


def test_eval_limit_and_split_choose_the_images(trained: dict, tiny_data: Path) -> None:
    limited = json.loads(
        invoke("eval", trained["checkpoint"], "--data-dir", str(tiny_data), "--limit", "7", "--json").stdout
    )
    assert limited["n"] == 7
    assert limited["per_class_accuracy"].count(None) >= 3  # digits absent from 7 images
    val = json.loads(
        invoke("eval", trained["checkpoint"], "--data-dir", str(tiny_data), "--split", "val", "--json").stdout
    )
    assert val["n"] == 100  # the val_size stored in the checkpoint's config


def test_eval_below_min_accuracy_exits_1_and_still_reports(trained: dict, tiny_data: Path) -> None:
    base = ("eval", trained["checkpoint"], "--data-dir", str(tiny_data))
    assert invoke(*base, "--min-accuracy", "0").exit_code == 0
    acc = trained["test_accuracy"]
    assert acc < 0.99  # 20 tiny steps: far from perfect, so a gate at 0.99 must fail
    result = invoke(*base, "--min-accuracy", "0.99", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["accuracy"] == acc  # the report still comes out
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: accuracy ")
    assert "below --min-accuracy 0.99" in result.stderr


def test_eval_of_a_validation_split_the_run_never_had_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "noval"
    args = tiny_train_args(tiny_data, out)
    args[args.index("--val-size") + 1] = "0"
    assert invoke(*args).exit_code == 0
    result = invoke(
        "eval", str(out / "checkpoint.pt"), "--split", "val", "--data-dir", str(tiny_data), "--min-accuracy", "0"
    )
    assert result.exit_code == 1 and "no validation split" in result.output


def test_predict_gives_one_row_per_index(trained: dict, tiny_data: Path) -> None:
    result = invoke(
        "predict", trained["checkpoint"], "--data-dir", str(tiny_data), "--index", "0", "--index", "7", "--json"
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 7]
    for r in rows:
        assert 0 <= r["top3"][0][0] <= 9  # the network's answer; "prediction" is null for "not a digit"
        assert len(r["probabilities"]) == 10
        assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert r["confidence"] == max(r["probabilities"]) or abs(r["confidence"] - max(r["probabilities"])) < 1e-6
        assert 0 <= r["label"] <= 9
    human = invoke("predict", trained["checkpoint"], "--data-dir", str(tiny_data), "--index", "3")
    assert "Predictions" in human.stdout and "test[3]" in human.stdout


def test_file_names_with_markup_or_newlines_print_as_they_are(trained: dict, tmp_path: Path) -> None:
    """A file name is data: rich markup in it is not interpreted, a newline does not split a line."""
    source = Path(__file__).parents[2] / "examples" / "seven.png"
    marked = tmp_path / "x[bold]y[red].png"
    marked.write_bytes(source.read_bytes())
    broken = tmp_path / "two\nlines.png"
    broken.write_bytes(b"not an image")
    result = invoke("predict", trained["checkpoint"], str(marked), str(broken))
    assert result.exit_code == 1, result.output
    assert "x[bold]y[red].png" in result.stdout
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "two\\nlines.png: not an image" in error[0]


# --- errors a user can cause: one line, the right exit code, no traceback


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (("train", "--lr", "-1"), 2, ("--lr", "> 0")),
        (("train", "--lr", "fast"), 2, ("--lr",)),
        (("train", "--batch-size", "0"), 2, ("--batch-size", ">= 1")),
        (("train", "--device", "tpu"), 2, ("--device", "tpu")),
        (("train", "--bogus"), 2, ("--bogus",)),
        (("train", "--iters", "1000", "--epochs", "2"), 2, ("--iters or --epochs",)),
        (("train", "--iters", "100"), 2, ("runs no step",)),
        (("eval", "/nonexistent/checkpoint.pt"), 2, ("does not exist",)),
        (("predict", "/nonexistent/checkpoint.pt", "--index", "0"), 2, ("does not exist",)),
        (("frobnicate",), 2, ("frobnicate",)),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    args: tuple[str, ...], code: int, fragments: tuple[str, ...]
) -> None:
    result = invoke(*args)
    assert result.exit_code == code, result.output
    one_error_line(result.stderr, *fragments)


def test_an_unknown_config_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("hiden_size = 64\n")
    result = invoke("train", "--config", str(cfg))
    assert result.exit_code == 2
    one_error_line(result.stderr, str(cfg), "unknown key 'hiden_size'", "did you mean 'hidden_size'")


def test_a_bad_config_value_names_the_allowed_values(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('device = "gpu"\n')
    result = invoke("train", "--config", str(cfg))
    assert result.exit_code == 2
    one_error_line(result.stderr, "device must be one of auto, cpu, cuda, mps", "'gpu'")


def test_missing_data_offline_names_the_files_and_writes_nothing(tmp_path: Path) -> None:
    result = invoke("train", "--data-dir", str(tmp_path / "nothing"), "--no-download", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1
    one_error_line(result.stderr, str(tmp_path / "nothing" / "MNIST" / "raw"), "t10k-labels-idx1-ubyte")
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start


def test_a_failed_download_is_one_line_naming_the_files(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real download attempt through torchvision, to a mirror that refuses connections (a closed
    port on this machine), so the outcome does not depend on whether a network is reachable."""
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    result = invoke("eval", trained["checkpoint"], "--data-dir", str(tmp_path / "dl"), "--json")
    assert result.exit_code == 1
    line = result.stderr.strip()
    one_error_line(result.stderr, "download failed: connection refused", str(tmp_path / "dl" / "MNIST" / "raw"))
    assert "t10k-labels-idx1-ubyte" in line and len(line) < 400  # short, and whole: the four names are there


def test_a_predict_index_out_of_range_or_nothing_to_predict_is_a_usage_error(trained: dict, tiny_data: Path) -> None:
    result = invoke("predict", trained["checkpoint"], "--data-dir", str(tiny_data), "--index", "200")
    assert result.exit_code == 2
    one_error_line(result.stderr, "--index 200 is out of range", "0 to 199")
    one_error_line(invoke("predict", trained["checkpoint"]).stderr, "nothing to predict")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "not an rnnmnist checkpoint"),
        (b"\x00\x01garbage" * 100, "not an rnnmnist checkpoint"),
        (b"PK\x03\x04truncated", "not an rnnmnist checkpoint"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    result = invoke("eval", str(path))
    assert result.exit_code == 1
    one_error_line(result.stderr, fragment)


def test_errors_of_a_real_process_are_one_line(tmp_path: Path) -> None:
    """The same errors from the installed entry point: stderr is one line, never a traceback."""
    bad = tmp_path / "c.toml"
    bad.write_text("lr = -3\n")
    for args, code in (
        (("train", "--config", str(bad)), 2),
        (("train", "--data-dir", str(tmp_path), "--no-download", "--out", str(tmp_path / "r")), 1),
        (("eval", str(bad)), 1),
    ):
        done = rnnmnist(*args)
        assert done.returncode == code, (args, done.stderr)
        one_error_line(done.stderr)


# --- standard output that cannot be written


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--print-config"),
        ("eval", "{ckpt}", "--data-dir", "{data}"),
        ("predict", "{ckpt}", "--json", "--index", "0", "--data-dir", "{data}"),
    ],
    ids=["print-config", "eval", "predict"],
)
def test_full_or_closed_stdout_is_one_line(
    trained: dict, tiny_data: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    args = tuple(a.format(ckpt=trained["checkpoint"], data=tiny_data) for a in args)
    with open(device_node(tmp_path, "full"), "w") as full:
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
