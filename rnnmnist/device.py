"""The torch device and numeric precision a run uses, and the process settings that make them fast."""

from __future__ import annotations

import contextlib
import ctypes
import sys

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


def _fast_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # oneDNN runs bf16 matrix products natively on AVX-512 (and AMX) CPUs; elsewhere it is slower than fp32.
        with contextlib.suppress(Exception):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where ``device`` runs it fast, else ``fp32``."""
    if name != "auto":
        return name
    return "bf16" if _fast_bf16(device) else "fp32"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for forward passes: bf16 matrix products, fp32 weights and reductions."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def tune_allocator() -> None:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS.

    Each training step allocates and frees the same large temporaries; by default
    glibc serves blocks over its mmap threshold with fresh mmaps, so every step
    page-faults them in again. On 2 cores that made batches of 256-512 train
    slower than 128; with this they train faster. A no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
