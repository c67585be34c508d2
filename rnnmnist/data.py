"""MNIST as whole tensors: IDX parsing with checks, download, splits, shuffled batches.

Each split is held as one uint8 tensor on the training device; batches are drawn
by indexing a shuffled permutation there and scaled to [0, 1] on the fly. There
is no per-image Python work on the training path.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnmnist.errors import DataError

IMAGE_SIZE = 28
NUM_CLASSES = 10
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES["train"] + FILES["test"]
DOWNLOAD_TIMEOUT = 30.0  # seconds without an answer before a download attempt gives up


@dataclass
class Split:
    """Images and labels of one split, kept as stored (uint8) to save memory and bandwidth."""

    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, n: int) -> Split:
        return Split(self.images[:n], self.labels[:n])


@dataclass
class Mnist:
    train: Split
    val: Split
    test: Split


def raw_folder(data_dir: str | Path) -> Path:
    """Where torchvision's layout keeps the IDX files under ``data_dir``."""
    return Path(data_dir) / "MNIST" / "raw"


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytearray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return bytearray(f.read())
        return bytearray(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions, checking everything.

    IDX: two zero bytes, a type code (0x08 = unsigned byte), the number of
    dimensions, then one big-endian uint32 per dimension, then the data.
    """
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        magic = data[:4].hex() if len(data) >= 4 else "missing"
        raise DataError(
            f"{path}: wrong magic number {magic} (expected 0000080{ndim}: unsigned bytes, "
            f"{ndim} dimension{'s' if ndim > 1 else ''}); is this the right file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", bytes(data[4:header]))
    expected = math.prod(dims)
    if len(data) - header != expected:
        raise DataError(
            f"{path}: holds {len(data) - header} bytes of data but its header promises "
            f"{' x '.join(map(str, dims))} = {expected}; the file is truncated or corrupt"
        )
    return torch.frombuffer(data, dtype=torch.uint8, offset=header, count=expected).view(*dims)


def read_pair(images_path: Path, labels_path: Path) -> Split:
    """Read and cross-check one images file and its labels file."""
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if labels.numel() and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {int(labels.max())} is outside 0-9")
    return Split(images, labels.long())


def _missing(raw: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if _find(raw, n) is None]


def _download(data_dir: Path) -> None:
    """Fetch MNIST with torchvision into ``data_dir/MNIST/raw``."""
    from torchvision.datasets import MNIST

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # a dead network must fail, not hang
    try:
        # torchvision prints download progress on stdout, which belongs to --json output.
        with contextlib.redirect_stdout(sys.stderr):
            for train in (True, False):
                MNIST(str(data_dir), train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous_timeout)


def ensure_files(data_dir: str | Path, names: tuple[str, ...], download: bool) -> Path:
    """Make sure the IDX files ``names`` are in ``data_dir/MNIST/raw``; download if allowed.

    Files already there are used as they are, offline.
    """
    raw = raw_folder(data_dir)
    missing = _missing(raw, names)
    if not missing:
        return raw
    reason = "downloading is turned off (--no-download)"
    if download:
        try:
            _download(Path(data_dir))
        except Exception as e:  # any failure (network, permissions, checksum) means: no data
            reason = "download failed: " + " ".join(str(e).split())[:200]
        missing = _missing(raw, names)
        if not missing:
            return raw
    raise DataError(
        f"MNIST not found: {raw} lacks {', '.join(missing)} (it needs {', '.join(ALL_FILES)}; "
        f".gz copies also work); {reason}. Point --data-dir or RNNMNIST_DATA_DIR at a folder holding MNIST/raw/"
    )


def _read_file_pair(data_dir: str | Path, which: str, download: bool) -> Split:
    names = FILES[which]
    raw = ensure_files(data_dir, names, download)
    return read_pair(_find(raw, names[0]), _find(raw, names[1]))


def split_train(full: Split, val_size: int) -> tuple[Split, Split]:
    """Hold out the first ``val_size`` training images for validation, as the notebook's loader did."""
    if val_size >= len(full):
        raise DataError(f"val_size={val_size} leaves no training images (the training file holds {len(full)})")
    val = Split(full.images[:val_size], full.labels[:val_size])
    train = Split(full.images[val_size:], full.labels[val_size:])
    return train, val


def load_mnist(data_dir: str | Path, val_size: int, download: bool = True) -> Mnist:
    """All three splits, on the CPU."""
    train, val = split_train(_read_file_pair(data_dir, "train", download), val_size)
    return Mnist(train=train, val=val, test=_read_file_pair(data_dir, "test", download))


def load_split(data_dir: str | Path, split: str, val_size: int, download: bool = True) -> Split:
    """One split (train, val or test), on the CPU."""
    if split == "test":
        return _read_file_pair(data_dir, "test", download)
    train, val = split_train(_read_file_pair(data_dir, "train", download), val_size)
    return val if split == "val" else train


def scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 28, 28) -> float32 in [0, 1], the model's input range."""
    return images.float().mul_(1.0 / 255.0)


class BatchStream:
    """Shuffled mini-batches of indices, epoch after epoch, on the training device.

    Each epoch is one permutation drawn from a seeded CPU generator (so the order
    is the same on every device); an epoch's incomplete last batch is skipped.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        if batch_size > n:
            raise DataError(f"batch_size={batch_size} is larger than the training split ({n} images)")
        self.n, self.batch_size, self.device = n, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self.permutation = self._new_permutation()

    def _new_permutation(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=self.generator).to(self.device)

    def next(self) -> torch.Tensor:
        """Indices of the next batch, (batch_size,) int64 on the device."""
        if self.position + self.batch_size > self.n:
            self.permutation = self._new_permutation()
            self.epoch += 1
            self.position = 0
        idx = self.permutation[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "permutation": self.permutation.cpu(),
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.permutation = state["permutation"].to(self.device)
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
