"""Every table and line the CLI renders, byte for byte against golden files: on a terminal (80 and 60
columns, with and without colour) and off one (a pipe or a log). The golden files under golden/ui/ were
captured before the tables moved into the presentation layer; a change to them is a change of output.

Set RNNMNIST_WRITE_GOLDEN=1 to rewrite them (then read the diff: it is what users will see change).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from rnnmnist.cli.main import cli
from rnnmnist.cli.render_train import TrainDisplay
from rnnmnist.cli.ui import Ui
from rnnmnist.config import Config
from rnnmnist.experiments.sweep import SweepResult, TrialRow
from rnnmnist.images.predict import Prediction
from rnnmnist.training import checkpoint
from rnnmnist.training.evaluate import EvalResult
from rnnmnist.training.events import LogRecord, TrainSummary
from rnnmnist.training.rundir import RunDir

GOLDEN = Path(__file__).parents[1] / "golden" / "ui"
WRITE = os.environ.get("RNNMNIST_WRITE_GOLDEN") == "1"
# (name, console settings): off a terminal, a wide and a narrow terminal without colour, and one in colour.
SCREENS = {
    "pipe": {"width": 80},
    "term80": {"width": 80, "height": 40, "force_terminal": True, "force_interactive": False, "no_color": True},
    "term60": {"width": 60, "height": 40, "force_terminal": True, "force_interactive": False, "no_color": True},
    "colour": {"width": 80, "height": 40, "force_terminal": True, "force_interactive": False},
}


def check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if WRITE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name}: output differs from {path}"


def screen_ui(screen: str, json_mode: bool = False, verbosity: int = 0) -> Ui:
    ui = Ui(json_mode=json_mode, verbosity=verbosity)
    extra = {"color_system": "truecolor"} if screen == "colour" else {}
    ui.console = Console(file=io.StringIO(), highlight=False, **SCREENS[screen], **extra)
    return ui


def rendered(ui: Ui) -> str:
    return ui.console.file.getvalue()  # type: ignore[attr-defined]


def each_screen(draw: Callable[[Ui], None], name: str, **kwargs: int | bool) -> None:
    for screen in SCREENS:
        ui = screen_ui(screen, **kwargs)  # type: ignore[arg-type]
        draw(ui)
        check(f"{name}-{screen}", rendered(ui))


# --- data: fixed figures, nothing measured


def _confusion() -> torch.Tensor:
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    for d in range(10):
        confusion[d, d] = 90 + d
        confusion[d, (d + 3) % 10] = d
    confusion[4, 9] = 1234
    return confusion


def _eval(n: int | None = None) -> EvalResult:
    confusion = _confusion()
    return EvalResult(n or int(confusion.sum()), 0.123456, confusion, torch.zeros(0, dtype=torch.int64))


def _summary(resumed: float = 0.0, val: bool = True, best: bool = True) -> TrainSummary:
    return TrainSummary(
        config=Config(),
        run_dir=RunDir(Path("/srv/runs/a-run-folder-with-a-rather-long-name-for-a-terminal-of-sixty")),
        steps=820,
        examples=209_920,
        train_seconds=123.456,
        wall_seconds=150.25,
        test=_eval(),
        test_accuracy_first256=0.97265625,
        val=_eval() if val else None,
        best={"step": 800, "val_accuracy": 0.9871, "test_accuracy": 0.98} if best else None,
        phases={"startup": 1.5, "data": 2.25, "train": 100.0, "evaluate": 3.125, "save": 0.5} if best else None,
        resumed_seconds=resumed,
    )


def _digit() -> np.ndarray:
    digit = np.zeros((28, 28), np.float32)
    digit[4:24, 12:16] = 1.0
    digit[4:8, 8:20] = np.linspace(0.2, 1.0, 12, dtype=np.float32)
    return digit


def _predictions(trace: bool = False) -> list[Prediction]:
    found = []
    for i, (name, label, top) in enumerate(
        [
            ("/home/someone/examples/seven.png", None, 7),
            ("/home/someone/examples/a-rather-long-file-name-of-a-scanned-digit.png", 3, 3),
            ("test[12]", 5, 6),
            ("two-digits.png", None, 8),  # the decision: not a digit (more than one character)
        ]
    ):
        steps = torch.full((28, 10), 0.02)
        steps[:, (top + 1) % 10] = 0.5
        steps[10 + i :, top] = 0.6 + 0.1 * i
        steps[10 + i :, (top + 1) % 10] = 0.1
        found.append(
            Prediction(
                name,
                _digit(),
                steps[-1].clone(),
                label=label,
                trace=steps if trace else None,
                decided_at=11 + i if trace else None,
                uncertain=i == 2,
                is_digit=i != 3,
                reason="more than one character" if i == 3 else None,
            )
        )
    found.append(Prediction("broken.png", error="cannot identify image file"))
    return found


# --- the Ui's own tables


def test_train_summary_golden() -> None:
    each_screen(lambda ui: ui.train_summary(_summary()), "train-summary")
    each_screen(lambda ui: ui.train_summary(_summary(resumed=20.0, val=False, best=False)), "train-summary-resumed")


def test_training_lines_golden() -> None:
    def draw(ui: Ui) -> None:
        display = TrainDisplay(ui)
        display.on_start(Config(), 11, 820, torch.device("meta"), 55_000)
        display.on_phase("evaluating")
        for step in range(20, 60, 10):
            display.on_log(LogRecord(step, 820, step * 256, 0.1234, 0.95, 0.0125, 30_123.4, step / 90))
        display.on_validate(50, 0.9712, 0.0876, True)
        display.on_validate(60, 0.9701, 0.0899, False)
        display.stop()

    for screen in ("pipe", "term80"):
        ui = screen_ui(screen)
        draw(ui)
        check(f"training-{screen}", rendered(ui))


def test_evaluation_golden() -> None:
    title = "on test (10,329 images, fp32)"
    each_screen(lambda ui: ui.evaluation(_eval(), title, checkpoint="/srv/run/best.pt"), "eval")
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "[b]Sneaker", "Bag", "Boot")
    each_screen(lambda ui: ui.evaluation(_eval(), "on Fashion-MNIST test", classes), "eval-named")
    each_screen(lambda ui: ui.evaluation(_eval(), "on val"), "eval-quiet", verbosity=-1)


def test_predictions_golden(capsys: pytest.CaptureFixture[str]) -> None:
    each_screen(lambda ui: ui.predictions(_predictions()), "predict")
    each_screen(lambda ui: ui.predictions(_predictions(), show=True), "predict-show")
    each_screen(lambda ui: ui.predictions(_predictions(trace=True), trace_mode="rows"), "predict-trace")
    each_screen(lambda ui: ui.predictions(_predictions(trace=True), trace_mode="permuted"), "predict-permuted")
    each_screen(lambda ui: ui.predictions(_predictions(), show=True), "predict-json", json_mode=True)
    check("predict-errors", capsys.readouterr().err)


def test_reading_trace_of_a_pixel_model_golden() -> None:
    p = _predictions(trace=True)[0]
    p.trace = p.trace.repeat_interleave(28, dim=0)  # (784, 10)
    p.decided_at = 300
    each_screen(lambda ui: ui.console.print(ui.reading(p, "pixels")), "reading-pixels")


# --- tables of the experiment commands


def _seeds_summary() -> dict:
    runs = [
        {"seed": s, "test_accuracy": 0.97 + s / 1000, "test_loss": 0.09 - s / 100, "wall_seconds": 60.0 + s}
        for s in (0, 1, 2)
    ]

    def stat(values: list[float], std: float | None) -> dict:
        return {"mean": sum(values) / len(values), "std": std, "min": min(values), "max": max(values)}

    return {
        "seeds": [0, 1, 2],
        "runs": runs,
        "test_accuracy": stat([r["test_accuracy"] for r in runs], 0.001),
        "test_loss": stat([r["test_loss"] for r in runs], 0.01),
        "wall_seconds": stat([r["wall_seconds"] for r in runs], None),
    }


def test_seeds_summary_golden() -> None:
    each_screen(lambda ui: ui.seeds_summary(_seeds_summary(), Path("runs/seeds")), "seeds")


def _sweep_result(trials: int, best: bool) -> SweepResult:
    here = Path.cwd() / "sweeps" / "rows" / "trials"
    params = [{"lr": 0.001 * (n + 1), "hidden_size": 64} for n in range(trials)]
    rows = [TrialRow(n, "complete", 0.9 + n / 1000, params[n], str(here / f"t-{n}"), 80, None) for n in range(trials)]
    rows += [
        TrialRow(trials, "pruned", None, {"lr": 0.5}, "/elsewhere/sweeps/trial-x", 20, "pruned at step 20"),
        TrialRow(trials + 1, "running", None, {}, None, None, None),
    ]
    best_file = Path("sweeps/rows/best.toml") if best else None
    return SweepResult("rows", "sqlite:///sweeps/rows/study.db", trials, 2, rows, None, best_file)


def test_sweep_table_golden() -> None:
    each_screen(lambda ui: ui.sweep_summary(_sweep_result(3, True), ["lr", "hidden_size"]), "sweep")
    each_screen(lambda ui: ui.sweep_summary(_sweep_result(12, True), ["lr", "hidden_size"]), "sweep-many")
    each_screen(lambda ui: ui.sweep_summary(_sweep_result(0, False), ["lr"]), "sweep-none")


def test_a_sweep_trial_says_its_values_then_trains() -> None:
    ui = screen_ui("pipe")
    with ui.sweep_trial(3, {"lr": 0.00123456, "cell": "gru", "layers": 2}, Path("sweeps/t/trial-0003")) as display:
        display.on_phase("evaluating")
    assert rendered(ui) == "trial 3: lr=0.001235, cell=gru, layers=2 -> sweeps/t/trial-0003\nevaluating...\n"
    quiet = screen_ui("pipe", verbosity=-1)
    with quiet.sweep_trial(3, {"lr": 0.1}, Path("t")) as display:
        display.on_phase("evaluating")
    assert rendered(quiet) == ""


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dates shown in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folders of fixed figures and dates: finished, resumable, failed, damaged, a name with markup."""
    from rnnmnist.training.model import SequenceClassifier

    root = tmp_path_factory.mktemp("golden") / "runs"
    root.mkdir()
    cfg = Config(hidden_size=4, device="cpu")
    model = SequenceClassifier(cfg.model)
    metrics = {
        "test_accuracy": 0.9812,
        "test_loss": 0.0612,
        "val_accuracy": 0.9799,
        "steps": 820,
        "wall_seconds": 754.5,
        "train_seconds": 700.25,
        "best": {"step": 800, "test_accuracy": 0.9815, "val_accuracy": 0.9821},
    }
    finished = checkpoint.to_bytes(cfg, model, metrics)
    folders = {
        "2026-01-02-finished": ("hidden_size = 4\nlr = 0.003\ncell = 'gru'\n", finished),
        "a-run-with-a-long-descriptive-name-of-many-words": ("hidden_size = 4\nbatch_size = 32\nlayers = 2\n", None),
        "odd[red]name": ("hidden_size = 4\n", b"not a checkpoint"),
        "slow": ("lr = 0.0001\n", checkpoint.to_bytes(cfg, model, {**metrics, "wall_seconds": 40_000.0})),
    }
    for i, (name, (cfg_text, blob)) in enumerate(folders.items()):
        folder = root / name
        folder.mkdir()
        (folder / "config.toml").write_text(cfg_text)
        (folder / "metrics.jsonl").write_text('{"step": 5, "elapsed": 1.5}\n{"step": 10, "elapsed": 2.5}\n')
        if blob is not None:
            (folder / "checkpoint.pt").write_bytes(blob)
        os.utime(folder / "config.toml", (1_767_300_000 + 3600 * i, 1_767_300_000 + 3600 * i))
    return root


def _cli_screens() -> dict[str, dict[str, str]]:
    term = {"LINES": "40", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", "NO_COLOR": "1"}
    return {"pipe": {"COLUMNS": "100"}, "term80": {**term, "COLUMNS": "80"}, "term60": {**term, "COLUMNS": "60"}}


def _invoke(args: list[str], env: dict[str, str]) -> str:
    result = CliRunner().invoke(cli, args, env=env, prog_name="rnnmnist")
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_table_golden(run_folders: Path, utc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(run_folders.parent)  # the folders by relative names: the same on every machine
    for screen, env in _cli_screens().items():
        check(f"runs-{screen}", _invoke(["runs", "runs", "--verbose"], env))
    check("runs-none", _invoke(["runs", "runs", "--where", "cell=rnn"], {}))


def test_compare_table_golden(run_folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(run_folders.parent)
    folders = [f"runs/{name}" for name in sorted(os.listdir(run_folders))]
    for screen, env in _cli_screens().items():
        check(f"compare-{screen}", _invoke(["compare", *folders], env))
