"""A checkpoint's plain parts (format, config, metrics, training step) read without its weights, or torch.

A checkpoint is a torch zip: ``<name>/data.pkl`` holds the pickled dictionary and
each tensor lives in its own ``<name>/data/<key>`` member. :func:`peek` unpickles
only ``data.pkl``, with an unpickler that builds nothing but plain Python values:
every tensor becomes a :class:`TensorStub` (its shape), its bytes are never read,
and any other global a pickle names is refused, as ``torch.load(weights_only=True)``
refuses it. Listing hundreds of run folders then costs a few kilobytes per
checkpoint and no torch import (measured in docs/README-experiments.md).

Unpickling is a per-file boundary: whatever a damaged ``data.pkl`` makes the pickle machine raise
becomes one line about that file (:func:`_unpickle` says why that catch is broad), never a traceback.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rnnmnist.errors import CheckpointError, one_line
from rnnmnist.files import NotRegularFile, open_regular

FORMAT = "rnnmnist-checkpoint"  # as rnnmnist.training.checkpoint writes it (that module imports torch)
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


def _check_memo(data: bytes) -> None:
    """Refuse a memo index beyond the pickle's length (no pickle that size stores that many objects).

    The C unpickler grows its memo list to the largest index it is given and zeroes it: one changed
    byte (BINPUT becoming LONG_BINPUT) asks for gigabytes and seconds of work. ``pickletools`` reads the
    opcodes without building anything.
    """
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= len(data):
            raise pickle.UnpicklingError(f"memo index {arg} in a pickle of {len(data):,} bytes")


def _unpickle(stream: IO[bytes]) -> Any:
    """The plain pickle in ``stream``; a damaged one raises :class:`pickle.UnpicklingError`.

    This is the boundary where any exception is caught, deliberately: pickle's documentation says that
    unpickling bad bytes "may raise other exceptions, including (but not necessarily limited to)
    AttributeError, EOFError, ImportError, and IndexError", and mutated checkpoints also raise
    MemoryError, OverflowError, KeyError, TypeError, ValueError (and the zip member's CRC check
    BadZipFile) from inside ``load``. The set is open, and nothing but the pickle machine runs in
    here (:meth:`_PlainUnpickler.find_class` admits only the plain builders above), so every exception
    means one thing: these bytes are not a checkpoint.
    """
    try:
        data = stream.read(MAX_PICKLE_BYTES + 1)
        if len(data) > MAX_PICKLE_BYTES:
            raise pickle.UnpicklingError(f"data.pkl is over {MAX_PICKLE_BYTES:,} bytes, too large to be plain")
        _check_memo(data)
        return _PlainUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # boundary: the unpickler's exceptions are an open set; each means damaged bytes
        raise pickle.UnpicklingError(one_line(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)) from None


def peek(path: Path) -> dict[str, Any]:
    """The checkpoint's dictionary with tensors as :class:`TensorStub`; a one-line CheckpointError if it is
    not an rnnmnist checkpoint (whatever its bytes), or not a regular file."""
    try:
        with os.fdopen(open_regular(path), "rb") as f, zipfile.ZipFile(f) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(names) != 1:
                raise CheckpointError(f"{path} is not an rnnmnist checkpoint (no PyTorch data.pkl inside)")
            info = archive.getinfo(names[0])
            if info.file_size > MAX_PICKLE_BYTES:
                raise CheckpointError(f"{path}: its data.pkl is {info.file_size:,} bytes, too large to be plain")
            with archive.open(info) as member:
                raw = _unpickle(member)
    except CheckpointError:
        raise
    except NotRegularFile:
        raise CheckpointError(f"{path} is not a regular file") from None
    # What zipfile raises on a damaged archive (a bad header, an unknown compression or version, a bad CRC).
    except (OSError, zipfile.BadZipFile, NotImplementedError, EOFError, ValueError, struct.error, zlib.error) as e:
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint ({one_line(e, 120)})") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint ({one_line(e, 120)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnmnist checkpoint (no rnnmnist format marker)")
    return raw
