"""Checkpoints: plain types and tensors only, the resolved config inside, loaded with weights_only=True.

A checkpoint is everything ``eval`` and ``predict`` need: the model is rebuilt
from the stored config alone. Layout (format version 1)::

    format          "rnnmnist-checkpoint"
    format_version  1
    rnnmnist_version
    config          dict of Config fields
    model           state dict (CPU tensors)
    metrics         dict of plain numbers (final test/val metrics, steps, ...)
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnmnist import __version__
from rnnmnist.config import Config, ConfigError, from_dict
from rnnmnist.errors import CheckpointError
from rnnmnist.files import write_atomic
from rnnmnist.model import SequenceClassifier

FORMAT = "rnnmnist-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "config", "model", "metrics")


@dataclass
class Checkpoint:
    config: Config
    model_state: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys beyond the required ones

    @property
    def training(self) -> dict[str, Any] | None:
        """The resumable training state, in checkpoints written during training; None in final ones."""
        return self.extra.get("training")

    def build_model(self, device: torch.device | str = "cpu") -> SequenceClassifier:
        """The model, weights loaded, in eval mode, on ``device``."""
        model = SequenceClassifier(self.config)
        try:
            model.load_state_dict(self.model_state, strict=True)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:300]
            raise CheckpointError(f"the weights do not fit the stored config: {detail}") from None
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
    write_atomic(path, to_bytes(cfg, model, metrics, **extra))


def _forbidden_global(message: str) -> str | None:
    """The Python object a weights_only refusal names, e.g. ``posix.system``."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return found.group(1) if found else None


def load(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; any problem is a one-line :class:`CheckpointError`."""
    path = Path(path)
    try:
        data = path.read_bytes()  # small; reading first separates I/O errors from bad content
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
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
    except Exception as e:  # torch reports empty, truncated or foreign files in many exception types
        detail = " ".join(str(e).split())[:120] or type(e).__name__
        raise CheckpointError(
            f"{path} is not an rnnmnist checkpoint (damaged, truncated or foreign: {detail})"
        ) from None
    return _check(path, raw)


def _check(path: Path, raw: Any) -> Checkpoint:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint (no rnnmnist format marker)")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: unknown checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, newer than this rnnmnist {__version__} reads "
            f"(up to {FORMAT_VERSION}); upgrade rnnmnist"
        )
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    if not isinstance(raw["config"], dict):
        raise CheckpointError(f"{path}: damaged checkpoint, config is not a table")
    try:
        cfg = from_dict(raw["config"], source="stored config")
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    state = raw["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: damaged checkpoint, model weights are not a state dict")
    metrics = raw["metrics"] if isinstance(raw["metrics"], dict) else {}
    extra = {k: v for k, v in raw.items() if k not in REQUIRED_KEYS}
    return Checkpoint(config=cfg, model_state=state, metrics=metrics, extra=extra)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[SequenceClassifier, Checkpoint]:
    ckpt = load(path)
    try:
        return ckpt.build_model(device), ckpt
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
