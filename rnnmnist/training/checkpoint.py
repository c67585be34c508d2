"""Checkpoints: plain types and tensors only, the resolved config inside, loaded with weights_only=True.

A checkpoint is everything ``eval`` and ``predict`` need: the model is rebuilt
from the stored config alone. Layout (format version 1)::

    format          "rnnmnist-checkpoint"
    format_version  1
    rnnmnist_version
    config          dict of Config fields
    model           state dict (CPU tensors)
    metrics         dict of plain numbers (final test/val metrics, steps, ...)
    digit_check     (final checkpoints of digit models) the calibrated "one digit or not" decision, plain
                    numbers: see rnnmnist.training.digitcheck
    training        (resumable checkpoints only) the TrainState: step, optimizer, data order, RNG

Only the model's part of the stored config must be valid to use the weights: a
training setting this version does not know (a newer rnnmnist's, or a damaged
one) is set aside with a note, so eval and predict work across versions;
resuming needs the whole config. Files over :data:`MAX_BYTES` are refused unread.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnmnist import __version__
from rnnmnist.config import Config, ConfigError, from_stored
from rnnmnist.errors import CheckpointError, one_line, shown
from rnnmnist.files import write_atomic
from rnnmnist.training.datasets import is_digits
from rnnmnist.training.digitcheck import FALLBACK, DigitCheck, stored_check
from rnnmnist.training.model import SequenceClassifier

FORMAT = "rnnmnist-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "config", "model", "metrics")
# Larger files are refused before reading: the largest model the config allows to train on a laptop,
# with its optimizer state, is far smaller, and a device or a pipe (/dev/zero) must not fill memory.
MAX_BYTES = 2 << 30
# What torch.load raises for empty, truncated, foreign or damaged files (besides UnpicklingError).
_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    UnicodeDecodeError,
    struct.error,
    zipfile.BadZipFile,
    ImportError,
)


@dataclass
class Checkpoint:
    config: Config
    model_state: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys beyond the required ones
    notes: list[str] = field(default_factory=list)  # stored training settings set aside on loading

    @property
    def training(self) -> dict[str, Any] | None:
        """The resumable training state, in checkpoints written during training; None in final ones."""
        return self.extra.get("training")

    @property
    def digit_check(self) -> DigitCheck | None:
        """How this model decides "one digit or not": its stored calibration, else the fallback; None for a
        model of another data set (fashion, letters), where "a single digit" has no meaning."""
        if not is_digits(self.config.dataset):
            return None
        return stored_check(self.extra) or FALLBACK

    def build_model(self, device: torch.device | str = "cpu") -> SequenceClassifier:
        """The model, weights loaded, in eval mode, on ``device``."""
        model = SequenceClassifier(self.config.model)
        try:
            model.load_state_dict(self.model_state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"the weights do not fit the stored config: {one_line(e, 300)}") from None
        return model.to(device).eval()


def to_bytes(cfg: Config, model: torch.nn.Module, metrics: dict[str, Any], **extra: Any) -> bytes:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rnnmnist_version": __version__,
        "config": cfg.to_dict(),
        "model": state,
        "metrics": metrics,
        **extra,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save(path: Path, cfg: Config, model: torch.nn.Module, metrics: dict[str, Any], **extra: Any) -> None:
    """Write a checkpoint atomically (serialised in memory first, so a torch error cannot leave a partial file)."""
    write_atomic(path, to_bytes(cfg, model, metrics, **extra), owner="run")  # a run's checkpoint.pt and best.pt


def _forbidden_global(message: str) -> str | None:
    """The Python object a weights_only refusal names, e.g. ``posix.system``."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return found.group(1) if found else None


