"""Training: a resumable loop, and a run that ends in evaluation and a final checkpoint.

Nothing here prints: progress is reported through :class:`TrainCallbacks`, and
stopping early is asked for through ``should_stop`` (the CLI wires signals to it).
A resumable checkpoint holds everything that decides the rest of the run (model,
optimizer, step, data order, RNG states), so a resumed run ends bit for bit where
an uninterrupted one would on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rnnmnist import checkpoint
from rnnmnist.augment import augment
from rnnmnist.config import EVAL_BATCH_SIZE, Config
from rnnmnist.data import BatchStream, Mnist, Split, scale
from rnnmnist.device import autocast, resolve_precision, tune_allocator
from rnnmnist.distributed import SINGLE, Rank, all_gather, all_reduce, collective
from rnnmnist.errors import CheckpointError, RnnmnistError
from rnnmnist.evaluate import EvalResult, evaluate
from rnnmnist.model import SequenceClassifier
from rnnmnist.rundir import MetricsLog, RunDir
from rnnmnist.schedule import lr_and_beta1

NOTEBOOK_TEST_IMAGES = 256  # the notebook's final print: accuracy on mnist.test.images[:256]
SIGNAL_NAMES = {2: "SIGINT", 15: "SIGTERM"}


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
    """How a caller follows a run; every hook does nothing by default."""

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
        self.exit_code = 128 + signum


class TrainingDiverged(RnnmnistError):
    """The loss or the weights stopped being finite numbers."""


class _NonFinite(Exception):
    def __init__(self, step: int, what: str) -> None:
        self.step, self.what = step, what


def make_optimizer(cfg: Config, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # On the CPU torch defaults to a per-parameter loop; the foreach kernels measured ~10% faster
    # per step there (fused was no better). Elsewhere torch's own choice (fused/foreach) stands.
    foreach = True if device.type == "cpu" else None
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=foreach)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """The optimisation loop over one training split, with everything needed to resume it.

    In a distributed run every rank draws the same global batches and trains on
    its own slice of each; DistributedDataParallel averages the gradients, so the
    steps are those of one process with the same global batch.
    """

    def __init__(self, cfg: Config, model: nn.Module, train: Split, device: torch.device, rank: Rank = SINGLE) -> None:
        self.cfg, self.model, self.train, self.device, self.rank = cfg, model, train, device, rank
        if cfg.batch_size % rank.world_size:
            raise RnnmnistError(
                f"batch_size={cfg.batch_size} (the global batch) does not divide among {rank.world_size} processes"
            )
        self.local_batch = cfg.batch_size // rank.world_size
        self.net = model
        if rank.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        self.optimizer = make_optimizer(cfg, model, device)
        self.stream = BatchStream(len(train), cfg.batch_size, cfg.seed, device)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.total = cfg.training_steps(len(train))
        self.step = 0  # steps completed
        self.train_seconds = 0.0  # across resumes
        self.best_val_accuracy = -1.0  # of the model in best.pt (--eval-every)
        self.best_step = 0
        self.stopped_by = 0  # the signal that stopped the loop early, if one did

    def state_dict(self) -> dict[str, Any]:
        """The resumable state; in a distributed run every rank must call this (RNG states are gathered)."""
        rng = _rng_state(self.device)
        return {
            "step": self.step,
            "examples": self.step * self.cfg.batch_size,
            "optimizer": self.optimizer.state_dict(),
            "data_order": self.stream.state_dict(),
            "rng": all_gather(rng) if self.rank.distributed else [rng],  # one per rank
            "train_seconds": self.train_seconds,
            "best_val_accuracy": self.best_val_accuracy,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            rng = state["rng"]
            if len(rng) != self.rank.world_size:
                raise CheckpointError(
                    f"this checkpoint was written by a run of {len(rng)} process(es); resume it with as many "
                    f"(--nproc {len(rng)})"
                )
            self.step = int(state["step"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.stream.load_state_dict(state["data_order"])
            _set_rng_state(rng[self.rank.rank], self.device)
            self.train_seconds = float(state["train_seconds"])
            self.best_val_accuracy = float(state["best_val_accuracy"])
            self.best_step = int(state["best_step"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            detail = " ".join(str(e).split())[:200]
            raise CheckpointError(
                f"the checkpoint's training state is damaged ({type(e).__name__}: {detail})"
            ) from None
        if not 0 <= self.step <= self.total:
            raise CheckpointError(f"the checkpoint's step {self.step} is outside this run's 0-{self.total} steps")

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _set_schedule(self) -> None:
        lr, beta1 = lr_and_beta1(self.cfg, self.step, self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if beta1 is not None:
                group["betas"] = (beta1, group["betas"][1])

    def _one_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimisation step; returns (loss, logits, labels) of this rank's batch, still on the device."""
        if self.cfg.schedule != "constant":
            self._set_schedule()
        first = self.rank.rank * self.local_batch
        idx = self.stream.next()[first : first + self.local_batch]  # (b,): this rank's slice of the batch
        images = scale(self.train.images[idx])  # (b, 28, 28) float in [0, 1]
        if self.cfg.augment:
            images = augment(images, self.cfg)
        labels = self.train.labels[idx]  # (b,)
        with autocast(self.device, self.cfg.precision):
            logits = self.net(images).float()  # (b, 10)
        loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return loss, logits, labels

    def _batch_numbers(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """(loss, accuracy) of the global batch: every rank's slice is the same size, so means average."""
        numbers = torch.stack([loss.detach().float(), (logits.argmax(dim=1) == labels).float().mean()])
        if self.rank.distributed:
            all_reduce(numbers)
            numbers /= self.rank.world_size
        loss_value, accuracy = numbers.tolist()
        return loss_value, accuracy

    def _stop_requested(self, should_stop: Callable[[], int | None] | None) -> int:
        """The signal number asking to stop, agreed by all ranks (at log steps when distributed), else 0."""
        if should_stop is None:
            return 0
        if not self.rank.distributed:
            return should_stop() or 0
        if self.step % self.cfg.log_every:
            return 0
        flag = torch.tensor([should_stop() or 0], device=self.device)
        return int(all_reduce(flag, dist.ReduceOp.MAX))

    def run(
        self,
        on_log: Callable[[LogRecord], None] | None = None,
        on_save: Callable[[], None] | None = None,
        should_stop: Callable[[], int | None] | None = None,
        on_validate: Callable[[], None] | None = None,
    ) -> None:
        """Train from the current step to the end.

        ``on_validate`` is called every ``eval_every`` steps (before the last),
        then ``on_save`` every ``save_every`` steps, with finite weights.
        Raises :class:`_NonFinite` when a log or save step finds the loss or
        weights not finite, and stops (returning early, ``stopped_by`` set) when
        ``should_stop`` answers a signal number; the caller saves and reports.
        """
        # DDP exchanges gradients inside backward(): a peer lost there must end in one clear line too.
        with collective("training") if self.rank.distributed else contextlib.nullcontext():
            self._run(on_log, on_save, should_stop, on_validate)

    def _run(
        self,
        on_log: Callable[[LogRecord], None] | None,
        on_save: Callable[[], None] | None,
        should_stop: Callable[[], int | None] | None,
        on_validate: Callable[[], None] | None,
    ) -> None:
        cfg = self.cfg
        self.net.train()
        last_time, last_step = time.perf_counter(), self.step
        while self.step < self.total:
            self.stopped_by = self._stop_requested(should_stop)
            if self.stopped_by:
                return
            t0 = time.perf_counter()
            loss, logits, labels = self._one_step()
            self.train_seconds += time.perf_counter() - t0
            step = self.step
            # Reading numbers back synchronises with the device, so only log and save steps do it.
            if step % cfg.log_every == 0 or step == self.total:
                loss_value, accuracy = self._batch_numbers(loss, logits, labels)
                if not math.isfinite(loss_value):
                    raise _NonFinite(step, f"the loss is {loss_value}")
                if on_log is not None:
                    now = time.perf_counter()
                    on_log(
                        LogRecord(
                            step=step,
                            total_steps=self.total,
                            examples=step * cfg.batch_size,
                            loss=loss_value,
                            accuracy=accuracy,
                            lr=self.optimizer.param_groups[0]["lr"],
                            examples_per_s=(step - last_step) * cfg.batch_size / max(now - last_time, 1e-9),
                            elapsed=self.train_seconds,
                        )
                    )
                    last_time, last_step = now, step
            validate = cfg.eval_every and step % cfg.eval_every == 0 and on_validate is not None
            save = cfg.save_every and step % cfg.save_every == 0 and on_save is not None
            if (validate or save) and step < self.total:
                if not math.isfinite(loss.item()) or not self.weights_finite():
                    raise _NonFinite(step, "the weights or the loss are not finite")
                if validate:
                    on_validate()
                if save:
                    on_save()


@dataclass
class TrainSummary:
    config: Config  # as run: precision resolved
    run_dir: RunDir
    steps: int
    examples: int
    train_seconds: float
    wall_seconds: float
    test: EvalResult
    test_accuracy_first256: float
    val: EvalResult | None
    best: dict[str, Any] | None = None  # best.pt's step and accuracies, with --eval-every

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
        }


