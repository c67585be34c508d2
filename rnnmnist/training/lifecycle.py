"""A training run's lifecycle: start, resume, interrupt, save and finish, around the loop.

:func:`train` is everything between a parsed command line and a finished run folder, in
order: settle the config and device, join the other processes (DDP), load the data, build
the model (refusing one that cannot fit in memory), take the run folder (lock, --force,
--resume), build the :class:`~rnnmnist.training.run.Run` once, whole, then
:func:`rnnmnist.training.loop.fit` under SIGINT/SIGTERM handling and
:func:`rnnmnist.training.loop.finish`. A stop (a signal, or a callback's StopEarly) saves
the resumable checkpoint here, in one place. A start that fails or is interrupted before
its first step leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rnnmnist.config import Config
from rnnmnist.errors import BadValueError, CheckpointError, DataError, RnnmnistError
from rnnmnist.signals import GracefulStop, Interrupted, signal_name
from rnnmnist.training import checkpoint, distributed
from rnnmnist.training.data import Mnist, load_mnist
from rnnmnist.training.device import resolve_device, training_precision
from rnnmnist.training.events import CallbackList, StopEarly, TrainCallbacks, TrainingInterrupted, TrainSummary
from rnnmnist.training.loop import finish, fit
from rnnmnist.training.model import SequenceClassifier, training_bytes
from rnnmnist.training.phases import Phases
from rnnmnist.training.run import Run, TrainState
from rnnmnist.training.rundir import RunDir, check_out_path

DEFAULT_DATA_DIR = Path("data")


@dataclass(frozen=True)
class Plan:
    """What the command line asked for."""

    out: Path
    config: Config | None = None  # None when resuming: the run's stored config is used
    resume: bool = False
    force: bool = False
    data_dir: Path | None = None  # None: the folder the run remembers (when resuming), else ./data
    download: bool = True
    tensorboard: bool = False


def resumable(folder: Path) -> checkpoint.Checkpoint:
    """The checkpoint to continue the run in ``folder`` from, checked for resuming."""
    run_dir = RunDir(folder)
    run_dir.require_checkpoint()
    ckpt = checkpoint.load(run_dir.checkpoint)
    if ckpt.training is None:
        raise RnnmnistError(f"{run_dir.checkpoint} holds a finished run; there is nothing to resume")
    if ckpt.notes:
        raise CheckpointError(f"{run_dir.checkpoint}: cannot resume with a damaged config: {ckpt.notes[0]}")
    return ckpt


def data_dir_for(plan: Plan) -> Path:
    """--data-dir (or its environment variable), else the folder a resumed run used, else ./data."""
    if plan.data_dir is not None:
        return plan.data_dir
    if plan.resume:
        remembered = RunDir(plan.out).remembered_data_dir()
        if remembered is not None:
            return remembered
    return DEFAULT_DATA_DIR


def _load_data(plan: Plan, cfg: Config) -> Mnist:
    folder = data_dir_for(plan)
    try:
        return load_mnist(folder, cfg.val_size, plan.download, cfg.dataset)
    except RnnmnistError as e:
        if plan.data_dir is None and plan.resume and folder != DEFAULT_DATA_DIR and not folder.exists():
            raise RnnmnistError(f"the run's data folder {folder} is gone; give --data-dir ({e})") from None
        raise


def _check_same_data(resume: checkpoint.Checkpoint, n_train: int, plan: Plan) -> None:
    """A run resumes on the data it was trained on (its data order is a permutation of that split)."""
    order = resume.training.get("data_order") if isinstance(resume.training, dict) else None
    perm = order.get("permutation") if isinstance(order, dict) else None
    if not isinstance(perm, torch.Tensor) or perm.dim() != 1 or perm.numel() == n_train:
        return  # nothing to compare (a damaged state is reported in detail when it is loaded)
    remembered = RunDir(plan.out).remembered_data_dir()
    hint = f" (it remembers {remembered}: --data-dir {remembered})" if remembered is not None else ""
    raise DataError(
        f"the run in {plan.out} was trained on {perm.numel():,} training images but {data_dir_for(plan)} "
        f"holds {n_train:,}: resume it with the data it was trained on{hint}, unless its checkpoint is damaged"
    )


def check_fits_in_memory(cfg: Config, device: torch.device) -> None:
    """Refuse, before allocating, a model whose training needs more memory than the device has free."""
    need = training_bytes(cfg.model, cfg.batch_size)
    free = _free_bytes(device)
    if free is not None and need > free:
        raise BadValueError(
            f"this model needs about {need / 2**30:.1f} GiB to train (hidden_size={cfg.hidden_size}, "
            f"layers={cfg.layers}, batch_size={cfg.batch_size}) but {device.type} has {free / 2**30:.1f} GiB free; "
            f"choose a smaller --hidden-size, --layers or --batch-size"
        )


def check_batch_fits(cfg: Config, n_train: int) -> None:
    """Refuse a batch whose digits outnumber the training split, naming the flags the user can change."""
    if cfg.digits_per_step <= n_train:
        return
    digits = f" ({cfg.digits_per_step} digits beside {cfg.outliers} generated non-digits)" if cfg.outliers else ""
    raise BadValueError(
        f"batch_size={cfg.batch_size}{digits} is larger than the training split ({n_train:,} images); "
        "choose a smaller --batch-size or --val-size"
    )


def _free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


@contextlib.contextmanager
def _out_of_memory_is_one_line(cfg: Config) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError:
        raise RnnmnistError(_oom(cfg)) from None
    except RuntimeError as e:  # the CPU allocator raises a plain RuntimeError
        if "alloc" not in str(e).lower() or "memory" not in str(e).lower():
            raise
        raise RnnmnistError(_oom(cfg)) from None


def _oom(cfg: Config) -> str:
    return (
        f"out of memory training hidden_size={cfg.hidden_size}, layers={cfg.layers}, batch_size={cfg.batch_size}; "
        f"choose a smaller --hidden-size, --layers or --batch-size"
    )


def train(plan: Plan, display: TrainCallbacks | None, started: float) -> TrainSummary:
    """Run ``plan`` to the end; every rank of a distributed run calls this.

    ``started`` (a ``time.perf_counter()`` value) is where the run's wall time and
    start-up phase begin: the process's start for ``rnnmnist train``.
    """
    rank = distributed.from_environment()
    resume = resumable(plan.out) if plan.resume else None
    cfg = resume.config if resume is not None else plan.config
    if not plan.resume:
        check_out_path(plan.out)
    device = resolve_device(cfg.device)
    # "auto" is resolved here and stored, so eval and a rerun compute as training did.
    cfg = replace(cfg, precision=training_precision(cfg.precision, device))
    run_dir = RunDir(plan.out)
    if rank.distributed:
        device = distributed.join(rank, device)
        run_dir = RunDir(distributed.broadcast(str(run_dir.path)))  # rank 0's folder for every rank
    try:
        return _start_to_finish(plan, cfg, resume, run_dir, device, rank, display, Phases(started))
    finally:
        distributed.leave()
        run_dir.lock.release()


def _start_to_finish(
    plan: Plan,
    cfg: Config,
    resume: checkpoint.Checkpoint | None,
    run_dir: RunDir,
    device: torch.device,
    rank: distributed.Rank,
    display: TrainCallbacks | None,
    phases: Phases,
) -> TrainSummary:
    """The parts that can fail first (data, model, state), then the folder, then the :class:`Run`, whole."""
    with phases.timed("data"):
        data = _load_data(plan, cfg)
    if resume is not None:
        _check_same_data(resume, len(data.train), plan)
    try:
        with _out_of_memory_is_one_line(cfg):
            model, data, state = _build_parts(cfg, resume, data, device, rank)
    except CheckpointError as e:  # the resumed checkpoint's training state or weights
        raise CheckpointError(f"{run_dir.checkpoint}: {e}") from None
    _take_folder(run_dir, plan, cfg, data_dir_for(plan), rank)
    board = None
    try:
        board = _tensorboard(plan, run_dir, rank)
        followers = [c for c in (display, board) if c is not None]  # Run keeps them on rank 0 only
        run = Run(cfg, model, data, state, run_dir, CallbackList(*followers), rank)
        _fit(run, phases)
    except BaseException:
        if state.step == 0 and rank.main:
            run_dir.forget_created()  # a start that trained nothing leaves nothing behind
        raise
    finally:
        if board is not None:
            board.close()
    return _finish(run, phases)


def _build_parts(
    cfg: Config, resume: checkpoint.Checkpoint | None, data: Mnist, device: torch.device, rank: distributed.Rank
) -> tuple[torch.nn.Module, Mnist, TrainState]:
    """The model, the data on the device and the training state (a resumed run's, checked): what can fail
    (memory, a damaged checkpoint) before the run folder is touched."""
    check_fits_in_memory(cfg, device)
    check_batch_fits(cfg, len(data.train))
    if resume is None:
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = SequenceClassifier(cfg.model).to(device)
        if rank.distributed:
            torch.manual_seed(cfg.seed + rank.rank)  # but each rank its own dropout and augmentation
    else:
        model = resume.build_model(device)
    data = Mnist(data.train.to(device), data.val.to(device), data.test.to(device))
    if cfg.batch_size % rank.world_size or cfg.outliers % rank.world_size:
        raise BadValueError(
            f"batch_size={cfg.batch_size} (the global batch) and its {cfg.outliers} generated non-digits "
            f"must each divide among {rank.world_size} processes"
        )
    state = TrainState(cfg, model, len(data.train), device, rank)
    if resume is not None:
        state.load_state_dict(resume.training)
    return model, data, state


def _take_folder(run_dir: RunDir, plan: Plan, cfg: Config, data_dir: Path, rank: distributed.Rank) -> None:
    """Rank 0 locks and prepares the run folder; in a distributed run the others learn how that went."""
    problem = None
    if rank.main:
        try:
            if plan.resume:
                run_dir.prepare_resume()
            else:
                run_dir.prepare_new(plan.force)
                run_dir.write_config(cfg)
                run_dir.write_info(data_dir)
        except RnnmnistError as e:
            problem = e
    if rank.distributed:
        message = distributed.broadcast(None if problem is None else str(problem))
        if message and problem is None:
            raise RnnmnistError(message)
    if problem is not None:
        raise problem


def _tensorboard(plan: Plan, run_dir: RunDir, rank: distributed.Rank) -> TrainCallbacks | None:
    if not (plan.tensorboard and rank.main):
        return None
    from rnnmnist.training.tensorboard import TensorBoardLogger

    return TensorBoardLogger(run_dir.path / "tensorboard")


def _fit(run: Run, phases: Phases) -> None:
    """:func:`fit` under SIGINT/SIGTERM handling: the first signal stops it after the current step, saved to
    resume (outside this, the signals end the process)."""
    try:
        with GracefulStop() as stop, _out_of_memory_is_one_line(run.cfg), phases.timed("train"):
            signum = fit(run, stop)
            if signum:
                raise _save_stopped(run, signum)
    except StopEarly:
        run.save_resumable()  # a callback's request (a sweep's pruner): stop as after an interrupt, resumable
        raise


def _finish(run: Run, phases: Phases) -> TrainSummary:
    """:func:`finish`, the final evaluation and save; a signal there keeps the trained model resumable
    (--resume then only evaluates and saves)."""
    try:
        return finish(run, phases)
    except (Interrupted, KeyboardInterrupt) as e:
        if run.rank.distributed:  # the other ranks are not in a state to take part in saving
            raise
        raise _save_stopped(run, e.signum if isinstance(e, Interrupted) else signal.SIGINT) from None


def _save_stopped(run: Run, signum: int) -> TrainingInterrupted:
    """Save what can be resumed, and the exception that says how to go on: the one place a run stopped by
    a signal is saved (during training, or after its last step, during the final evaluation)."""
    name = signal_name(signum)
    state, run_dir = run.state, run.run_dir
    if state.step == state.total:
        run.save_resumable()
        return TrainingInterrupted(
            f"interrupted ({name}) during the final evaluation, after all {state.total} steps; saved "
            f"{run_dir.checkpoint}; finish with: rnnmnist train --resume {run_dir.path}",
            signum,
        )
    where = f"at step {state.step} of {state.total}"
    if state.step == 0:
        return TrainingInterrupted(f"interrupted ({name}) before the first step; nothing was kept", signum)
    if not run.weights_finite():
        return TrainingInterrupted(
            f"interrupted ({name}) {where} with non-finite weights; {run_dir.last_good()}", signum
        )
    run.save_resumable()
    nproc = f" --nproc {run.rank.world_size}" if run.rank.distributed else ""
    return TrainingInterrupted(
        f"interrupted ({name}) {where}; saved {run_dir.checkpoint}; "
        f"resume with: rnnmnist train --resume {run_dir.path}{nproc}",
        signum,
    )
