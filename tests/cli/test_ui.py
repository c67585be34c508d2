"""What the terminal shows: lines that fit its width, settings never split, a table that keeps its heading,
digits drawn in their shape, a note when the CPU is shared; and the commands that take a run folder or a
checkpoint alike."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from rich.console import Console

from rnnmnist.cli.main import cli
from rnnmnist.cli.render_train import TrainDisplay, header_lines
from rnnmnist.cli.textfit import fit_name, flow, words
from rnnmnist.cli.ui import Ui
from rnnmnist.config import Config
from rnnmnist.images.predict import Prediction
from rnnmnist.machine import cpu_share, current_cpu_share
from rnnmnist.training.events import LogRecord
from rnnmnist.training.synthetic import tiny_train_args

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal(width: int) -> dict[str, str]:
    """The environment of a terminal ``width`` columns wide, as rich reads it (no live redrawing)."""
    return {"COLUMNS": str(width), "LINES": "40", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", "NO_COLOR": "1"}


def invoke(*args: str, width: int = 80) -> Result:
    return CliRunner().invoke(cli, list(args), env=terminal(width), prog_name="rnnmnist")


def lines_of(text: str) -> list[str]:
    return ESCAPES.sub("", text).replace("\r", "\n").split("\n")


def assert_fits(text: str, width: int) -> None:
    wide = [line for line in lines_of(text) if len(line) > width]
    assert not wide, f"{len(wide)} lines wider than {width}:\n" + "\n".join(wide)


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run with best.pt, in a folder with a long name."""
    out = tmp_path_factory.mktemp("ui") / "a-run-folder-with-a-rather-long-name-for-a-terminal"
    result = CliRunner().invoke(cli, tiny_train_args(tiny_data, out, "--eval-every", "10"))
    assert result.exit_code == 0, result.output
    return out


# --- text fitting


def test_fit_name_keeps_the_file_name_whole() -> None:
    path = "/home/someone/projects/rnnmnist/examples/handwritten/seven.png"
    assert fit_name(path, 80) == path
    short = fit_name(path, 30)
    assert len(short) == 30 and short.endswith("/seven.png") and "…" in short
    assert len(fit_name("a" * 50, 12)) == 12


def test_flow_never_splits_a_chunk() -> None:
    chunks = words("Training LSTM 64 on 55,000 images (rows), lr 0.02 onecycle", keep=["lr 0.02 onecycle"])
    assert "lr 0.02 onecycle" in chunks
    for width in (20, 30, 60):
        lines = flow(chunks, width)
        assert all(len(line) <= width for line in lines)
        assert sum("lr 0.02 onecycle" in line for line in lines) == 1


# --- the training header and table


def test_header_fits_and_keeps_settings_whole() -> None:
    cfg = Config(precision="fp32")
    share = cpu_share(0.2, 2, 2)
    for width in (60, 80, 120):
        lines = header_lines(cfg, 1, 820, "cpu", 55_000, share, width)
        assert all(len(line) <= width for line in lines), lines
        assert sum("lr 0.02 onecycle" in line for line in lines) == 1
        assert sum("820 steps of 256" in line for line in lines) == 1
        assert any("(fp32, 2 threads)" in line for line in lines)
        assert not any("shared" in line for line in lines)


def test_cpu_share_rule_with_numbers() -> None:
    # A 2-core machine running 2 threads: idle, lightly used, fully used by others, overloaded.
    assert not cpu_share(0.1, 2, 2).shared
    assert not cpu_share(1.9, 2, 2).shared
    assert cpu_share(2.0, 2, 2).shared and cpu_share(3.1, 2, 2).shared
    # One thread on many cores competes only when the load reaches the one core it uses.
    assert not cpu_share(0.5, 16, 1).shared and cpu_share(1.2, 16, 1).shared
    # Threads beyond the cores it may use do not count twice.
    assert cpu_share(4, 2, 8).in_use == 2 and not cpu_share(1.5, 2, 8).shared
    # The rule on this machine's own figures now, as the header would read them.
    now = current_cpu_share()
    if now is not None:
        load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
        assert now.cores == cores and now.threads == torch.get_num_threads()
        assert cpu_share(load, cores, now.threads).shared == (load >= min(now.threads, cores))


def test_a_shared_cpu_is_said_in_the_header() -> None:
    lines = header_lines(Config(), 1, 820, "cpu", 55_000, cpu_share(3.1, 2, 2), 60)
    note = " ".join(line.strip() for line in lines)
    assert "the CPU is shared: load 3.1 on 2 cores; times will be longer" in note
    assert all(len(line) <= 60 for line in lines)


