"""The training loop: a :class:`TrainState` that survives restarts, and :func:`fit`, which reads top to bottom.

Nothing here prints: a display (and TensorBoard) follow the run through
:class:`TrainCallbacks`. Where a run starts, resumes and ends (folders, data,
signals, processes) is :mod:`rnnmnist.training.lifecycle`'s business. A resumable checkpoint
holds the whole state (model, optimizer, step, data order, RNG states, best so
far), so a resumed run ends bit for bit where an uninterrupted one would on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rnnmnist.config import EVAL_BATCH_SIZE, Config
from rnnmnist.errors import CheckpointError, one_line, shown
from rnnmnist.signals import signal_name
from rnnmnist.training import checkpoint
from rnnmnist.training.augment import augment
from rnnmnist.training.data import BatchStream, Mnist, Split, scale
from rnnmnist.training.device import autocast
from rnnmnist.training.distributed import SINGLE, Rank, all_gather, all_reduce, collective
from rnnmnist.training.evaluate import EvalResult, evaluate
from rnnmnist.training.events import LogRecord, TrainCallbacks, TrainingDiverged, TrainingInterrupted, TrainSummary
from rnnmnist.training.optimizer import make_optimizer, optimizer_step
from rnnmnist.training.phases import Phases
from rnnmnist.training.rundir import MetricsLog, RunDir
from rnnmnist.training.schedule import lr_and_beta1

NOTEBOOK_TEST_IMAGES = 256  # the notebook's final print: accuracy on mnist.test.images[:256]


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _check_rng(rng: Any, world_size: int) -> None:
    if not isinstance(rng, list) or not all(isinstance(r, dict) for r in rng):
        raise ValueError("rng: not a list of RNG states")
    if len(rng) != world_size:
        raise CheckpointError(
            f"this checkpoint was written by a run of {len(rng)} process(es); resume it with as many "
            f"(--nproc {len(rng)})"
        )
    for r in rng:
        cpu = r.get("cpu")
        if not isinstance(cpu, torch.Tensor) or cpu.dtype != torch.uint8:
            raise ValueError("rng: the CPU generator state is not a byte tensor")


def _check_optimizer(state: Any, optimizer: torch.optim.Optimizer) -> None:
    """Every saved moment must have its parameter's shape: torch would accept a wrong one and fail later."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        raise ValueError("optimizer: not an optimizer state")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, moments in state["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(moments, dict):
            raise ValueError(f"optimizer: no parameter {shown(index)}")
        for name, value in moments.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"optimizer: {name} of parameter {index} is not a tensor")
            if name != "step" and value.shape != params[index].shape:
                raise ValueError(
                    f"optimizer: {name} of parameter {index} is {tuple(value.shape)}, "
                    f"the parameter {tuple(params[index].shape)}"
                )
            if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise ValueError(f"optimizer: {name} of parameter {index} is not finite floating-point")


def _number(state: dict[str, Any], key: str, low: float, high: float, kind: type = float) -> Any:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{key} is not {'an integer' if kind is int else 'a number'}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{key} {shown(value)} is outside {low}-{high}")
    return kind(value)


