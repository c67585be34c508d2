"""Predictions for people's images and for test-set images: inputs, batched inference, records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnmnist.config import EVAL_BATCH_SIZE
from rnnmnist.data import load_split, scale
from rnnmnist.device import autocast
from rnnmnist.errors import BadValueError
from rnnmnist.images import InputImages


@dataclass
class Prediction:
    """One input's outcome: what the network saw and what it said, or why it could not."""

    input: str  # as given: a path, "-", or test[I]
    digit: np.ndarray | None = None  # (28, 28) float32 in [0, 1]: the network's input
    probabilities: torch.Tensor | None = None  # (10,)
    label: int | None = None  # the true digit, for test-set images
    index: int | None = None  # the test-set index, for test-set images
    error: str | None = None
    uncertain: bool | None = None  # confidence below --min-confidence; None when no threshold was given

    @property
    def prediction(self) -> int:
        return int(self.probabilities.argmax())

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
            "confidence": self.confidence,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
            "top3": self.top(),
        }
        if self.index is not None:
            record["index"] = self.index
        if self.label is not None:
            record["label"] = self.label
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


def predict_images(model: nn.Module, precision: str, images: InputImages) -> list[Prediction]:
    """Collect the preprocessed image inputs and predict them in batches."""
    results = []
    for name, digit in images.results():
        if isinstance(digit, str):
            results.append(Prediction(name, error=digit))
        else:
            results.append(Prediction(name, digit))
    ok = [r for r in results if r.digit is not None]
    if ok:
        probs = probabilities(model, torch.from_numpy(np.stack([r.digit for r in ok])), precision)  # (k, 10)
        for r, p in zip(ok, probs):
            r.probabilities = p
    return results


def predict_test_images(
    model: nn.Module, precision: str, data_dir: str | Path, indices: Sequence[int], download: bool
) -> list[Prediction]:
    """Predictions for test-set images by index, each with its true label."""
    test = load_split(data_dir, "test", 0, download)
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise BadValueError(f"--index {bad[0]} is out of range: the test set holds images 0 to {len(test) - 1}")
    images = scale(test.images[torch.tensor(list(indices), dtype=torch.long)])  # (k, 28, 28)
    probs = probabilities(model, images, precision)  # (k, 10)
    return [
        Prediction(f"test[{i}]", images[j].numpy(), probs[j], label=int(test.labels[i]), index=i)
        for j, i in enumerate(indices)
    ]
