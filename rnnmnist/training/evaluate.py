"""Accuracy, loss and the confusion matrix of a model on a split."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rnnmnist.errors import NOT_FINITE_OUTPUTS, CheckpointError, DataError
from rnnmnist.training.data import Split, load_split, scale
from rnnmnist.training.datasets import NUM_CLASSES
from rnnmnist.training.device import Precision, autocast, resolve_device, usable_precision
from rnnmnist.training.distributed import SINGLE, Rank, all_gather, all_reduce


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """(10, 10) int64 counts: rows are true digits, columns predicted ones."""
    counts = torch.bincount(labels.cpu() * NUM_CLASSES + predictions.cpu(), minlength=NUM_CLASSES**2)
    return counts.view(NUM_CLASSES, NUM_CLASSES)


@dataclass
class EvalResult:
    n: int
    loss: float  # mean cross entropy (no label smoothing)
    confusion: torch.Tensor  # (10, 10) int64, rows = true digit, columns = predicted digit
    predictions: torch.Tensor  # (n,) int64, in split order

    @property
    def correct(self) -> int:
        return int(self.confusion.diagonal().sum())

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Accuracy for each true digit; None where the split holds no image of it."""
        totals = self.confusion.sum(dim=1)
        return [int(self.confusion[d, d]) / int(totals[d]) if int(totals[d]) else None for d in range(NUM_CLASSES)]

    def first_accuracy(self, labels: torch.Tensor, k: int) -> float:
        """Accuracy on the first ``k`` images, as the notebook's final print (it used 256)."""
        k = min(k, self.n)
        return (self.predictions[:k] == labels[:k].cpu()).float().mean().item() if k else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "n": self.n,
            "correct": self.correct,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion": self.confusion.tolist(),
        }


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: Split, batch_size: int, precision: str = "fp32", rank: Rank = SINGLE
) -> EvalResult:
    """Run ``model`` over ``split`` (already on the model's device) in batches.

    ``precision`` should be the one the model was trained with (its config's), so
    that eval reproduces the accuracy training reported. In a distributed run each
    rank evaluates a contiguous share and the results are combined, so every rank
    returns the result over the whole split.
    """
    n = len(split)
    first, last = n * rank.rank // rank.world_size, n * (rank.rank + 1) // rank.world_size
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.labels.device)
    preds = []
    for start in range(first, last, batch_size):
        stop = min(start + batch_size, last)
        images = scale(split.images[start:stop])  # (b, 28, 28)
        labels = split.labels[start:stop]  # (b,)
        with autocast(images.device, precision):
            logits = model(images).float()  # (b, 10)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        preds.append(logits.argmax(dim=1))
    model.train(was_training)
    predictions = torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.long)
    if rank.distributed:
        all_reduce(loss_sum)
        predictions = torch.cat(all_gather(predictions))  # in rank order: the split's order
    return EvalResult(
        n=n,
        loss=loss_sum.item() / n if n else 0.0,
        confusion=confusion_matrix(split.labels, predictions),
        predictions=predictions,
    )


@dataclass
class CheckpointEvaluation:
    result: EvalResult
    precision: Precision  # what this device computed in, with a note when it fell back to fp32
    notes: list[str]  # stored training settings the checkpoint's loading set aside
    dataset: str = "mnist"  # the data set the model was trained on (its class names, its test images)


def evaluate_checkpoint(
    path: Path,
    split: str,
    data_dir: Path,
    download: bool,
    device: str = "auto",
    limit: int | None = None,
    batch_size: int = 1000,
) -> CheckpointEvaluation:
    """Evaluate the model in ``path`` on ``split`` ("test" or "val") of the data in ``data_dir``.

    It computes in the precision it was trained in where this device runs it (the
    figures then match training's exactly), else in fp32.
    """
    from rnnmnist.training import checkpoint

    dev = resolve_device(device)
    model, ckpt = checkpoint.load_model(path, dev)
    if split == "val" and ckpt.config.val_size == 0:
        raise DataError(f"{path} was trained with val_size = 0: it has no validation split (use --split test)")
    data = load_split(data_dir, split, ckpt.config.val_size, download, ckpt.config.dataset)
    if limit is not None:
        data = data.head(limit)
    if len(data) == 0:
        raise DataError(f"the {split} split holds no images: there is nothing to evaluate")
    precision = usable_precision(ckpt.config.precision, dev)
    result = evaluate(model, data.to(dev), batch_size, precision.name)
    if not math.isfinite(result.loss):
        raise CheckpointError(f"{path}: {NOT_FINITE_OUTPUTS}")
    return CheckpointEvaluation(result, precision, ckpt.notes, ckpt.config.dataset)
