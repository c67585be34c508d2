"""The training loop: :func:`fit`, which reads top to bottom, and :func:`finish`, the final evaluation and save.

Nothing here prints: a display (and TensorBoard) follow the run through its
:class:`~rnnmnist.training.events.TrainCallbacks`, and every callback fires from here.
Where a run starts, resumes, is interrupted and ends (folders, data, signals, processes)
is :mod:`rnnmnist.training.lifecycle`'s business: :func:`fit` only stops when asked, and
says so.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rnnmnist.config import EVAL_BATCH_SIZE
from rnnmnist.training import checkpoint
from rnnmnist.training.augment import augment, writers
from rnnmnist.training.data import scale
from rnnmnist.training.datasets import is_digits
from rnnmnist.training.device import autocast
from rnnmnist.training.digitcheck import CHECKPOINT_KEY, calibrated
from rnnmnist.training.distributed import all_reduce, collective
from rnnmnist.training.evaluate import EvalResult, evaluate
from rnnmnist.training.events import LogRecord, TrainingDiverged, TrainSummary
from rnnmnist.training.optimizer import optimizer_step
from rnnmnist.training.phases import Phases
from rnnmnist.training.run import Run
from rnnmnist.training.rundir import MetricsLog
from rnnmnist.training.schedule import lr_and_beta1

NOTEBOOK_TEST_IMAGES = 256  # the notebook's final print: accuracy on mnist.test.images[:256]


class _Diverged(Exception):
    def __init__(self, step: int, what: str) -> None:
        self.step, self.what = step, what


@dataclass
class _LastLog:
    """Where the previous log step was, for the examples-per-second rate."""

    time: float
    step: int


def _set_schedule(run: Run) -> None:
    lr, beta1 = lr_and_beta1(run.cfg, run.state.step, run.state.total)
    for group in run.state.optimizer.param_groups:
        group["lr"] = lr
        if beta1 is not None:
            group["betas"] = (beta1, group["betas"][1])


def _train_step(run: Run, loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on this rank's slice of the next batch; (loss, logits, labels), on the device."""
    cfg, state, train = run.cfg, run.state, run.data.train
    local = cfg.digits_per_step // run.rank.world_size  # the rest of the batch: generated non-digits
    first = run.rank.rank * local
    idx = state.stream.next()[first : first + local]  # (b,): this rank's slice of the batch
    # index_select, not images[idx]: torch's general indexing took ~10 times as long for this row gather.
    images = scale(train.images.index_select(0, idx))  # (b, 28, 28) float in [0, 1]
    labels = train.labels.index_select(0, idx)  # (b,)
    b = labels.shape[0]
    if run.outliers is not None:  # the batch's generated non-digits after its digits, augmented with them
        images = torch.cat([images, run.outliers.take(state.step)])  # (b + m, 28, 28)
    if cfg.augment:
        images = augment(images, cfg)
        if cfg.aug_writers:
            writers(images[:b], cfg.aug_writers)  # in place, on the digits only
    with autocast(images.device, cfg.precision):
        logits = run.net(images).float()  # (b + m, 10)
    loss = loss_fn(logits[:b], labels)  # the digits' loss: what the log shows
    total = loss
    if run.outliers is not None:  # cross-entropy to the uniform distribution over the classes
        others = logits[b:]  # (m, 10)
        total = loss + cfg.outlier_weight * (torch.logsumexp(others, dim=1) - others.mean(dim=1)).mean()
    logits = logits[:b]  # (b, 10)
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
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


