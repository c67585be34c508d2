"""The training run: the loop, the end-of-run evaluation, and what a run folder holds.

A run folder (``--out``) holds ``config.toml`` (written first, so even a killed
run says what it was), ``metrics.jsonl`` (a line per log step) and
``checkpoint.pt`` (written last, atomically). Nothing here prints: progress is
reported through :class:`TrainCallbacks`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from rnnmnist import checkpoint
from rnnmnist.config import EVAL_BATCH_SIZE, Config, to_toml
from rnnmnist.data import BatchStream, Mnist, Split, scale
from rnnmnist.device import autocast, resolve_precision, tune_allocator
from rnnmnist.errors import RnnmnistError
from rnnmnist.evaluate import EvalResult, evaluate
from rnnmnist.files import write_atomic
from rnnmnist.model import SequenceClassifier
from rnnmnist.schedule import lr_and_beta1

RUN_FILES = ("checkpoint.pt", "config.toml", "metrics.jsonl")
NOTEBOOK_TEST_IMAGES = 256  # the notebook's final print: accuracy on mnist.test.images[:256]


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
    elapsed: float  # seconds since training began


class TrainCallbacks:
    """How a caller follows a run; every hook does nothing by default."""

    def on_start(self, cfg: Config, total_steps: int, device: torch.device, n_train: int) -> None:
        """``cfg`` is the config as run (precision resolved)."""

    def on_log(self, record: LogRecord) -> None:
        pass

    def on_phase(self, phase: str) -> None:
        """``phase``: "evaluating" or "saving"."""


@dataclass
class TrainSummary:
    config: Config  # as run: precision resolved
    out_dir: Path
    checkpoint: Path
    steps: int
    examples: int
    train_seconds: float
    wall_seconds: float
    test: EvalResult
    test_accuracy_first256: float
    val: EvalResult | None

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
        }


def prepare_out_dir(out_dir: Path, force: bool) -> None:
    """Create the run folder; refuse one that already holds a run unless ``force``."""
    existing = [name for name in RUN_FILES if (out_dir / name).exists()]
    if existing and not force:
        raise RnnmnistError(
            f"{out_dir} already holds a run ({', '.join(existing)}); pass --force to overwrite it "
            f"or choose another --out"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnmnistError(f"cannot create run folder {out_dir}: {e.strerror or e}") from None


def make_optimizer(cfg: Config, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # On the CPU torch defaults to a per-parameter loop; the foreach kernels measured ~10% faster
    # per step there (fused was no better). Elsewhere torch's own choice (fused/foreach) stands.
    foreach = True if device.type == "cpu" else None
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=foreach)


class _MetricsLog:
    """metrics.jsonl, a line per log step, flushed as written so a killed run keeps its curve."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file: IO[str] = path.open("w", encoding="utf-8")
        except OSError as e:
            raise RnnmnistError(f"cannot write {path}: {e.strerror or e}") from None

    def write(self, record: LogRecord) -> None:
        try:
            self.file.write(json.dumps(asdict(record)) + "\n")
            self.file.flush()
        except OSError as e:
            raise RnnmnistError(f"cannot write {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        self.file.close()


def fit(
    cfg: Config,
    model: nn.Module,
    train: Split,
    device: torch.device,
    on_log: Any = None,
) -> int:
    """Train ``model`` in place on ``train`` (already on ``device``); return the steps run."""
    total = cfg.training_steps(len(train))
    optimizer = make_optimizer(cfg, model, device)
    stream = BatchStream(len(train), cfg.batch_size, cfg.seed, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scheduled = cfg.schedule != "constant"
    model.train()
    start = last_time = time.perf_counter()
    last_step = 0
    for step in range(1, total + 1):
        if scheduled:
            lr, beta1 = lr_and_beta1(cfg, step - 1, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
                if beta1 is not None:
                    group["betas"] = (beta1, group["betas"][1])
        idx = stream.next()  # (B,)
        images = scale(train.images[idx])  # (B, 28, 28) float in [0, 1]
        labels = train.labels[idx]  # (B,)
        with autocast(device, cfg.precision):
            logits = model(images).float()  # (B, 10)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        # Reading numbers back synchronises with the device, so only log steps do it.
        if on_log is not None and (step % cfg.log_every == 0 or step == total):
            now = time.perf_counter()
            on_log(
                LogRecord(
                    step=step,
                    total_steps=total,
                    examples=step * cfg.batch_size,
                    loss=loss.item(),
                    accuracy=(logits.argmax(dim=1) == labels).float().mean().item(),
                    lr=optimizer.param_groups[0]["lr"],
                    examples_per_s=(step - last_step) * cfg.batch_size / max(now - last_time, 1e-9),
                    elapsed=now - start,
                )
            )
            last_time, last_step = now, step
    return total


def run(
    cfg: Config,
    data: Mnist,
    out_dir: Path,
    device: torch.device,
    callbacks: TrainCallbacks | None = None,
    started_at: float | None = None,
) -> TrainSummary:
    """Train, evaluate on the test (and validation) split, write the run folder; return the figures.

    ``out_dir`` must have been prepared with :func:`prepare_out_dir`.
    """
    callbacks = callbacks or TrainCallbacks()
    started_at = time.perf_counter() if started_at is None else started_at
    # "auto" is resolved here and stored, so eval and a rerun use what training used.
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, device))
    if device.type == "cpu":
        tune_allocator()
    write_atomic(out_dir / "config.toml", to_toml(cfg).encode("utf-8"))
    torch.manual_seed(cfg.seed)
    model = SequenceClassifier(cfg).to(device)
    train, val, test = data.train.to(device), data.val.to(device), data.test.to(device)
    total = cfg.training_steps(len(train))
    callbacks.on_start(cfg, total, device, len(train))

    metrics_log = _MetricsLog(out_dir / "metrics.jsonl")

    def on_log(record: LogRecord) -> None:
        metrics_log.write(record)
        callbacks.on_log(record)

    t0 = time.perf_counter()
    try:
        steps = fit(cfg, model, train, device, on_log)
    finally:
        metrics_log.close()
    train_seconds = time.perf_counter() - t0

    callbacks.on_phase("evaluating")
    test_result = evaluate(model, test, EVAL_BATCH_SIZE, cfg.precision)
    val_result = evaluate(model, val, EVAL_BATCH_SIZE, cfg.precision) if len(val) else None
    callbacks.on_phase("saving")
    path = out_dir / "checkpoint.pt"
    summary = TrainSummary(
        config=cfg,
        out_dir=out_dir,
        checkpoint=path,
        steps=steps,
        examples=steps * cfg.batch_size,
        train_seconds=train_seconds,
        wall_seconds=0.0,
        test=test_result,
        test_accuracy_first256=test_result.first_accuracy(test.labels, NOTEBOOK_TEST_IMAGES),
        val=val_result,
    )
    summary.wall_seconds = time.perf_counter() - started_at
    checkpoint.save(path, cfg, model, summary.metrics())
    return summary
