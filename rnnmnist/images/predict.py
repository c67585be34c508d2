"""Predictions for people's images and for test-set images: batched inference and its records.

People's images arrive already decoded, as (name, 28x28 digit or why it could not be read): the
command line gathers them with :class:`rnnmnist.images.inputs.InputImages` (worker processes, stdin,
folders), the server from request bodies; inference needs neither's machinery.

Beside every answer of a digit model stands the decision whether the image is one digit at all
(:mod:`rnnmnist.training.digitcheck`): pass the checkpoint's ``digit_check`` to
:func:`predict_digits` and each :class:`Prediction` says ``is_digit``, and when it is not, why.
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
from rnnmnist.errors import NOT_FINITE_OUTPUTS, BadValueError, CheckpointError
from rnnmnist.images.decode import Failed
from rnnmnist.images.preprocess import NO_INK as BLANK
from rnnmnist.training.data import load_split, scale
from rnnmnist.training.datasets import DIGITS
from rnnmnist.training.device import autocast
from rnnmnist.training.digitcheck import DigitCheck, decide


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
    is_digit: bool | None = None  # one digit? None: no decision (a model of another data set, or no check given)
    reason: str | None = None  # why it is not one digit (a digitcheck reason), when is_digit is False
    digit_score: float | None = None  # the score the decision compared with the check's threshold
    digit_check: DigitCheck | None = None  # the check that decided (its score's name and threshold)

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
        refused = self.is_digit is False  # the network's answer stays in confidence, probabilities and top3
        record: dict[str, Any] = {
            "input": self.input,
            "prediction": None if refused else self.prediction,
            "class_name": None if refused else self.class_name,
            "confidence": self.confidence,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
            "top3": self.top(),
        }
        if self.is_digit is not None:
            record.update(self._decision())
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

    def _decision(self) -> dict[str, Any]:
        """The JSON fields of the "one digit or not" decision."""
        check = self.digit_check
        return {
            "is_digit": self.is_digit,
            "reason": self.reason,
            "digit_score": self.digit_score,  # unrounded: compared with digit_threshold it gives is_digit exactly
            "digit_score_kind": None if check is None else check.score,
            "digit_threshold": None if check is None else check.threshold,
        }


def decide_digits(results: Sequence[Prediction], logits: torch.Tensor, check: DigitCheck | None) -> None:
    """Fill each prediction's ``is_digit``, ``reason`` and ``digit_score`` from its image and its ``logits``
    (N, 10), in the same order; with no ``check`` (a model of another data set) nothing is decided."""
    if check is None or not results:
        return
    images = torch.from_numpy(np.stack([r.digit for r in results]))  # (N, 28, 28)
    for r, (reason, score) in zip(results, decide(images, logits, check)):
        r.is_digit, r.reason, r.digit_score, r.digit_check = reason is None, reason, score, check


def mark_uncertain(results: Sequence[Prediction], min_confidence: float) -> None:
    """Mark each prediction whose confidence is below ``min_confidence`` as uncertain (the others as not)."""
    for r in results:
        if r.error is None:
            r.uncertain = r.confidence < min_confidence


def probabilities(
    model: nn.Module, images: torch.Tensor, precision: str, batch_size: int = EVAL_BATCH_SIZE
) -> torch.Tensor:
    """Softmax probabilities (N, 10) on the CPU for float images (N, 28, 28) in [0, 1]."""
    return probabilities_and_logits(model, images, precision, batch_size)[0]


@torch.inference_mode()
def probabilities_and_logits(
    model: nn.Module, images: torch.Tensor, precision: str, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and the logits they came from, both (N, 10) float32 on the CPU, for float
    images (N, 28, 28) in [0, 1] (the digit score needs the logits: the energy is their logsumexp)."""
    device = next(model.parameters()).device
    probs, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        with autocast(device, precision):
            out = model(images[i : i + batch_size].to(device)).float()  # (b, 10)
        if not bool(torch.isfinite(out).all()):
            raise CheckpointError(NOT_FINITE_OUTPUTS)
        probs.append(torch.softmax(out, dim=1).cpu())
        logits.append(out.cpu())
    if not probs:
        return torch.zeros(0, 10), torch.zeros(0, 10)
    return torch.cat(probs), torch.cat(logits)


