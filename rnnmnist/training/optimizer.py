"""Torch's own Adam/AdamW, stepped without importing ``torch._dynamo`` when nothing has imported it.

torch's optimizers wrap ``step``, ``zero_grad``, ``state_dict`` and friends so that
``torch.compile`` leaves them alone; the wrappers import ``torch._dynamo`` on first
use, which costs about a second of a 10-second run on 2 cores (measured with
``bench/run.py --sections phases``). While ``torch._dynamo`` is not imported nothing can be compiling,
so those wrappers have nothing to do: :func:`optimizer_step` then calls Adam's own update
directly, and :func:`rnnmnist.process.defer_dynamo_import` (a CLI opt-in, since it
touches torch's functions for the whole process) does the same for the others.
The update itself is torch's, unchanged: same kernels, same state_dict.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import optimizer as torch_optimizer

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


def _hooked(optimizer: torch.optim.Optimizer) -> bool:
    return bool(
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or torch_optimizer._global_optimizer_pre_hooks
        or torch_optimizer._global_optimizer_post_hooks
    )


@functools.cache
def _own_step(cls: type) -> Callable[[torch.optim.Optimizer], object]:
    """The class's own ``step``, under torch's wrappers (looked up once per class, not every step)."""
    return inspect.unwrap(cls.step)


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, without the wrappers that import torch._dynamo while it is not imported.

    The wrappers (step hooks, profiler label, grad mode, dynamo graph breaks) are kept
    whenever they could matter: dynamo imported, hooks registered, or a differentiable optimizer.
    """
    if "torch._dynamo" in sys.modules or _hooked(optimizer) or optimizer.defaults.get("differentiable"):
        optimizer.step()
        return
    update = _own_step(type(optimizer))
    with torch.no_grad():  # what the grad-mode wrapper sets for a non-differentiable optimizer
        update(optimizer)
