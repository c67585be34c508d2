"""Choosing the torch device from a name: auto, cpu, cuda or mps."""

from __future__ import annotations

import torch

from rnnmnist.errors import RnnmnistError


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RnnmnistError("--device cuda: no CUDA device is available here (try --device auto or cpu)")
    if name == "mps" and not _mps_available():
        raise RnnmnistError("--device mps: no Apple MPS device is available here (try --device auto or cpu)")
    return torch.device(name)
