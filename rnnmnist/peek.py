"""A checkpoint's plain parts (format, config, metrics, training step) read without its weights, or torch.

A checkpoint is a torch zip: ``<name>/data.pkl`` holds the pickled dictionary and
each tensor lives in its own ``<name>/data/<key>`` member. :func:`peek` unpickles
only ``data.pkl``, with an unpickler that builds nothing but plain Python values:
every tensor becomes a :class:`TensorStub` (its shape), its bytes are never read,
and any other global a pickle names is refused, as ``torch.load(weights_only=True)``
refuses it. Listing hundreds of run folders then costs a few kilobytes per
checkpoint and no torch import (measured in docs/README-experiments.md).
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnmnist.errors import CheckpointError, one_line

FORMAT = "rnnmnist-checkpoint"  # as rnnmnist.checkpoint writes it (that module imports torch)
MAX_PICKLE_BYTES = 16 << 20  # the plain part of a checkpoint is a few KB; refuse a zip bomb


@dataclass(frozen=True)
class TensorStub:
    """A tensor named by a checkpoint, not loaded."""

    shape: tuple[int, ...]


class _Storage:
    """A tensor's storage, not read."""


def _rebuild_tensor(storage: Any, offset: Any, size: Any, *rest: Any) -> TensorStub:
    return TensorStub(tuple(size) if isinstance(size, (tuple, list)) else ())


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _Storage
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a checkpoint never needs it")

    def persistent_load(self, pid: Any) -> _Storage:
        return _Storage()


def peek(path: Path) -> dict[str, Any]:
    """The checkpoint's dictionary with tensors as :class:`TensorStub`; a one-line CheckpointError if it is
    not an rnnmnist checkpoint."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(names) != 1:
                raise CheckpointError(f"{path} is not an rnnmnist checkpoint (no PyTorch data.pkl inside)")
            info = archive.getinfo(names[0])
            if info.file_size > MAX_PICKLE_BYTES:
                raise CheckpointError(f"{path}: its data.pkl is {info.file_size:,} bytes, too large to be plain")
            raw = _PlainUnpickler(archive.open(info)).load()
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint ({one_line(e, 120)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint (no rnnmnist format marker)")
    return raw
