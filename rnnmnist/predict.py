"""Class probabilities for images, and the per-input records the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnmnist.config import EVAL_BATCH_SIZE
from rnnmnist.data import load_split, scale
from rnnmnist.device import autocast
from rnnmnist.errors import BadValueError


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


def describe(probs: torch.Tensor) -> dict[str, Any]:
    """One input's record from its probabilities (10,)."""
    top = torch.topk(probs, 3)
    return {
        "prediction": int(top.indices[0]),
        "confidence": float(top.values[0]),
        "probabilities": [round(float(p), 6) for p in probs],
        "top3": [(int(d), float(p)) for d, p in zip(top.indices, top.values)],
    }


def predict_test_images(
    model: nn.Module, precision: str, data_dir: str | Path, indices: Sequence[int], download: bool
) -> list[dict[str, Any]]:
    """Records for test-set images by index, each with its true label."""
    test = load_split(data_dir, "test", 0, download)
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise BadValueError(f"--index {bad[0]} is out of range: the test set holds images 0 to {len(test) - 1}")
    picked = torch.tensor(list(indices), dtype=torch.long)
    probs = probabilities(model, scale(test.images[picked]), precision)  # (k, 10)
    return [
        {"input": f"test[{i}]", "index": i, **describe(p), "label": int(test.labels[i])} for i, p in zip(indices, probs)
    ]
