"""Process-wide settings that only the command line opts into: the library never changes them itself.

The ``rnnmnist`` entry point owns its process, so it may tune the allocator, bound
network waits, quiet torchrun's logging and make termination signals
unwind it (:mod:`rnnmnist.signals`); code importing rnnmnist as a library gets none of this.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import sys
from collections.abc import Iterator

from rnnmnist import internals

# A download that gets no answer for this long fails instead of hanging (torchvision sets no timeout).
DOWNLOAD_TIMEOUT = 30.0


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


def bound_network_waits() -> None:
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)


def quiet_torchrun() -> None:
    """torchrun's launcher logs every rank's failure (and a Ctrl-C) at length; the CLI reports them in one
    line each. Its modules set their loggers' levels themselves when imported, so they are imported first."""
    import torch.distributed.run  # noqa: F401 - loads the launcher's modules, whose loggers are quieted below

    prefixes = ("torch.distributed.elastic", "torch.distributed.run")
    for name in [*prefixes, *logging.root.manager.loggerDict]:
        if name.startswith(prefixes):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def share_cores(nproc: int) -> None:
    """Local ranks inherit this: each takes its share of the cores (torchrun's default is one thread each)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Treat denormal floats as zero on the CPU (FTZ/DAZ) while training: a 784-step LSTM trained ~14x slower
    without it.

    Back-propagated through hundreds of time steps, gradients shrink below float32's
    normal range (~1e-38), where x86 CPUs take a slow path on every operation:
    measured here, the backward pass of a 784-step LSTM went from ~4 s to ~0.2 s a
    batch (bench/long_sequences.py). Values that small change nothing a model learns.
    It must begin before torch starts its worker threads (they copy the setting when
    they are created), so the CLI enters it before any computation. Turned off again on
    the way out, for whatever else runs in the process. A no-op where the CPU has no such mode.
    """
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def training() -> Iterator[None]:
    """Every opt-in of a command that trains (train, --seeds, sweep), entered before any computation:
    the tuned allocator, torch's optimizers without the dynamo import, denormals flushed while inside."""
    tune_allocator()
    internals.defer_dynamo_import()
    with denormals_flushed():
        yield