class TrainState:
    """Everything that decides the rest of a run besides the weights: step, optimizer, data order,
    RNG states, best model so far. ``state_dict`` and ``load_state_dict`` make a run resumable;
    loading validates every part before using any of it."""

    def __init__(self, cfg: Config, model: nn.Module, n_train: int, device: torch.device, rank: Rank = SINGLE):
        self.cfg, self.device, self.rank = cfg, device, rank
        self.optimizer = make_optimizer(cfg, model, device)
        self.stream = BatchStream(n_train, cfg.batch_size, cfg.seed, device)
        self.total = cfg.training_steps(n_train)
        self.step = 0  # steps completed
        self.train_seconds = 0.0  # across resumes
        self.resumed_seconds = 0.0  # of train_seconds, those spent by earlier processes (a resumed run)
        self.best_val_accuracy = -1.0  # of the model in best.pt (--eval-every)
        self.best_step = 0

    @property
    def examples(self) -> int:
        return self.step * self.cfg.batch_size

    def state_dict(self) -> dict[str, Any]:
        """The resumable state; in a distributed run every rank must call this (RNG states are gathered)."""
        rng = _rng_state(self.device)
        return {
            "step": self.step,
            "examples": self.examples,
            "optimizer": self.optimizer.state_dict(),
            "data_order": self.stream.state_dict(),
            "rng": all_gather(rng) if self.rank.distributed else [rng],  # one per rank
            "train_seconds": self.train_seconds,
            "best_val_accuracy": self.best_val_accuracy,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state: Any) -> None:
        """Restore a saved state; anything damaged or not of this run is a one-line CheckpointError."""
        try:
            if not isinstance(state, dict):
                raise ValueError("not a table")
            _check_rng(state["rng"], self.rank.world_size)
            step = _number(state, "step", 0, self.total, int)
            seconds = _number(state, "train_seconds", 0, float("inf"))
            best_accuracy = _number(state, "best_val_accuracy", -1.0, 1.0)
            best_step = _number(state, "best_step", 0, step, int)
            _check_optimizer(state["optimizer"], self.optimizer)
            self.stream.load_state_dict(state["data_order"])
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"][self.rank.rank]
            torch.set_rng_state(rng["cpu"])
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state_all(rng["cuda"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else one_line(e)
            raise CheckpointError(f"the checkpoint's training state is damaged ({what})") from None
        self.step, self.train_seconds, self.best_val_accuracy, self.best_step = step, seconds, best_accuracy, best_step
        self.resumed_seconds = seconds


class _Diverged(Exception):
    def __init__(self, step: int, what: str) -> None:
        self.step, self.what = step, what


class Run:
    """One training run's parts, as :func:`fit` and :func:`finish` use them.

    In a distributed run every rank holds all of this (the collectives need them
    all), but only rank 0 writes files and reports.
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        data: Mnist,
        state: TrainState,
        run_dir: RunDir,
        callbacks: TrainCallbacks | None = None,
        rank: Rank = SINGLE,
    ) -> None:
        self.cfg, self.model, self.data, self.state, self.run_dir, self.rank = cfg, model, data, state, run_dir, rank
        self.callbacks = callbacks if callbacks is not None and rank.main else TrainCallbacks()
        self.net = model
        if rank.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device = data.train.labels.device
            self.net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def evaluate(self, split: Split) -> EvalResult:
        return evaluate(self.model, split, EVAL_BATCH_SIZE, self.cfg.precision, self.rank)

    def save_resumable(self) -> None:
        state = self.state.state_dict()  # a collective: every rank takes part
        if self.rank.main:
            checkpoint.save(self.run_dir.checkpoint, self.cfg, self.model, {}, training=state)

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())


def _set_schedule(run: Run) -> None:
    lr, beta1 = lr_and_beta1(run.cfg, run.state.step, run.state.total)
    for group in run.state.optimizer.param_groups:
        group["lr"] = lr
        if beta1 is not None:
            group["betas"] = (beta1, group["betas"][1])


def _train_step(run: Run, loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on this rank's slice of the next batch; (loss, logits, labels), on the device."""
    cfg, state, train = run.cfg, run.state, run.data.train
    local = cfg.batch_size // run.rank.world_size
    first = run.rank.rank * local
    idx = state.stream.next()[first : first + local]  # (b,): this rank's slice of the batch
    # index_select, not images[idx]: torch's general indexing took ~10 times as long for this row gather.
    images = scale(train.images.index_select(0, idx))  # (b, 28, 28) float in [0, 1]
    if cfg.augment:
        images = augment(images, cfg)
    labels = train.labels.index_select(0, idx)  # (b,)
    with autocast(images.device, cfg.precision):
        logits = run.net(images).float()  # (b, 10)
    loss = loss_fn(logits, labels)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    optimizer_step(state.optimizer)
    state.step += 1
    return loss, logits, labels


def _batch_numbers(run: Run, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(loss, accuracy) of the global batch: every rank's slice is the same size, so means average."""
    numbers = torch.stack([loss.detach().float(), (logits.argmax(dim=1) == labels).float().mean()])
    if run.rank.distributed:
        all_reduce(numbers)
        numbers /= run.rank.world_size
    loss_value, accuracy = numbers.tolist()
    return loss_value, accuracy


def _stop_requested(run: Run, should_stop: Callable[[], int | None]) -> int:
    """The signal number asking to stop, agreed by all ranks (at log steps when distributed), else 0."""
    if not run.rank.distributed:
        return should_stop() or 0
    if run.state.step % run.cfg.log_every:
        return 0
    flag = torch.tensor([should_stop() or 0], device=run.data.train.labels.device)
    return int(all_reduce(flag, dist.ReduceOp.MAX))


def validate(run: Run, metrics: MetricsLog | None) -> EvalResult:
    """A validation pass; a model better than best.pt's replaces it."""
    state, result = run.state, run.evaluate(run.data.val)
    improved = result.accuracy > state.best_val_accuracy
    if improved:
        state.best_val_accuracy, state.best_step = result.accuracy, state.step
        if run.rank.main:
            best = {"step": state.step, "val_accuracy": result.accuracy, "val_loss": result.loss}
            checkpoint.save(run.run_dir.best, run.cfg, run.model, best)
    if metrics is not None:
        metrics.write(
            {"step": state.step, "examples": state.examples, "val_loss": result.loss, "val_accuracy": result.accuracy}
        )
    run.callbacks.on_validate(state.step, result.accuracy, result.loss, improved)
    return result


def fit(run: Run, should_stop: Callable[[], int | None] = lambda: None) -> None:
    """Train from the state's step to the end: schedule, step, log, validate and keep the best, save, stop.

    Raises :class:`TrainingInterrupted` (after saving a resumable checkpoint) when
    ``should_stop`` answers a signal number, and :class:`TrainingDiverged` when a
    log or save step finds the loss or the weights not finite.
    """
    cfg, state = run.cfg, run.state
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    metrics = run.run_dir.open_metrics(keep_through_step=state.step) if run.rank.main else None
    # DDP exchanges gradients inside backward(): a peer lost there must end in one clear line too.
    exchanging = collective("training") if run.rank.distributed else contextlib.nullcontext()
    run.net.train()
    last_time, last_step = time.perf_counter(), state.step
    try:
        with exchanging:
            while state.step < state.total:
                signum = _stop_requested(run, should_stop)
                if signum:
                    _interrupted(run, signum)
                if cfg.schedule != "constant":
                    _set_schedule(run)
                started = time.perf_counter()
                loss, logits, labels = _train_step(run, loss_fn)
                state.train_seconds += time.perf_counter() - started
                step, last = state.step, state.step == state.total
                # Reading numbers back synchronises with the device, so only log and save steps do it.
                if step % cfg.log_every == 0 or last:
                    loss_value, accuracy = _batch_numbers(run, loss, logits, labels)
                    if not math.isfinite(loss_value):
                        raise _Diverged(step, f"the loss is {loss_value}")
                    now = time.perf_counter()
                    record = LogRecord(
                        step=step,
                        total_steps=state.total,
                        examples=state.examples,
                        loss=loss_value,
                        accuracy=accuracy,
                        lr=state.optimizer.param_groups[0]["lr"],
                        examples_per_s=(step - last_step) * cfg.batch_size / max(now - last_time, 1e-9),
                        elapsed=state.train_seconds,
                    )
                    if metrics is not None:
                        metrics.write(asdict(record))
                    run.callbacks.on_log(record)
                    last_time, last_step = now, step
                validating = cfg.eval_every and step % cfg.eval_every == 0 and not last
                saving = cfg.save_every and step % cfg.save_every == 0 and not last
                if (validating or saving) and (not math.isfinite(loss.item()) or not run.weights_finite()):
                    raise _Diverged(step, "the weights or the loss are not finite")
                if validating:
                    validate(run, metrics)
                if saving:
                    run.save_resumable()
    except _Diverged as e:
        raise TrainingDiverged(
            f"training diverged at step {e.step}: {e.what}; {_last_good(run.run_dir)}; "
            f"try a lower --lr or --grad-clip (checked every {cfg.log_every} steps)"
        ) from None
    finally:
        if metrics is not None:
            metrics.close()


def finish(run: Run, phases: Phases) -> TrainSummary:
    """After the last step: evaluate on the test and validation splits, keep best.pt honest, save the final
    checkpoint with its metrics.

    The checkpoint's metrics are taken before it is written, so its ``wall_seconds`` and ``phases``
    leave out its own saving; the returned summary's include it.
    """
    run.callbacks.on_phase("evaluating")
    with phases.timed("evaluate"):
        test = run.evaluate(run.data.test)
        val = run.evaluate(run.data.val) if len(run.data.val) else None
        # best.pt's test accuracy (and its rewrite with it, a small save) with --eval-every
        best = _final_best(run, test, val) if run.cfg.eval_every and val is not None else None
    run.callbacks.on_phase("saving")
    state = run.state
    summary = TrainSummary(
        config=run.cfg,
        run_dir=run.run_dir,
        steps=state.step,
        examples=state.examples,
        train_seconds=state.train_seconds,
        wall_seconds=phases.wall(),
        test=test,
        test_accuracy_first256=test.first_accuracy(run.data.test.labels, NOTEBOOK_TEST_IMAGES),
        val=val,
        best=best,
        phases=phases.as_dict(),
        resumed_seconds=state.resumed_seconds,
    )
    if run.rank.main:
        with phases.timed("save"):
            checkpoint.save(run.run_dir.checkpoint, run.cfg, run.model, summary.metrics())
    summary.wall_seconds, summary.phases = phases.wall(), phases.as_dict()
    return summary


def _final_best(run: Run, test: EvalResult, val: EvalResult) -> dict[str, Any] | None:
    """best.pt: the final model if its validation accuracy is the best seen, else the best earlier one,
    with its test accuracy measured now (selection on validation, reporting on test). Rank 0's work."""
    state = run.state
    if not run.rank.main:
        return None
    if val.accuracy > state.best_val_accuracy:
        state.best_val_accuracy, state.best_step = val.accuracy, state.step
        model, best_test = run.model, test
    else:
        model, _ = checkpoint.load_model(run.run_dir.best, run.data.test.labels.device)
        best_test = evaluate(model, run.data.test, EVAL_BATCH_SIZE, run.cfg.precision)  # rank 0 alone
    best = {
        "step": state.best_step,
        "val_accuracy": state.best_val_accuracy,
        "test_accuracy": best_test.accuracy,
        "test_loss": best_test.loss,
        "checkpoint": str(run.run_dir.best),
    }
    checkpoint.save(run.run_dir.best, run.cfg, model, best)
    return best


def _last_good(run_dir: RunDir) -> str:
    if run_dir.checkpoint.exists():
        return f"the last good checkpoint is kept in {run_dir.checkpoint}"
    return "no checkpoint had been written (use --save-every to keep some)"


def _interrupted(run: Run, signum: int) -> None:
    """Save what can be resumed and raise :class:`TrainingInterrupted` saying how to go on."""
    name = signal_name(signum)
    state, run_dir = run.state, run.run_dir
    where = f"at step {state.step} of {state.total}"
    if state.step == 0:
        raise TrainingInterrupted(f"interrupted ({name}) before the first step; nothing was kept", signum)
    if not run.weights_finite():
        raise TrainingInterrupted(
            f"interrupted ({name}) {where} with non-finite weights; {_last_good(run_dir)}", signum
        )
    run.save_resumable()
    nproc = f" --nproc {run.rank.world_size}" if run.rank.distributed else ""
    raise TrainingInterrupted(
        f"interrupted ({name}) {where}; saved {run_dir.checkpoint}; "
        f"resume with: rnnmnist train --resume {run_dir.path}{nproc}",
        signum,
    )
