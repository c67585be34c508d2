"""Predictions for people's images and for test-set images: batched inference and its records.

People's images arrive already decoded, as (name, 28x28 digit or why it could not be read): the
command line gathers them with :class:`rnnmnist.images.inputs.InputImages` (worker processes, stdin,
folders), the server from request bodies; inference needs neither's machinery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnmnist.config import EVAL_BATCH_SIZE
from rnnmnist.errors import BadValueError
from rnnmnist.images.decode import Failed
from rnnmnist.training.data import load_split, scale
from rnnmnist.training.datasets import DIGITS
from rnnmnist.training.device import autocast


@dataclass
class Prediction:
    """One input's outcome: what the network saw and what it said, or why it could not."""

    input: str  # as given: a path, "-", or test[I]
    digit: np.ndarray | None = None  # (28, 28) float32 in [0, 1]: the network's input
    probabilities: torch.Tensor | None = None  # (10,)
    label: int | None = None  # the true digit, for test-set images
    index: int | None = None  # the test-set index, for test-set images
    error: str | None = None
    trace: torch.Tensor | None = None  # (steps, 10): probabilities after every step, with --trace
    decided_at: int | None = None  # the step from which the final answer stayed on top, with --trace
    classes: tuple[str, ...] = DIGITS  # the model's class names (its data set's), in label order
    uncertain: bool | None = None  # confidence below --min-confidence; None when no threshold was given

    @property
    def prediction(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def class_name(self) -> str:
        return self.classes[self.prediction]

    @property
    def confidence(self) -> float:
        return float(self.probabilities.max())

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        values, indices = torch.topk(self.probabilities, k)
        return [(int(d), float(p)) for d, p in zip(indices, values)]

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"input": self.input, "error": self.error}
        record: dict[str, Any] = {
            "input": self.input,
            "prediction": self.prediction,
            "class_name": self.class_name,
            "confidence": self.confidence,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
            "top3": self.top(),
        }
        if self.index is not None:
            record["index"] = self.index
        if self.label is not None:
            record["label"] = self.label
            record["label_name"] = self.classes[self.label]
        if self.trace is not None:
            record["trace"] = [[round(float(p), 4) for p in step] for step in self.trace]
            record["decided_at"] = self.decided_at
        if self.uncertain is not None:
            record["uncertain"] = self.uncertain
        return record


def mark_uncertain(results: Sequence[Prediction], min_confidence: float) -> None:
    """Mark each prediction whose confidence is below ``min_confidence`` as uncertain (the others as not)."""
    for r in results:
        if r.error is None:
            r.uncertain = r.confidence < min_confidence


@torch.inference_mode()
def probabilities(
    model: nn.Module, images: torch.Tensor, precision: str, batch_size: int = EVAL_BATCH_SIZE
) -> torch.Tensor:
    """Softmax probabilities (N, 10) on the CPU for float images (N, 28, 28) in [0, 1]."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch_size):
        with autocast(device, precision):
            logits = model(images[i : i + batch_size].to(device)).float()  # (b, 10)
        out.append(torch.softmax(logits, dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 10)


def _add_traces(model: nn.Module, precision: str, predictions: list[Prediction], images: torch.Tensor) -> None:
    """Each prediction's reading trace; its probabilities become the trace's last step (the same numbers)."""
    from rnnmnist.images.trace import decided_at, reading

    for r, steps in zip(predictions, reading(model, images, precision)):  # (steps, 10) each
        r.trace, r.probabilities, r.decided_at = steps, steps[-1], decided_at(steps)


def predict_digits(
    model: nn.Module, precision: str, named: Iterable[tuple[str, np.ndarray | Failed]], trace: bool = False
) -> list[Prediction]:
    """Predictions for (name, 28x28 digit or why it could not be read), with reading traces if asked."""
    results = [
        Prediction(name, error=outcome.reason) if isinstance(outcome, Failed) else Prediction(name, outcome)
        for name, outcome in named
    ]
    ok = [r for r in results if r.digit is not None]
    if ok:
        stacked = torch.from_numpy(np.stack([r.digit for r in ok]))  # (k, 28, 28)
        if trace:
            _add_traces(model, precision, ok, stacked)
        else:
            for r, p in zip(ok, probabilities(model, stacked, precision)):  # (10,) each
                r.probabilities = p
    return results


def predict_test_images(
    model: nn.Module,
    precision: str,
    data_dir: str | Path,
    indices: Sequence[int],
    download: bool,
    trace: bool = False,
    dataset: str = "mnist",
) -> list[Prediction]:
    """Predictions for test-set images of ``dataset`` by index, each with its true label."""
    test = load_split(data_dir, "test", 0, download, dataset)
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise BadValueError(f"--index {bad[0]} is out of range: the test set holds images 0 to {len(test) - 1}")
    images = scale(test.images[torch.tensor(list(indices), dtype=torch.long)])  # (k, 28, 28)
    probs = None if trace else probabilities(model, images, precision)  # (k, 10)
    results = [
        Prediction(
            f"test[{i}]", images[j].numpy(), None if probs is None else probs[j], label=int(test.labels[i]), index=i
        )
        for j, i in enumerate(indices)
    ]
    if trace:
        _add_traces(model, precision, results, images)
    return results


def name_classes(results: Sequence[Prediction], classes: tuple[str, ...]) -> None:
    """Give each prediction the model's class names (a data set other than the digits has its own)."""
    for r in results:
        r.classes = classes