def test_a_long_training_table_repeats_its_heading() -> None:
    ui = Ui()
    ui.console = Console(file=io.StringIO(), width=80, height=20, force_terminal=True, force_interactive=False)
    display = TrainDisplay(ui)
    display.on_start(Config(), 1, 820, torch.device("cpu"), 55_000)
    for step in range(10, 830, 10):
        display.on_log(LogRecord(step, 820, step * 256, 0.1, 0.95, 0.01, 30_000.0, step / 90))
    display.stop()
    text = ESCAPES.sub("", ui.console.file.getvalue())
    rows = [line for line in text.splitlines() if re.match(r" +[\d,]+ +[\d,]+ +0\.1000", line)]
    headings = [i for i, line in enumerate(text.splitlines()) if "Examples/s" in line]
    assert len(rows) == 82
    assert "Iteration" not in text and all("Examples " in text.splitlines()[i] for i in headings)
    # A heading at least once a screen (20 lines): never more than a screenful of rows without one.
    assert len(headings) >= 82 // 17 and max(np.diff(headings)) <= 20
    assert_fits(text, 80)


# --- whole commands at a fixed width


@pytest.mark.parametrize("width", [80, 60])
def test_train_output_fits_the_terminal(tiny_data: Path, tmp_path: Path, width: int) -> None:
    result = invoke(*tiny_train_args(tiny_data, tmp_path / "run", "--eval-every", "10"), width=width)
    assert result.exit_code == 0, result.output
    assert_fits(result.output, width)
    text = ESCAPES.sub("", result.output)
    assert "lr 0.02 onecycle" in text and "Examples/s" in text and "Test accuracy" in text
    assert "(notebook)" in text
    assert re.search(r"^Checkpoint: /\S+/checkpoint\.pt$", text, re.MULTILINE)  # shortened in the middle if need be


@pytest.mark.parametrize("width", [80, 60])
def test_predict_output_fits_and_names_files_whole(run: Path, tiny_data: Path, tmp_path: Path, width: int) -> None:
    from PIL import Image

    folder = tmp_path / "examples-of-handwriting-from-people"
    folder.mkdir()
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    names = ["seven.png", "a-rather-long-file-name-of-a-scanned-digit.png"]
    for name in names:
        Image.fromarray(digit).save(folder / name)
    for extra in ((), ("--trace",), ("--show",)):
        inputs = map(str, sorted(folder.iterdir()))
        result = invoke("predict", str(run), *inputs, "--index", "0", "--data-dir", str(tiny_data), *extra, width=width)
        assert result.exit_code == 0, result.output
        assert_fits(result.output, width)
        text = ESCAPES.sub("", result.output)
        assert "/seven.png" in text
        assert "long-file-name-of-a-scanned-digit.png" in text or "…" in text
        assert not re.search(r"seven\.pn\s*$", text, re.MULTILINE)  # no name cut at the line's end


@pytest.mark.parametrize("width", [80, 60])
def test_eval_output_fits_the_terminal(run: Path, tiny_data: Path, width: int) -> None:
    result = invoke("eval", str(run), "--data-dir", str(tiny_data), width=width)
    assert result.exit_code == 0, result.output
    assert_fits(result.output, width)
    for title in ("Accuracy", "Per-class accuracy", "Confusion matrix (rows: true, columns: predicted)"):
        assert title in result.output


@pytest.mark.parametrize("width", [80, 60])
def test_runs_output_keeps_status_and_names(run: Path, tiny_data: Path, tmp_path: Path, width: int) -> None:
    from rnnmnist.training import checkpoint as ckpt_io

    root = tmp_path / "runs"
    stopped = root / "an-interrupted-run-with-a-long-descriptive-name"
    stopped.mkdir(parents=True)
    for name in ("config.toml", "metrics.jsonl"):
        (stopped / name).write_bytes((run / name).read_bytes())
    ckpt = ckpt_io.load(run / "checkpoint.pt")
    model, _ = ckpt_io.load_model(run / "checkpoint.pt")
    ckpt_io.save(stopped / "checkpoint.pt", ckpt.config, model, {}, training={"step": 5})
    (root / "short").mkdir()
    for name in ("config.toml", "metrics.jsonl", "checkpoint.pt"):
        (root / "short" / name).write_bytes((run / name).read_bytes())
    result = invoke("runs", str(root), width=width)
    assert result.exit_code == 0, result.output
    assert_fits(result.output, width)
    text = ESCAPES.sub("", result.output)
    assert re.search(r"\bresumable\b", text) and re.search(r"\bfinished\b", text)
    assert re.search(r"^ ?short ", text, re.MULTILINE)
    assert re.search(r"^ ?an-\S*…\S*me ", text, re.MULTILINE)  # shortened in the middle, not folded


