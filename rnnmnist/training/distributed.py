"""Data-parallel training on torch.distributed: torchrun's environment, the process group, collectives.

rnnmnist does not launch or coordinate processes itself: ``torchrun`` (or ``train
--nproc N``, which runs torchrun's launcher on this machine) starts one process per
rank and sets RANK, WORLD_SIZE and LOCAL_RANK; each process joins the group here
(gloo on CPUs, NCCL on CUDA) and wraps the model in DistributedDataParallel.

``--batch-size`` is the global batch: each of N processes trains on its own
batch_size / N slice of every global batch, so ``--iters`` still counts examples
seen by the whole run and the learning rate needs no rescaling.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from rnnmnist.errors import ExitCode, RnnmnistError, one_line

# A peer that is gone makes collectives fail after this long at most, instead of hanging.
TIMEOUT = timedelta(seconds=60)


class DistributedError(RnnmnistError):
    """The process group could not be formed, or a peer went away."""


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Rank()


def from_environment() -> Rank:
    """This process's place, from the variables torchrun sets; a single process without them."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return Rank(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None


def join(rank: Rank, device: torch.device) -> torch.device:
    """Join the process group (gloo on the CPU, NCCL on CUDA); returns this rank's device."""
    if device.type == "cuda":
        if rank.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"rank {rank.rank} would use cuda:{rank.local_rank} but this machine has "
                f"{torch.cuda.device_count()} GPU(s): run at most that many processes per machine, or --device cpu"
            )
        device = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise DistributedError(f"distributed training runs on CPUs (gloo) or CUDA (NCCL), not {device.type}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=TIMEOUT)
    except (RuntimeError, ValueError, OSError) as e:  # DistNetworkError/DistStoreError are RuntimeErrors
        raise DistributedError(f"rank {rank.rank} could not join the process group: {one_line(e)}") from None
    return device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed collective (a peer died or timed out) into one clear error."""
    try:
        yield
    except RuntimeError as e:  # gloo and NCCL report lost peers as RuntimeError (DistBackendError)
        raise DistributedError(
            f"rank {dist.get_rank()}: lost contact with the other processes while {what} "
            f"(one died or stalled): {one_line(e)}"
        ) from None


def all_reduce(tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    with collective("combining results"):
        dist.all_reduce(tensor, op=op)
    return tensor


def all_gather(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    with collective("exchanging state"):
        dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    with collective("agreeing on the run"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``rnnmnist <argv>`` as ``nproc`` processes on this machine with torchrun's launcher.

    Returns the exit code: 0, or the code of the rank that failed first (each rank
    reports its own error; a rank killed by a signal is reported here), or 128 + the
    signal's number when one stopped the launcher (the ranks, signalled too, saved and said so). When one
    rank fails, the launcher stops the others. The processes share the cores: the
    caller sets OMP_NUM_THREADS in the environment they inherit (torchrun's own
    default would be one thread each).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--module", "rnnmnist", *argv]
    )
    try:
        run(args)
    except SignalException as e:  # Ctrl-C or SIGTERM reached the launcher too: the ranks said what they did
        return ExitCode.for_signal(int(e.sigval))
    except ChildFailedError as e:
        failures = list(e.failures.values())
        # A rank killed by a signal is the cause: the others then fail on their own ("lost contact"), and when
        # they exit promptly the launcher can see both in one poll, with timestamps that do not tell which came first.
        killed = [f for f in failures if f.exitcode < 0]
        first = min(killed or failures, key=lambda f: f.timestamp)
        if first.exitcode < 0:  # killed by a signal: it could not say so itself
            sys.stderr.write(f"Error: rank {first.local_rank} was killed ({first.signal_name()}); the run stopped\n")
            return ExitCode.FAILURE
        return first.exitcode
    return ExitCode.SUCCESS