def _read(path: Path) -> bytes:
    """The file's bytes, at most :data:`MAX_BYTES` (refused beyond, without reading it all)."""
    try:
        with path.open("rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_BYTES:
                raise CheckpointError(f"{path} is {info.st_size / 2**30:.1f} GiB, over the {MAX_BYTES >> 30} GiB limit")
            data = f.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise CheckpointError(f"{path} is over the {MAX_BYTES >> 30} GiB limit of a checkpoint")
    return data


def load(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; any problem is a one-line :class:`CheckpointError`."""
    path = Path(path)
    data = _read(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols; we report below
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        forbidden = _forbidden_global(str(e))
        if forbidden:
            raise CheckpointError(
                f"refusing to load {path}: it asks to run or build {forbidden}, which a checkpoint never needs "
                f"(it may be malicious); nothing was executed"
            ) from None
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint (not a PyTorch weights file)") from None
    except _LOAD_ERRORS as e:
        raise CheckpointError(
            f"{path} is not an rnnmnist checkpoint (damaged, truncated or foreign: {one_line(e, 120)})"
        ) from None
    return _check(path, raw)


def _check(path: Path, raw: Any) -> Checkpoint:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint (no rnnmnist format marker)")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: unknown checkpoint format version {shown(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, newer than this rnnmnist {__version__} reads "
            f"(up to {FORMAT_VERSION}); upgrade rnnmnist"
        )
    odd = _odd_tensor(raw)
    if odd is not None:
        raise CheckpointError(f"{path}: damaged checkpoint, {odd}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    if not isinstance(raw["config"], dict):
        raise CheckpointError(f"{path}: damaged checkpoint, config is not a table")
    try:
        cfg, notes = from_stored(raw["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: the stored model settings are unusable: {e}") from None
    state = raw["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: damaged checkpoint, model weights are not a state dict")
    for name, tensor in state.items():
        if name == "permutation":
            if tensor.dtype != torch.int64 or not torch.equal(torch.sort(tensor.flatten()).values, torch.arange(784)):
                raise CheckpointError(f"{path}: damaged checkpoint, the stored pixel permutation is not one of 784")
            continue
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise CheckpointError(f"{path}: damaged checkpoint, weight {name} is {tensor.dtype}, not floating-point")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: damaged checkpoint, weight {name} holds NaN or infinite values")
    metrics = raw["metrics"] if isinstance(raw["metrics"], dict) else {}
    extra = {k: v for k, v in raw.items() if k not in REQUIRED_KEYS}
    try:
        stored_check(extra)
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged checkpoint, digit_check: {e}") from None
    return Checkpoint(config=cfg, model_state=state, metrics=metrics, extra=extra, notes=notes)


MAX_ENTRIES = 100_000  # far more values than any checkpoint rnnmnist writes holds (a few hundred)


def _odd_tensor(raw: Any) -> str | None:
    """Where in a loaded checkpoint a tensor is not dense, in memory and of values (meta, sparse, nested
    and quantized tensors load, and most operations then fail with torch's own errors; a stride-0
    tensor shares one number among many places), else None.

    Each container is visited once, however deep (a depth limit would let a path through a shared
    container hide what lies below it): unpickling shares repeated sub-lists, and a walk that followed
    every path through them could take years on a file of a few kilobytes."""
    seen: set[int] = set()
    todo: list[tuple[Any, _Where | None]] = [(raw, None)]
    while todo:
        value, where = todo.pop()
        if isinstance(value, torch.Tensor):
            if not _plain(value):
                return f"{_named(where)} is not a plain tensor of numbers"
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        items = (
            value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
        )
        todo.extend((item, (where, key)) for key, item in items)
        if len(seen) + len(todo) > MAX_ENTRIES:
            return f"it holds more than {MAX_ENTRIES:,} values"
    return None


_Where = tuple[Any, Any]  # (the parent's _Where or None, this key): a path is spelt out only when it is named


def _named(where: _Where | None) -> str:
    keys = []
    while where is not None:
        where, key = where
        keys.append(str(key))
    name = ".".join(reversed(keys)) or "a tensor"
    return name if len(name) <= 200 else f"{name[:100]}...{name[-100:]}"


def _plain(tensor: torch.Tensor) -> bool:
    if tensor.is_nested or tensor.is_quantized or tensor.layout != torch.strided or tensor.device.type != "cpu":
        return False
    # Dense and not overlapping: its strides, smallest first, step over exactly the sizes before them
    # (a transposed tensor passes; an expanded one, stride 0, does not).
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(tensor.stride(), tensor.shape) if sz > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[SequenceClassifier, Checkpoint]:
    ckpt = load(path)
    try:
        return ckpt.build_model(device), ckpt
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
