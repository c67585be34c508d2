"""What the machine gives a run on the CPU: the cores it may use, the threads it uses, and others' load.

A loaded machine makes a healthy run look like a slow tool (a 9 s run took 150 s on a
2-core machine busy with other work), so the training header says when the CPU is
shared. :func:`cpu_share` is the rule, a pure function of the numbers;
:func:`current_cpu_share` reads them from this process and the kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuShare:
    load: float  # the 1-minute load average: runnable processes, on average, this run's own included
    cores: int  # the cores this process may run on (its affinity mask)
    threads: int  # the threads torch computes with

    @property
    def in_use(self) -> int:
        """The cores this run keeps busy: one per thread, at most all it may use."""
        return max(1, min(self.threads, self.cores))

    @property
    def shared(self) -> bool:
        """Other work competes for the cores this run uses: on average at least as many runnable
        processes as the cores in use, before this run's own steps add theirs."""
        return self.load >= self.in_use


def cpu_share(load: float, cores: int, threads: int) -> CpuShare:
    """The share of the CPU a run of ``threads`` threads gets on ``cores`` cores under ``load``."""
    return CpuShare(float(load), max(1, int(cores)), max(1, int(threads)))


def current_cpu_share() -> CpuShare | None:
    """This process's :class:`CpuShare` now (torch's threads); None where there is no load average."""
    import torch

    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every system (Windows has no load average)
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (OSError, AttributeError):  # macOS has no affinity masks
        cores = os.cpu_count() or 1
    return cpu_share(load, cores, torch.get_num_threads())