# --- the reading trace: two image rows a line


def _prediction(digit: np.ndarray) -> Prediction:
    trace = torch.full((28, 10), 0.05)
    trace[:, 1] = 0.55  # top class 1 from the first row: decided at row 1
    return Prediction("bar.png", digit, trace[-1].clone(), trace=trace, decided_at=1)


def test_trace_draws_two_rows_a_line_in_the_digit_s_shape() -> None:
    digit = np.zeros((28, 28), np.float32)
    digit[4:24, 12:16] = 1.0  # a bar 20 rows tall, 4 columns wide
    ui = Ui()
    ui.console = Console(file=io.StringIO(), width=80, no_color=True)
    text = ui.reading(_prediction(digit), "rows").plain
    art = [line[10:38] for line in text.splitlines()[2:]]
    assert len(art) == 14  # 28 rows, two a line
    assert all(set(row) <= set(" ▀▄█") for row in art)
    assert sum(row.count("█") for row in art) == 4 * 10  # 20 rows of ink in 10 lines: the bar keeps its height
    assert ["█" in row for row in art] == [False, False] + [True] * 10 + [False, False]
    assert "◀ decided" in text.splitlines()[2]
    colour = Ui()
    colour.console = Console(file=io.StringIO(), width=80, color_system="truecolor", force_terminal=True)
    drawn = colour.reading(_prediction(digit), "rows")
    assert drawn.plain.count("▀") == 14 * 28  # in colour every cell is an upper half block: fg top, bg bottom
    assert any(span.style.bgcolor is not None for span in drawn.spans if hasattr(span.style, "bgcolor"))


# --- a run folder or a checkpoint, for eval, predict and plot


def test_eval_and_predict_take_a_run_folder_or_its_checkpoint(run: Path, tiny_data: Path) -> None:
    data = ("--data-dir", str(tiny_data))
    by_folder = json.loads(invoke("eval", str(run), *data, "--json").stdout)
    by_file = json.loads(invoke("eval", str(run / "checkpoint.pt"), *data, "--json").stdout)
    assert by_folder["accuracy"] == by_file["accuracy"] and by_folder["checkpoint"] == str(run / "checkpoint.pt")
    assert json.loads(invoke("predict", str(run), "--index", "0", *data, "--json").stdout)["top3"][0][0] in range(10)


def test_plot_takes_a_run_folder_or_a_checkpoint_in_one(run: Path, tiny_data: Path, tmp_path: Path) -> None:
    result = invoke("plot", str(run / "best.pt"), "--out", str(tmp_path / "best"), "--json")
    assert result.exit_code == 0, result.output
    assert {Path(p).name for p in json.loads(result.stdout)["files"]} >= {"curves.png", "confusion.png"}


def test_neither_a_run_folder_nor_a_checkpoint_is_one_clear_error(run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    loose = tmp_path / "loose.pt"
    loose.write_bytes((run / "checkpoint.pt").read_bytes())
    only_best = tmp_path / "only-best"
    only_best.mkdir()
    (only_best / "best.pt").write_bytes((run / "best.pt").read_bytes())
    for args, said in (
        (("eval", str(empty)), "is a folder without checkpoint.pt"),
        (("predict", str(only_best), "--index", "0"), f"give {only_best / 'best.pt'}"),
        (("plot", str(loose)), "is not in a run folder"),
        (("eval", str(tmp_path / "missing")), "does not exist"),
    ):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert said in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output


def test_curves_say_which_accuracy_they_show(run: Path) -> None:
    from rnnmnist.plot import curves_figure, read_metrics

    train, val = read_metrics(run / "metrics.jsonl")
    titles = [ax.get_title() for ax in curves_figure(train, []).axes]
    assert titles[:2] == ["Training batch loss", "Training batch accuracy (%)"]
    titles = [ax.get_title() for ax in curves_figure(train, val).axes]
    assert titles[1] == "Accuracy (%): training batch, validation"


def test_piped_output_keeps_whole_paths(tiny_data: Path, tmp_path: Path) -> None:
    """No terminal, no screen to fit: a log keeps the checkpoint's whole path, to grep or copy."""
    out = tmp_path / "a-run-folder-whose-path-is-longer-than-sixty-columns-anyway"
    result = CliRunner().invoke(cli, tiny_train_args(tiny_data, out), env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    assert f"Checkpoint: {out / 'checkpoint.pt'}\n" in result.output
    assert re.search(r"^Training LSTM .* lr 0\.02 onecycle$", result.output, re.MULTILINE)  # the header: one line
