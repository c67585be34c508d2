"""A run's lifecycle (rnnmnist.training.lifecycle): the run is built whole once its folder is taken, every
callback fires from the loop in order (a resumed run's too), and a stopped run is saved once, resumable.

These run real tiny trainings in-process; a signal is the process's own (os.kill), caught as ``train``
catches it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnmnist.config import Config
from rnnmnist.training import checkpoint
from rnnmnist.training.events import LogRecord, StopEarly, TrainCallbacks, TrainingInterrupted
from rnnmnist.training.lifecycle import Plan, train

TINY = Config(hidden_size=8, batch_size=25, iters=501, val_size=100, log_every=5, device="cpu", precision="fp32")


class Events(TrainCallbacks):
    """Every callback, in the order it came; ``act`` may act on one (send a signal, stop early)."""

    def __init__(self, out: Path, act: Any = None) -> None:
        self.out, self.act, self.seen = out, act, []
        self.files_at_start: list[str] = []

    def _event(self, event: tuple) -> None:
        self.seen.append(event)
        if self.act is not None:
            self.act(event)

    def on_start(self, cfg: Config, first_step: int, total_steps: int, device: torch.device, n_train: int) -> None:
        self.files_at_start = sorted(p.name for p in self.out.iterdir())
        self._event(("start", first_step, total_steps, device.type, n_train))

    def on_log(self, record: LogRecord) -> None:
        self._event(("log", record.step))

    def on_validate(self, step: int, accuracy: float, loss: float, best: bool) -> None:
        self._event(("validate", step))

    def on_phase(self, phase: str) -> None:
        self._event((phase,))


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The resumable checkpoints written (the real save, counted)."""
    written: list[Path] = []
    real = checkpoint.save

    def counted(path: Path, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("training") is not None:
            written.append(path)
        real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", counted)
    return written


def _train(data: Path, out: Path, events: TrainCallbacks | None, cfg: Config | None = TINY) -> Any:
    plan = Plan(out, cfg, resume=cfg is None, data_dir=data, download=False)
    return train(plan, events, time.perf_counter())


def _signal_at(step: int, signum: int = signal.SIGINT) -> Any:
    def act(event: tuple) -> None:
        if event == ("log", step) or (step == 0 and event[0] == "start"):
            os.kill(os.getpid(), signum)

    return act


def test_callbacks_fire_in_order_after_the_folder_is_taken(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    events = Events(out)
    _train(tiny_data, out, events, replace(TINY, eval_every=10))
    assert events.seen == [
        ("start", 1, 20, "cpu", 500),
        ("log", 5),
        ("log", 10),
        ("validate", 10),
        ("log", 15),
        ("log", 20),
        ("evaluating",),
        ("saving",),
    ]
    # The run is built, callbacks and all, only once its folder is taken: the config is already there.
    assert "config.toml" in events.files_at_start and "run.json" in events.files_at_start


def test_a_signal_stops_after_the_step_and_saves_once(tiny_data: Path, tmp_path: Path, saves: list[Path]) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stopped:
        _train(tiny_data, out, Events(out, _signal_at(5, signal.SIGTERM)))
    assert str(stopped.value) == (
        f"interrupted (SIGTERM) at step 5 of 20; saved {out / 'checkpoint.pt'}; "
        f"resume with: rnnmnist train --resume {out}"
    )
    assert stopped.value.exit_code == 143
    assert saves == [out / "checkpoint.pt"]
    assert checkpoint.load(out / "checkpoint.pt").training["step"] == 5

    resumed = Events(out)
    summary = _train(tiny_data, out, resumed, cfg=None)
    assert summary.steps == 20
    logged = [("log", 10), ("log", 15), ("log", 20)]
    assert resumed.seen == [("start", 6, 20, "cpu", 500), *logged, ("evaluating",), ("saving",)]


def test_a_signal_before_the_first_step_leaves_nothing(tiny_data: Path, tmp_path: Path, saves: list[Path]) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"^interrupted \(SIGINT\) before the first step; nothing was kept$"):
        _train(tiny_data, out, Events(out, _signal_at(0)))
    assert saves == []
    assert not out.exists()  # the folder it made goes too


def test_a_signal_before_the_first_step_keeps_what_was_there(
    tiny_data: Path, tmp_path: Path, saves: list[Path]
) -> None:
    out = tmp_path / "made" / "by" / "the" / "run"
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingInterrupted):
        _train(tiny_data, out, Events(out, _signal_at(0)))
    assert sorted(p.name for p in (tmp_path / "made").iterdir()) == ["notes.txt"]  # its own folders removed


def test_ctrl_c_in_the_final_evaluation_keeps_the_run_resumable(
    tiny_data: Path, tmp_path: Path, saves: list[Path]
) -> None:
    out = tmp_path / "run"

    def interrupt(event: tuple) -> None:
        if event == ("evaluating",):
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as stopped:
        _train(tiny_data, out, Events(out, interrupt))
    assert str(stopped.value) == (
        f"interrupted (SIGINT) during the final evaluation, after all 20 steps; saved {out / 'checkpoint.pt'}; "
        f"finish with: rnnmnist train --resume {out}"
    )
    assert stopped.value.exit_code == 130
    assert saves == [out / "checkpoint.pt"]

    resumed = Events(out)
    summary = _train(tiny_data, out, resumed, cfg=None)
    assert summary.steps == 20
    assert resumed.seen == [("start", 21, 20, "cpu", 500), ("evaluating",), ("saving",)]  # only evaluates


def test_stop_early_saves_once_and_lets_the_request_through(tiny_data: Path, tmp_path: Path, saves: list[Path]) -> None:
    out = tmp_path / "run"

    def stop(event: tuple) -> None:
        if event == ("log", 10):
            raise StopEarly

    with pytest.raises(StopEarly):
        _train(tiny_data, out, Events(out, stop))
    assert saves == [out / "checkpoint.pt"]
    assert checkpoint.load(out / "checkpoint.pt").training["step"] == 10