class _Run:
    """One run's moving parts: the loop, its run folder and its reporting.

    In a distributed run every rank runs all of this (the collectives need them
    all), but only rank 0 writes files and reports.
    """

    def __init__(
        self,
        cfg: Config,
        data: Mnist,
        run_dir: RunDir,
        device: torch.device,
        callbacks: TrainCallbacks,
        resume: checkpoint.Checkpoint | None,
        rank: Rank,
    ) -> None:
        self.cfg, self.run_dir, self.rank = cfg, run_dir, rank
        self.callbacks = callbacks if rank.main else TrainCallbacks()
        if resume is None:
            if rank.main:
                run_dir.write_config(cfg)
            torch.manual_seed(cfg.seed)  # the same initial weights on every rank
            self.model = SequenceClassifier(cfg).to(device)
            if rank.distributed:
                torch.manual_seed(cfg.seed + rank.rank)  # but each rank its own dropout and augmentation
        else:
            self.model = resume.build_model(device)
        self.train, self.val, self.test = data.train.to(device), data.val.to(device), data.test.to(device)
        self.trainer = Trainer(cfg, self.model, self.train, device, rank)
        if resume is not None:
            self.trainer.load_state_dict(resume.training)
        self.best_path = run_dir.path / "best.pt"
        self.metrics_log: MetricsLog | None = None

    def _evaluate(self, split: Split) -> EvalResult:
        return evaluate(self.model, split, EVAL_BATCH_SIZE, self.cfg.precision, self.rank)

    def save_resumable(self) -> None:
        state = self.trainer.state_dict()  # a collective: every rank takes part
        if self.rank.main:
            checkpoint.save(self.run_dir.checkpoint, self.cfg, self.model, {}, training=state)

    def log(self, record: LogRecord) -> None:
        if self.metrics_log is not None:
            self.metrics_log.write(asdict(record))
        self.callbacks.on_log(record)

    def validate(self) -> EvalResult:
        """A validation pass; a model better than best.pt's replaces it."""
        step, result, t = self.trainer.step, self._evaluate(self.val), self.trainer
        improved = result.accuracy > t.best_val_accuracy
        if improved:
            t.best_val_accuracy, t.best_step = result.accuracy, step
            if self.rank.main:
                metrics = {"step": step, "val_accuracy": result.accuracy, "val_loss": result.loss}
                checkpoint.save(self.best_path, self.cfg, self.model, metrics)
        if self.metrics_log is not None:
            self.metrics_log.write(
                {
                    "step": step,
                    "examples": step * self.cfg.batch_size,
                    "val_loss": result.loss,
                    "val_accuracy": result.accuracy,
                }
            )
        self.callbacks.on_validate(step, result.accuracy, result.loss, improved)
        return result

    def loop(self, should_stop: Callable[[], int | None] | None) -> None:
        if self.rank.main:
            self.metrics_log = self.run_dir.open_metrics(keep_through_step=self.trainer.step)
        try:
            self.trainer.run(self.log, self.save_resumable, should_stop, self.validate)
        except _NonFinite as e:
            raise TrainingDiverged(
                f"training diverged at step {e.step}: {e.what}; {_last_good(self.run_dir)}; "
                f"try a lower --lr or --grad-clip (checked every {self.cfg.log_every} steps)"
            ) from None
        finally:
            if self.metrics_log is not None:
                self.metrics_log.close()
                self.metrics_log = None
        if self.trainer.step < self.trainer.total:  # stopped on request
            _stop(self.trainer, self.run_dir, self.save_resumable, self.trainer.stopped_by or 2)

    def finish(self, started_at: float) -> TrainSummary:
        self.callbacks.on_phase("evaluating")
        test = self._evaluate(self.test)
        val = self._evaluate(self.val) if len(self.val) else None
        best = self._best(test, val) if self.cfg.eval_every else None
        self.callbacks.on_phase("saving")
        t = self.trainer
        summary = TrainSummary(
            config=self.cfg,
            run_dir=self.run_dir,
            steps=t.step,
            examples=t.step * self.cfg.batch_size,
            train_seconds=t.train_seconds,
            wall_seconds=0.0,
            test=test,
            test_accuracy_first256=test.first_accuracy(self.test.labels, NOTEBOOK_TEST_IMAGES),
            val=val,
            best=best,
        )
        summary.wall_seconds = time.perf_counter() - started_at
        if self.rank.main:
            checkpoint.save(self.run_dir.checkpoint, self.cfg, self.model, summary.metrics())
        return summary

    def _best(self, test: EvalResult, val: EvalResult) -> dict[str, Any] | None:
        """best.pt: the final model if its validation accuracy is the best seen, else the best earlier one,
        with its test accuracy measured now (selection on validation, reporting on test). Rank 0's work."""
        t = self.trainer
        if not self.rank.main:
            return None
        if val.accuracy > t.best_val_accuracy:
            t.best_val_accuracy, t.best_step = val.accuracy, t.step
            best_test = test
            model = self.model
        else:
            model, _ = checkpoint.load_model(self.best_path, self.test.labels.device)
            best_test = evaluate(model, self.test, EVAL_BATCH_SIZE, self.cfg.precision)  # rank 0 alone
        best = {
            "step": t.best_step,
            "val_accuracy": t.best_val_accuracy,
            "test_accuracy": best_test.accuracy,
            "test_loss": best_test.loss,
            "checkpoint": str(self.best_path),
        }
        checkpoint.save(self.best_path, self.cfg, model, best)
        return best


