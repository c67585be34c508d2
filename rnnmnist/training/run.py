"""One training run: its parts (:class:`Run`) and the state that makes it resumable (:class:`TrainState`).

:mod:`rnnmnist.training.lifecycle` builds a :class:`Run` once, whole, and :mod:`rnnmnist.training.loop`
trains it. A resumable checkpoint holds the whole :class:`TrainState` (optimizer, step, data order,
RNG states, best so far), so a resumed run ends bit for bit where an uninterrupted one would on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rnnmnist.config import EVAL_BATCH_SIZE, Config
from rnnmnist.errors import CheckpointError, one_line, shown
from rnnmnist.training import checkpoint
from rnnmnist.training.data import BatchStream, Mnist, Split
from rnnmnist.training.distributed import SINGLE, Rank, all_gather
from rnnmnist.training.evaluate import EvalResult, evaluate
from rnnmnist.training.events import TrainCallbacks
from rnnmnist.training.nondigits import OutlierPool
from rnnmnist.training.optimizer import make_optimizer
from rnnmnist.training.rundir import RunDir


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _check_rng(rng: Any, world_size: int) -> None:
    if not isinstance(rng, list) or not all(isinstance(r, dict) for r in rng):
        raise ValueError("rng: not a list of RNG states")
    if len(rng) != world_size:
        raise CheckpointError(
            f"this checkpoint was written by a run of {len(rng)} process(es); resume it with as many "
            f"(--nproc {len(rng)})"
        )
    for r in rng:
        cpu = r.get("cpu")
        if not isinstance(cpu, torch.Tensor) or cpu.dtype != torch.uint8:
            raise ValueError("rng: the CPU generator state is not a byte tensor")


# What Adam and AdamW keep for each parameter (amsgrad, which adds a third moment, is never on).
MOMENTS = ("step", "exp_avg", "exp_avg_sq")
# Settings a parameter group may leave to the device (torch's kernel choice): None or a flag.
KERNEL_CHOICES = ("foreach", "fused")
# Settings torch reads without a default: a group lacking one fails at the next step. Its flags
# (amsgrad, maximize, ...) may be missing: torch fills them in, as for a file of an older torch.
REQUIRED_SETTINGS = ("lr", "betas", "eps", "weight_decay")
# Settings that come from the run's config and stay put: a saved one that differs is not this run's.
FIXED_SETTINGS = ("eps", "weight_decay")


def _check_optimizer(state: Any, optimizer: torch.optim.Optimizer) -> None:
    """The saved optimizer must be this run's kind, whole and finite: torch accepts a wrong shape, a
    missing moment or a setting of the wrong type when loading, and fails only at the next step."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        raise ValueError("optimizer: not an optimizer state")
    _check_groups(state.get("param_groups"), optimizer.param_groups)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, moments in state["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(moments, dict):
            raise ValueError(f"optimizer: no parameter {shown(index)}")
        if sorted(moments) != sorted(MOMENTS):
            raise ValueError(f"optimizer: parameter {index} keeps {shown(sorted(map(str, moments)))}, not {MOMENTS}")
        for name, value in moments.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"optimizer: {name} of parameter {index} is not a tensor")
            expected = torch.Size([]) if name == "step" else params[index].shape
            if value.shape != expected:
                raise ValueError(
                    f"optimizer: {name} of parameter {index} is {tuple(value.shape)}, not {tuple(expected)}"
                )
            if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise ValueError(f"optimizer: {name} of parameter {index} is not finite floating-point")
            if name != "exp_avg" and bool((value < 0).any()):
                raise ValueError(f"optimizer: {name} of parameter {index} is negative")


def _check_groups(saved: Any, groups: list[dict[str, Any]]) -> None:
    """Saved parameter groups: this run's parameters, each setting of the type and range torch uses.
    Flags this torch has must match this run's (they come from its config); lr and beta1 are the
    schedule's. A setting this torch does not know (a newer torch's) is kept if it is a plain value."""
    if not isinstance(saved, list) or len(saved) != len(groups):
        raise ValueError("optimizer: not this run's parameter groups")
    first = 0
    for group, ours in zip(saved, groups):
        if not isinstance(group, dict):
            raise ValueError("optimizer: a parameter group is not a table")
        missing = [key for key in ("params", *REQUIRED_SETTINGS) if key not in group]
        if missing:
            raise ValueError(f"optimizer: a parameter group lacks {', '.join(missing)}")
        if group["params"] != list(range(first, first + len(ours["params"]))):
            raise ValueError("optimizer: not this run's parameters")
        first += len(ours["params"])
        for key, value in group.items():
            if key != "params":
                _check_setting(str(key), value, ours.get(key, _UNKNOWN))


_UNKNOWN = object()  # a setting this torch's Adam does not have


