"""plot, export, TensorBoard, and the CLI conventions: environment variables, completion, verbosity, colour."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clitools import invoke
from PIL import Image

from rnnmnist.training import checkpoint
from rnnmnist.training.checkpoint import load_model
from rnnmnist.training.model import SequenceClassifier
from rnnmnist.training.synthetic import tiny_train_args


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eco") / "run"
    result = invoke(*tiny_train_args(tiny_data, out, "--eval-every", "10"))
    assert result.exit_code == 0, result.output
    return out


# --- plot


def test_plot_writes_four_pngs(run: Path, tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    result = invoke("plot", str(run), "--data-dir", str(tiny_data), "--out", str(tmp_path / "figs"), "--json")
    assert result.exit_code == 0, result.output
    files = [Path(f) for f in json.loads(result.stdout)["files"]]
    assert [f.name for f in files] == ["curves.png", "confusion.png", "mistakes.png", "reading.png"]
    for f in files:
        assert f.stat().st_size > 5_000
        with Image.open(f) as im:
            im.verify()
            assert im.format == "PNG"
    with Image.open(files[0]) as im:
        assert im.width > 1000  # three panels side by side


def test_plot_of_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    result = invoke("plot", str(tmp_path))
    assert result.exit_code == 1
    assert "holds no metrics.jsonl" in result.stderr


def test_plot_of_a_metrics_line_without_loss_names_the_numbers_it_needs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "examples": 25, "accuracy": 0.5}) + "\n")
    result = invoke("plot", str(folder))
    assert result.exit_code == 1 and "it needs numbers for examples, loss, accuracy, lr" in result.output


# --- export


def _onnx_outputs(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


@pytest.mark.parametrize("mode", ["rows", pytest.param("permuted", marks=pytest.mark.slow)])
def test_export_onnx_reproduces_pytorch(mode: str, tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
    out = tmp_path / "run"
    args = tiny_train_args(tiny_data, out, "--mode", mode, "--iters", "51")
    assert invoke(*args).exit_code == 0
    result = invoke("export", str(out / "checkpoint.pt"), "--format", "onnx", "--data-dir", str(tiny_data), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["file"] == str(out / "checkpoint.onnx")
    assert report["checked_on"] == "test images" and report["max_abs_diff"] < 1e-4
    # Checked again here, independently, on other inputs and another batch size.
    model, _ = load_model(out / "checkpoint.pt")
    images = torch.rand(5, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(_onnx_outputs(out / "checkpoint.onnx", images), model(images), atol=1e-4)


def test_export_torchscript_reproduces_pytorch(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.ts"
    result = invoke("export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert "checked on" in result.stdout
    loaded = torch.jit.load(str(target))
    model, _ = load_model(run / "checkpoint.pt")
    images = torch.rand(3, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_of_a_model_whose_outputs_are_not_finite_is_refused(run: Path, tmp_path: Path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    model, ckpt = load_model(run / "checkpoint.pt")
    with torch.no_grad():
        model.head.weight.fill_(3e38)  # finite weights whose outputs overflow to NaN
    source = tmp_path / "overflow.pt"
    checkpoint.save(source, ckpt.config, model, {})
    target = tmp_path / f"m.{fmt}"
    result = invoke("export", str(source), "--format", fmt, "--out", str(target))
    assert result.exit_code == 1, result.output
    assert "not finite" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not target.exists()


EMPTY_OR_FOLDER = {
    "export --out ''": lambda run: ("export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", ""),
    "export --out a/": lambda run: ("export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", "a/"),
    "export --out a/.": lambda run: ("export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", "a/."),
    "plot --out ''": lambda run: ("plot", str(run), "--out", ""),
    "compare --plot ''": lambda run: ("compare", str(run), str(run), "--plot", ""),
    "compare --plot a/": lambda run: ("compare", str(run), str(run), "--plot", "a/"),
    "train --resume ''": lambda run: ("train", "--resume", ""),
    "train --data-dir ' '": lambda run: ("train", "--data-dir", " ", "--iters", "256"),
    "eval --data-dir ''": lambda run: ("eval", str(run), "--data-dir", ""),
    "runs ''": lambda run: ("runs", ""),
}


@pytest.mark.parametrize("case", EMPTY_OR_FOLDER)
def test_an_empty_path_or_a_files_path_naming_a_folder_is_a_usage_error(
    case: str, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty path (an unset shell variable) is not the current folder, and a file's path ending in
    a slash is not a file: both exit 2 naming the flag, and nothing is written or read here."""
    monkeypatch.chdir(tmp_path)
    result = invoke(*EMPTY_OR_FOLDER[case](run))
    assert result.exit_code == 2, result.output
    assert ("empty" if "a/" not in case else "names a folder") in result.output
    assert list(tmp_path.iterdir()) == []


