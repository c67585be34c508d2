"""The reading trace: the class probabilities after every step, i.e. how an answer forms as the network reads.

A row-wise model reads 28 rows, so its trace is (28, 10): after row t, the head
applied to the state the network holds then. Pixel and permuted models read 784
pixels, one per step; their trace is (784, 10), and views summarise it every 28th
step (for ``pixels`` that is the end of each image row). Bidirectional models have
no trace: their backward direction has read the whole image at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rnnmnist.training.datasets import IMAGE_SIZE
from rnnmnist.training.device import autocast

# Steps x images per forward pass: the per-step outputs (N, steps, hidden) must stay small.
STEP_BUDGET = 64 * 1024


def batch_size_for(steps: int) -> int:
    return max(1, STEP_BUDGET // steps)


@torch.inference_mode()
def reading(model: nn.Module, images: torch.Tensor, precision: str) -> torch.Tensor:
    """Probabilities after every step, (N, steps, 10) float32 on the CPU, for images (N, 28, 28) in [0, 1]."""
    device = next(model.parameters()).device
    steps = model.to_sequence(images[:1]).shape[1] if len(images) else IMAGE_SIZE
    size = batch_size_for(steps)
    out = []
    for i in range(0, images.shape[0], size):
        with autocast(device, precision):
            logits = model.step_logits(images[i : i + size].to(device)).float()  # (b, steps, 10)
        out.append(torch.softmax(logits, dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, steps, 10)


def decided_at(trace: torch.Tensor) -> int:
    """The step (1-based: rows or pixels read) from which the final answer was the top class to the end."""
    top = trace.argmax(dim=-1)  # (steps,)
    other = (top != top[-1]).nonzero()
    return int(other[-1]) + 2 if len(other) else 1


def shown_steps(steps: int) -> list[int]:
    """The 1-based steps a compact view shows: every row for 28 steps, every 28th step for 784."""
    stride = max(1, steps // IMAGE_SIZE)
    return list(range(stride, steps + 1, stride))


@dataclass
class AccuracyByStep:
    """Test accuracy if the network had to answer after each step: how early does it know?"""

    correct: torch.Tensor  # (steps,) images whose top class after step t is their label
    n: int

    @property
    def accuracy(self) -> torch.Tensor:
        return self.correct.double() / max(1, self.n)  # (steps,)


@torch.inference_mode()
def accuracy_by_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str) -> AccuracyByStep:
    """One pass over ``images`` (N, 28, 28) counting, per step, the images the top class gets right."""
    device = next(model.parameters()).device
    steps = model.to_sequence(images[:1]).shape[1]
    correct = torch.zeros(steps, dtype=torch.long)
    size = batch_size_for(steps)
    for i in range(0, images.shape[0], size):
        with autocast(device, precision):
            logits = model.step_logits(images[i : i + size].to(device))  # (b, steps, 10)
        hits = logits.argmax(dim=-1).cpu() == labels[i : i + size].unsqueeze(1)  # (b, steps)
        correct += hits.sum(dim=0)
    return AccuracyByStep(correct, int(images.shape[0]))