def _add_traces(model: nn.Module, precision: str, predictions: list[Prediction], images: torch.Tensor) -> torch.Tensor:
    """Each prediction's reading trace; its probabilities become the trace's last step (the same numbers).

    Returns the logits (N, 10) the decision scores: the plain forward pass's, as without ``--trace``
    (the per-step head computes the last step a little differently in bf16, by up to 0.03 in energy,
    which would let the flag move an image across the threshold).
    """
    from rnnmnist.images.trace import decided_at, reading

    for r, steps in zip(predictions, reading(model, images, precision)):  # (steps, 10) each
        r.trace, r.probabilities, r.decided_at = steps, steps[-1], decided_at(steps)
    return probabilities_and_logits(model, images, precision)[1]


def _outcome(name: str, outcome: np.ndarray | Failed, check: DigitCheck | None) -> Prediction:
    """A prediction to make, or an input that failed. A blank image is not a failure when there is a
    decision to make: it is read as the empty 28x28 field, and the decision says "no ink"."""
    if isinstance(outcome, Failed):
        if check is not None and outcome.reason == BLANK:
            return Prediction(name, np.zeros((28, 28), dtype=np.float32))
        return Prediction(name, error=outcome.reason)
    return Prediction(name, outcome)


def predict_digits(
    model: nn.Module,
    precision: str,
    named: Iterable[tuple[str, np.ndarray | Failed]],
    trace: bool = False,
    check: DigitCheck | None = None,
) -> list[Prediction]:
    """Predictions for (name, 28x28 digit or why it could not be read), with reading traces if asked, and
    with ``check`` (a checkpoint's ``digit_check``) whether each image is one digit."""
    results = [_outcome(name, outcome, check) for name, outcome in named]
    ok = [r for r in results if r.digit is not None]
    if ok:
        stacked = torch.from_numpy(np.stack([r.digit for r in ok]))  # (k, 28, 28)
        if trace:
            logits = _add_traces(model, precision, ok, stacked)
        else:
            probs, logits = probabilities_and_logits(model, stacked, precision)  # (k, 10) each
            for r, p in zip(ok, probs):
                r.probabilities = p
        decide_digits(ok, logits, check)
    return results


def predict_test_images(
    model: nn.Module,
    precision: str,
    data_dir: str | Path,
    indices: Sequence[int],
    download: bool,
    trace: bool = False,
    dataset: str = "mnist",
    check: DigitCheck | None = None,
) -> list[Prediction]:
    """Predictions for test-set images of ``dataset`` by index, each with its true label (and with ``check``,
    whether each is one digit)."""
    test = load_split(data_dir, "test", 0, download, dataset)
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise BadValueError(f"--index {bad[0]} is out of range: the test set holds images 0 to {len(test) - 1}")
    images = scale(test.images[torch.tensor(list(indices), dtype=torch.long)])  # (k, 28, 28)
    probs, logits = (None, None) if trace else probabilities_and_logits(model, images, precision)  # (k, 10)
    results = [
        Prediction(
            f"test[{i}]", images[j].numpy(), None if probs is None else probs[j], label=int(test.labels[i]), index=i
        )
        for j, i in enumerate(indices)
    ]
    if trace:
        logits = _add_traces(model, precision, results, images)
    decide_digits(results, logits, check)
    return results


def name_classes(results: Sequence[Prediction], classes: tuple[str, ...]) -> None:
    """Give each prediction the model's class names (a data set other than the digits has its own)."""
    for r in results:
        r.classes = classes