def test_export_without_data_checks_on_random_images(run: Path, tmp_path: Path) -> None:
    result = invoke(
        "export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", str(tmp_path / "m.ts"),
        "--data-dir", str(tmp_path / "none"), "--no-download", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checked_on"] == "random images"


def test_export_to_a_missing_folder_or_an_unknown_format_is_refused(run: Path, tmp_path: Path) -> None:
    result = invoke("export", str(run / "checkpoint.pt"), "--format", "onnx", "--out", str(tmp_path / "no" / "m.onnx"))
    assert result.exit_code == 1
    assert "folder" in result.stderr and "does not exist" in result.stderr
    assert invoke("export", str(run / "checkpoint.pt"), "--format", "tflite").exit_code == 2


def test_export_never_overwrites_its_input(run: Path, tmp_path: Path) -> None:
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


# --- TensorBoard


def test_tensorboard_logs_the_scalars(tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = invoke(*tiny_train_args(tiny_data, out, "--tensorboard", "--eval-every", "10"))
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/accuracy", "train/lr", "val/accuracy"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [125, 250, 375, 500]


# --- CLI conventions


def test_environment_variables_set_options(tiny_data: Path) -> None:
    result = invoke("train", "--print-config", env={"RNNMNIST_TRAIN_LR": "0.003", "RNNMNIST_TRAIN_CELL": "gru"})
    assert result.exit_code == 0
    assert "lr = 0.003" in result.stdout and 'cell = "gru"' in result.stdout
    flag = invoke("train", "--print-config", "--lr", "0.004", env={"RNNMNIST_TRAIN_LR": "0.003"})
    assert "lr = 0.004" in flag.stdout  # a flag on the command line wins
    bad = invoke("train", "--print-config", env={"RNNMNIST_TRAIN_LR": "-1"})
    assert bad.exit_code == 2 and "--lr" in bad.stderr


def test_the_shell_completion_script_is_printed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rnnmnist"],
        env={**os.environ, "_RNNMNIST_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "_RNNMNIST_COMPLETE" in done.stdout and "complete" in done.stdout


def test_quiet_and_verbose_change_what_train_prints_and_exclude_each_other(tiny_data: Path, tmp_path: Path) -> None:
    quiet = invoke(*tiny_train_args(tiny_data, tmp_path / "q", "--quiet"))
    assert quiet.exit_code == 0
    assert "Iteration:" not in quiet.stdout and "Training LSTM" not in quiet.stdout
    assert "Test accuracy" in quiet.stdout
    verbose = invoke(*tiny_train_args(tiny_data, tmp_path / "v", "--verbose"))
    assert "hidden_size = 16" in verbose.stdout and "Configuration (as run)" in verbose.stdout
    both = invoke(*tiny_train_args(tiny_data, tmp_path / "b", "--quiet", "--verbose"))
    assert both.exit_code == 2


@pytest.mark.parametrize(
    ("extra_env", "colour"), [({"FORCE_COLOR": "1"}, True), ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False)]
)
def test_no_color_is_honoured(run: Path, tiny_data: Path, extra_env: dict[str, str], colour: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    done = subprocess.run(
        [sys.executable, "-m", "rnnmnist", "eval", str(run / "checkpoint.pt"), "--data-dir", str(tiny_data)],
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    # Colour is an SGR code 30-37, 90-97 (foreground), 40-47, 100-107 (background) or 38/48 (extended);
    # NO_COLOR allows bold and italic.
    colour_codes = re.findall(r"\x1b\[(?:[0-9;]*;)?(3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9;]*)?m", done.stdout)
    assert bool(colour_codes) == colour


def test_json_schemas_are_stable(run: Path, tiny_data: Path, tmp_path: Path) -> None:
    """The keys CI scripts rely on (README, "JSON output"); changing them is a breaking change."""
    trained = json.loads(invoke(*tiny_train_args(tiny_data, tmp_path / "r", "--json")).stdout)
    assert set(trained) == {
        "test_accuracy", "test_loss", "test_accuracy_first256", "test_n", "val_accuracy", "val_loss", "steps",
        "examples", "train_seconds", "wall_seconds", "best", "checkpoint", "out_dir",
        "phases",  # added with the speed work
    }  # fmt: skip
    report = json.loads(invoke("eval", str(run / "checkpoint.pt"), "--data-dir", str(tiny_data), "--json").stdout)
    assert set(report) == {
        "accuracy", "loss", "n", "correct", "per_class_accuracy", "confusion", "split", "checkpoint", "precision",
        "dataset", "class_names",  # added with --dataset
    }  # fmt: skip
    row = json.loads(
        invoke("predict", str(run / "checkpoint.pt"), "--index", "1", "--data-dir", str(tiny_data), "--json").stdout
    )
    assert set(row) == {
        "input", "prediction", "confidence", "probabilities", "top3", "index", "label",
        "class_name", "label_name",  # added with --dataset
        "is_digit", "reason", "digit_score", "digit_score_kind", "digit_threshold",  # added with "not a digit"
    }  # fmt: skip


def test_exported_model_is_the_model(run: Path, tmp_path: Path) -> None:
    # The export contract: (N, 28, 28) in [0, 1] in, (N, 10) logits out; the file computes what the model does.
    model, _ = load_model(run / "checkpoint.pt")
    assert isinstance(model, SequenceClassifier)
    out = tmp_path / "model.ts"
    assert invoke("export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", str(out)).exit_code == 0
    exported = torch.jit.load(str(out))
    images = torch.rand(4, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got, expected = exported(images), model(images)
    assert got.shape == (4, 10)
    assert torch.allclose(got, expected, atol=1e-5)
