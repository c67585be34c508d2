"""Where a training run starts, resumes and ends: run folder, data, device, processes and signals.

:func:`train` is everything between a parsed command line and a finished run
folder, in order: settle the config and device, join the other processes (DDP),
load the data, build the model (refusing one that cannot fit in memory), take the
run folder (lock, --force, --resume), then :func:`rnnmnist.training.loop.fit` under
SIGINT/SIGTERM handling, and :func:`rnnmnist.training.loop.finish`. A start that fails or
is interrupted before its first step leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rnnmnist import signals
from rnnmnist.config import Config
from rnnmnist.errors import BadValueError, CheckpointError, DataError, RnnmnistError
from rnnmnist.signals import GracefulStop, signal_name
from rnnmnist.training import checkpoint, distributed
from rnnmnist.training.data import Mnist, load_mnist
from rnnmnist.training.device import resolve_device, training_precision
from rnnmnist.training.events import CallbackList, StopEarly, TrainCallbacks, TrainingInterrupted, TrainSummary
from rnnmnist.training.loop import Run, TrainState, finish, fit
from rnnmnist.training.model import SequenceClassifier, training_bytes
from rnnmnist.training.phases import Phases
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


@dataclass(frozen=True)
class Interrupted:
    """A resumable run folder: where, and how far it got."""

    folder: Path
    step: int
    total: int | None  # None when its length cannot be read without loading the data


def interrupted_runs(parent: Path, cfg: Config) -> list[Interrupted]:
    """Resumable runs of ``cfg`` in the folders directly under ``parent`` (where runs go by default),
    latest first: a run stopped by Ctrl-C that the same command, typed again, would otherwise not mention.

    ``cfg`` may leave precision "auto"; a stored run has it resolved, so then any precision matches.
    Folders that are damaged, held by a running process or of another config are skipped.
    """
    from rnnmnist.config import ConfigError, from_stored, read_toml
    from rnnmnist.experiments.runs import read_run

    found = []
    try:
        folders = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
    except OSError:
        return []
    for folder in folders:
        if not (folder / "config.toml").is_file() or not (folder / "checkpoint.pt").is_file():
            continue
        try:
            stored, notes = from_stored(read_toml(folder / "config.toml"))  # as --resume would read it
        except ConfigError:
            continue
        if notes or (stored != cfg and not (cfg.precision == "auto" and replace(stored, precision="auto") == cfg)):
            continue
        info = read_run(folder)
        if info.status != "resumable" or info.steps is None:
            continue
        found.append(Interrupted(folder, info.steps, _total_steps(stored, folder)))
    return found


def _total_steps(cfg: Config, folder: Path) -> int | None:
    from rnnmnist.experiments.peek import peek

    if cfg.epochs == 0:
        return cfg.training_steps(0)  # a length in examples does not depend on the data
    with contextlib.suppress(CheckpointError, KeyError, TypeError, AttributeError, IndexError):
        shape = peek(folder / "checkpoint.pt")["training"]["data_order"]["permutation"].shape
        return cfg.training_steps(int(shape[0]))
    return None


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


def _build(cfg: Config, resume: checkpoint.Checkpoint | None, data: Mnist, device: torch.device, rank) -> Run:
    check_fits_in_memory(cfg, device)
    if resume is None:
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = SequenceClassifier(cfg.model).to(device)
        if rank.distributed:
            torch.manual_seed(cfg.seed + rank.rank)  # but each rank its own dropout and augmentation
    else:
        model = resume.build_model(device)
    data = Mnist(data.train.to(device), data.val.to(device), data.test.to(device))
    if cfg.batch_size % rank.world_size:
        raise BadValueError(
            f"batch_size={cfg.batch_size} (the global batch) does not divide among {rank.world_size} processes"
        )
    state = TrainState(cfg, model, len(data.train), device, rank)
    if resume is not None:
        state.load_state_dict(resume.training)
    return Run(cfg, model, data, state, RunDir(Path()), rank=rank)


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
        return _train(plan, cfg, resume, run_dir, device, rank, display, Phases(started))
    finally:
        distributed.leave()
        run_dir.lock.release()


def _train(
    plan: Plan,
    cfg: Config,
    resume: checkpoint.Checkpoint | None,
    run_dir: RunDir,
    device: torch.device,
    rank: distributed.Rank,
    display: TrainCallbacks | None,
    phases: Phases,
) -> TrainSummary:
    with phases.timed("data"):
        data = _load_data(plan, cfg)
    if resume is not None:
        _check_same_data(resume, len(data.train), plan)
    try:
        with _out_of_memory_is_one_line(cfg):
            run = _build(cfg, resume, data, device, rank)
    except CheckpointError as e:  # the resumed checkpoint's training state or weights
        raise CheckpointError(f"{run_dir.checkpoint}: {e}") from None
    _take_folder(run_dir, plan, cfg, data_dir_for(plan), rank)
    run.run_dir = run_dir
    board = None
    try:
        callbacks = [display] if display is not None and rank.main else []
        if plan.tensorboard and rank.main:
            from rnnmnist.training.tensorboard import TensorBoardLogger

            board = TensorBoardLogger(run_dir.path / "tensorboard")
            callbacks.append(board)
        run.callbacks = CallbackList(*callbacks)
        run.callbacks.on_start(cfg, run.state.step + 1, run.state.total, device, len(run.data.train))
        # Signals stop the loop gracefully (a resumable checkpoint); outside it they end the process.
        with GracefulStop() as stop, _out_of_memory_is_one_line(cfg), phases.timed("train"):
            fit(run, stop)
    except StopEarly:
        run.save_resumable()  # a callback's request (a sweep's pruner): stop as after an interrupt, resumable
        raise
    except BaseException:
        if run.state.step == 0 and rank.main:
            run_dir.forget_created()  # a start that trained nothing leaves nothing behind
        raise
    finally:
        if board is not None:
            board.close()
    try:
        return finish(run, phases)
    except (signals.Interrupted, KeyboardInterrupt) as e:
        _interrupted_in_final_evaluation(run, e)
        raise


def _interrupted_in_final_evaluation(run: Run, e: BaseException) -> None:
    """Keep the trained model resumable: --resume then only evaluates and saves."""
    if run.rank.distributed:  # the other ranks are not in a state to take part in saving
        return
    signum = e.signum if isinstance(e, signals.Interrupted) else 2
    name = signal_name(signum)
    run.save_resumable()
    raise TrainingInterrupted(
        f"interrupted ({name}) during the final evaluation, after all {run.state.total} steps; saved "
        f"{run.run_dir.checkpoint}; finish with: rnnmnist train --resume {run.run_dir.path}",
        signum,
    ) from None