def _check_setting(key: str, value: Any, ours: Any) -> None:
    if key == "betas":
        ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(_unit(b) for b in value)
        ok = ok and _same(value[1], ours[1])  # beta2 is the config's; the schedule moves only beta1
    elif key in KERNEL_CHOICES:
        ok = value is None or isinstance(value, bool)
    elif ours is _UNKNOWN:
        ok = value is None or isinstance(value, (bool, str)) or _real(value)
    elif isinstance(ours, bool) or ours is None:
        ok = value is ours
    elif key in FIXED_SETTINGS:
        ok = _real(value) and _same(value, ours)
    else:
        ok = _real(value) and value >= 0
    if not ok:
        fixed = key in (*FIXED_SETTINGS, "betas") and ours is not _UNKNOWN
        theirs = f", not this run's {shown(ours)}" if fixed else ""
        raise ValueError(f"optimizer: setting {key} is {shown(value)}{theirs}")


def _same(value: Any, ours: Any) -> bool:
    return _real(value) and math.isclose(value, ours, rel_tol=1e-9, abs_tol=0.0)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unit(value: Any) -> bool:
    return _real(value) and 0 <= value < 1


def _number(state: dict[str, Any], key: str, low: float, high: float, kind: type = float) -> Any:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{key} is not {'an integer' if kind is int else 'a number'}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{key} {shown(value)} is outside {low}-{high}")
    return kind(value)


class TrainState:
    """Everything that decides the rest of a run besides the weights: step, optimizer, data order,
    RNG states, best model so far. ``state_dict`` and ``load_state_dict`` make a run resumable;
    loading validates every part before using any of it."""

    def __init__(self, cfg: Config, model: nn.Module, n_train: int, device: torch.device, rank: Rank = SINGLE):
        self.cfg, self.device, self.rank = cfg, device, rank
        self.optimizer = make_optimizer(cfg, model, device)
        self.stream = BatchStream(n_train, cfg.digits_per_step, cfg.seed, device)
        self.total = cfg.training_steps(n_train)
        self.step = 0  # steps completed
        self.train_seconds = 0.0  # across resumes
        self.resumed_seconds = 0.0  # of train_seconds, those spent by earlier processes (a resumed run)
        self.best_val_accuracy = -1.0  # of the model in best.pt (--eval-every)
        self.best_step = 0

    @property
    def examples(self) -> int:
        return self.step * self.cfg.batch_size

    def state_dict(self) -> dict[str, Any]:
        """The resumable state; in a distributed run every rank must call this (RNG states are gathered)."""
        rng = _rng_state(self.device)
        return {
            "step": self.step,
            "examples": self.examples,
            "optimizer": self.optimizer.state_dict(),
            "data_order": self.stream.state_dict(),
            "rng": all_gather(rng) if self.rank.distributed else [rng],  # one per rank
            "train_seconds": self.train_seconds,
            "best_val_accuracy": self.best_val_accuracy,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state: Any) -> None:
        """Restore a saved state; anything damaged or not of this run is a one-line CheckpointError."""
        try:
            if not isinstance(state, dict):
                raise ValueError("not a table")
            _check_rng(state["rng"], self.rank.world_size)
            step = _number(state, "step", 0, self.total, int)
            seconds = _number(state, "train_seconds", 0, float("inf"))
            best_accuracy = _number(state, "best_val_accuracy", -1.0, 1.0)
            best_step = _number(state, "best_step", 0, step, int)
            _check_optimizer(state["optimizer"], self.optimizer)
            self.stream.load_state_dict(state["data_order"])
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"][self.rank.rank]
            torch.set_rng_state(rng["cpu"])
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state_all(rng["cuda"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else one_line(e)
            raise CheckpointError(f"the checkpoint's training state is damaged ({what})") from None
        self.step, self.train_seconds, self.best_val_accuracy, self.best_step = step, seconds, best_accuracy, best_step
        self.resumed_seconds = seconds


class Run:
    """One training run's parts, as :func:`rnnmnist.training.loop.fit` and ``finish`` use them.

    :func:`rnnmnist.training.lifecycle.train` builds it once, whole, when the run folder is
    taken. In a distributed run every rank holds all of this (the collectives need them
    all), but only rank 0 writes files and reports.
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        data: Mnist,
        state: TrainState,
        run_dir: RunDir,
        callbacks: TrainCallbacks | None = None,
        rank: Rank = SINGLE,
    ) -> None:
        self.cfg, self.model, self.data, self.state, self.run_dir, self.rank = cfg, model, data, state, run_dir, rank
        self.callbacks = callbacks if callbacks is not None and rank.main else TrainCallbacks()
        self.net = model
        world = (rank.rank, rank.world_size)
        self.outliers = OutlierPool(data.train.images, cfg.outliers, cfg.seed, world) if cfg.outliers else None
        if rank.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device = data.train.labels.device
            self.net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def evaluate(self, split: Split) -> EvalResult:
        return evaluate(self.model, split, EVAL_BATCH_SIZE, self.cfg.precision, self.rank)

    def save_resumable(self) -> None:
        state = self.state.state_dict()  # a collective: every rank takes part
        if self.rank.main:
            checkpoint.save(self.run_dir.checkpoint, self.cfg, self.model, {}, training=state)

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