def fit(run: Run, should_stop: Callable[[], int | None] = lambda: None) -> int:
    """Train from the state's step to the end: schedule, step, log, validate and keep the best, save.

    Returns 0 at the end, or the signal number ``should_stop`` answered: the loop then stops
    before its next step and leaves saving to the caller (:mod:`rnnmnist.training.lifecycle`).
    Raises :class:`TrainingDiverged` when a log or save step finds the loss or the weights not finite.
    """
    cfg, state = run.cfg, run.state
    run.callbacks.on_start(cfg, state.step + 1, state.total, state.device, len(run.data.train))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    metrics = run.run_dir.open_metrics(keep_through_step=state.step) if run.rank.main else None
    # DDP exchanges gradients inside backward(): a peer lost there must end in one clear line too.
    exchanging = collective("training") if run.rank.distributed else contextlib.nullcontext()
    run.net.train()
    last_log = _LastLog(time.perf_counter(), state.step)
    try:
        with exchanging:
            while state.step < state.total:
                signum = _stop_requested(run, should_stop)
                if signum:
                    return signum
                _step(run, loss_fn, metrics, last_log)
    except _Diverged as e:
        raise TrainingDiverged(
            f"training diverged at step {e.step}: {e.what}; {run.run_dir.last_good()}; "
            f"try a lower --lr or --grad-clip (checked every {cfg.log_every} steps)"
        ) from None
    finally:
        if metrics is not None:
            metrics.close()
    return 0


def _step(run: Run, loss_fn: nn.Module, metrics: MetricsLog | None, last_log: _LastLog) -> None:
    """One step, then what falls due after it: a log line, a validation pass, a resumable checkpoint."""
    cfg, state = run.cfg, run.state
    if cfg.schedule != "constant":
        _set_schedule(run)
    started = time.perf_counter()
    loss, logits, labels = _train_step(run, loss_fn)
    state.train_seconds += time.perf_counter() - started
    step, last = state.step, state.step == state.total
    # Reading numbers back synchronises with the device, so only log and save steps do it.
    if step % cfg.log_every == 0 or last:
        _log(run, *_batch_numbers(run, loss, logits, labels), metrics, last_log)
    validating = cfg.eval_every and step % cfg.eval_every == 0 and not last
    saving = cfg.save_every and step % cfg.save_every == 0 and not last
    if (validating or saving) and (not math.isfinite(loss.item()) or not run.weights_finite()):
        raise _Diverged(step, "the weights or the loss are not finite")
    if validating:
        validate(run, metrics)
    if saving:
        run.save_resumable()


def _log(run: Run, loss: float, accuracy: float, metrics: MetricsLog | None, last_log: _LastLog) -> None:
    """A log step: metrics.jsonl's line and the callbacks' record of the batch just trained on."""
    cfg, state = run.cfg, run.state
    if not math.isfinite(loss):
        raise _Diverged(state.step, f"the loss is {loss}")
    now = time.perf_counter()
    record = LogRecord(
        step=state.step,
        total_steps=state.total,
        examples=state.examples,
        loss=loss,
        accuracy=accuracy,
        lr=state.optimizer.param_groups[0]["lr"],
        examples_per_s=(state.step - last_log.step) * cfg.batch_size / max(now - last_log.time, 1e-9),
        elapsed=state.train_seconds,
    )
    if metrics is not None:
        metrics.write(asdict(record))
    run.callbacks.on_log(record)
    last_log.time, last_log.step = now, state.step


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
            decision = _digit_check(run, run.model)
            checkpoint.save(run.run_dir.checkpoint, run.cfg, run.model, summary.metrics(), **decision)
    summary.wall_seconds, summary.phases = phases.wall(), phases.as_dict()
    return summary


def _digit_check(run: Run, model: nn.Module) -> dict[str, Any]:
    """The checkpoint's ``digit_check`` (the "not like any digit" threshold, calibrated on the validation split)
    for a digit model with a validation split; nothing otherwise (predict then uses the fallback, or none)."""
    cfg = run.cfg
    if not len(run.data.val) or not is_digits(cfg.dataset):
        return {}
    check = calibrated(model, scale(run.data.val.images), cfg.precision, cfg.digit_keep, cfg.seed)
    return {CHECKPOINT_KEY: check.to_dict()}


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
    checkpoint.save(run.run_dir.best, run.cfg, model, best, **_digit_check(run, model))
    return best