def run(
    cfg: Config,
    data: Mnist,
    run_dir: RunDir,
    device: torch.device,
    callbacks: TrainCallbacks | None = None,
    started_at: float | None = None,
    should_stop: Callable[[], int | None] | None = None,
    resume: checkpoint.Checkpoint | None = None,
    rank: Rank = SINGLE,
) -> TrainSummary:
    """Train (or continue ``resume``), evaluate on the test and validation splits, write the run folder.

    ``run_dir`` must have been prepared (:meth:`RunDir.prepare_new` or ``prepare_resume``).
    In a distributed run every rank calls this, after joining the process group.
    """
    callbacks = callbacks or TrainCallbacks()
    started_at = time.perf_counter() if started_at is None else started_at
    # "auto" is resolved here and stored, so eval and a rerun compute as training did.
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, device))
    if device.type == "cpu":
        tune_allocator()
    state = _Run(cfg, data, run_dir, device, callbacks, resume, rank)
    callbacks.on_start(cfg, state.trainer.step + 1, state.trainer.total, device, len(state.train))
    state.loop(should_stop)
    return state.finish(started_at)


def _last_good(run_dir: RunDir) -> str:
    if run_dir.checkpoint.exists():
        return f"the last good checkpoint is kept in {run_dir.checkpoint}"
    return "no checkpoint had been written (use --save-every to keep some)"


def _stop(trainer: Trainer, run_dir: RunDir, save: Callable[[], None], signum: int) -> None:
    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    where = f"at step {trainer.step} of {trainer.total}"
    if trainer.step == 0:
        raise TrainingInterrupted(f"interrupted ({name}) before the first step; nothing to resume", signum)
    if not trainer.weights_finite():
        raise TrainingInterrupted(
            f"interrupted ({name}) {where} with non-finite weights; {_last_good(run_dir)}", signum
        )
    save()
    nproc = f" --nproc {trainer.rank.world_size}" if trainer.rank.distributed else ""
    raise TrainingInterrupted(
        f"interrupted ({name}) {where}; saved {run_dir.checkpoint}; "
        f"resume with: rnnmnist train --resume {run_dir.path}{nproc}",
        signum,
    )
