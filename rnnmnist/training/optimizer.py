"""Torch's own Adam/AdamW, made for a run's config and stepped without importing ``torch._dynamo`` when
nothing has imported it.

torch's optimizers wrap ``step``, ``zero_grad``, ``state_dict`` and friends so that
``torch.compile`` leaves them alone; the wrappers import ``torch._dynamo`` on first
use, which costs about a second of a 10-second run on 2 cores (measured with
``bench/run.py --sections phases``). While ``torch._dynamo`` is not imported nothing can be compiling,
so those wrappers have nothing to do: :func:`optimizer_step` then calls Adam's own update
directly, and :func:`rnnmnist.internals.defer_dynamo_import` (a CLI opt-in, since it
touches torch's functions for the whole process) does the same for the others. Both read torch's
private parts, so they live in :mod:`rnnmnist.internals`, used only on the torch they were written for.
The update itself is torch's, unchanged: same kernels, same state_dict.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnmnist import internals
from rnnmnist.config import Config

ADAM_BETA1 = 0.9  # torch's default; constant and cosine schedules keep it


def make_optimizer(cfg: Config, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # On the CPU torch defaults to a per-parameter loop; its fused kernel took 0.06 ms a step for the
    # default model where the foreach kernels took 0.16 and the loop 0.17 (~2% of a step, in the training
    # loop). Elsewhere torch's own choice (foreach on CUDA) stands.
    fused = True if device.type == "cpu" else None
    betas = (ADAM_BETA1, cfg.beta2)  # a onecycle schedule cycles beta1 from here (rnnmnist.training.schedule)
    return cls(model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused)


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, past torch's wrappers while they have nothing to do (see :mod:`rnnmnist.internals`)."""
    internals.optimizer_step(optimizer)
