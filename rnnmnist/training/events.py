"""A training run's events, as the loop reports them and a display follows them: no torch here.

The loop (:mod:`rnnmnist.training.loop`) produces these; the CLI's display, TensorBoard and a sweep's
pruner consume them, and none of those needs torch to know what a log step or a summary is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnmnist.config import Config
from rnnmnist.errors import ExitCode, RnnmnistError

if TYPE_CHECKING:
    import torch

    from rnnmnist.training.evaluate import EvalResult
    from rnnmnist.training.rundir import RunDir


@dataclass
class LogRecord:
    """One log step: the batch just trained on, as the notebook printed it, plus rate and lr."""

    step: int
    total_steps: int
    examples: int  # examples seen so far: the notebook's "Iteration"
    loss: float  # this batch's training loss, before the step's update
    accuracy: float  # this batch's accuracy, before the step's update
    lr: float
    examples_per_s: float  # since the previous log step
    elapsed: float  # training seconds so far, across resumes


class TrainCallbacks:
    """How a display (or TensorBoard) follows a run; every hook does nothing by default."""

    def on_start(self, cfg: Config, first_step: int, total_steps: int, device: torch.device, n_train: int) -> None:
        """``cfg`` as run (precision resolved); ``first_step`` > 1 when resuming."""

    def on_log(self, record: LogRecord) -> None:
        pass

    def on_validate(self, step: int, accuracy: float, loss: float, best: bool) -> None:
        """A validation pass (--eval-every); ``best``: the best so far, now in best.pt."""

    def on_phase(self, phase: str) -> None:
        """``phase``: "evaluating" or "saving"."""


class CallbackList(TrainCallbacks):
    """Several followers of one run, called in order."""

    def __init__(self, *callbacks: TrainCallbacks) -> None:
        self.callbacks = callbacks

    def on_start(self, *args: Any) -> None:
        for c in self.callbacks:
            c.on_start(*args)

    def on_log(self, record: LogRecord) -> None:
        for c in self.callbacks:
            c.on_log(record)

    def on_validate(self, *args: Any) -> None:
        for c in self.callbacks:
            c.on_validate(*args)

    def on_phase(self, phase: str) -> None:
        for c in self.callbacks:
            c.on_phase(phase)


class TrainingInterrupted(RnnmnistError):
    """Stopped on request (a signal); a resumable checkpoint was written if any step ran."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = ExitCode.for_signal(signum)


class StopEarly(Exception):
    """Raised by a callback (e.g. a sweep's pruner in ``on_validate``) to end a single-process run early.

    :func:`rnnmnist.training.lifecycle.train` treats it as a normal stop: it saves a resumable
    checkpoint and lets it through to whoever asked.
    """


class TrainingDiverged(RnnmnistError):
    """The loss or the weights stopped being finite numbers."""


@dataclass
class TrainSummary:
    config: Config  # as run: precision resolved
    run_dir: RunDir
    steps: int
    examples: int
    train_seconds: float  # training steps only, across resumes
    wall_seconds: float  # this process's, from its start
    test: EvalResult
    test_accuracy_first256: float
    val: EvalResult | None
    best: dict[str, Any] | None = None  # best.pt's step and accuracies, with --eval-every
    phases: dict[str, float] | None = None  # wall seconds of startup, data, train, evaluate, save
    resumed_seconds: float = 0.0  # of train_seconds, those of earlier processes (0 unless resumed)

    @property
    def train_seconds_this_process(self) -> float:
        """This process's training steps: what compares with ``wall_seconds`` (train_seconds spans resumes)."""
        return self.train_seconds - self.resumed_seconds

    @property
    def checkpoint(self) -> Path:
        return self.run_dir.checkpoint

    def metrics(self) -> dict[str, Any]:
        """The final figures, as plain numbers (stored in the checkpoint and printed by --json)."""
        return {
            "test_accuracy": self.test.accuracy,
            "test_loss": self.test.loss,
            "test_accuracy_first256": self.test_accuracy_first256,
            "test_n": self.test.n,
            "val_accuracy": self.val.accuracy if self.val else None,
            "val_loss": self.val.loss if self.val else None,
            "steps": self.steps,
            "examples": self.examples,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
            "best": self.best,
            "phases": self.phases,
        }
