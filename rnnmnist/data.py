"""MNIST as whole tensors: IDX parsing with checks, download, splits, shuffled batches.

Each split is held as one uint8 tensor on the training device; batches are drawn
by indexing a shuffled permutation there and scaled to [0, 1] on the fly. There
is no per-image Python work on the training path.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnmnist.errors import DataError, shown

IMAGE_SIZE = 28
NUM_CLASSES = 10
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES["train"] + FILES["test"]
# What a failed download's messages say, in a few words (torchvision prints each mirror's error).
DOWNLOAD_PROBLEMS = (
    ("name or service not known", "no network: name resolution failed"),
    ("temporary failure in name resolution", "no network: name resolution failed"),
    ("nodename nor servname", "no network: name resolution failed"),
    ("no address associated", "no network: name resolution failed"),
    ("network is unreachable", "no network: unreachable"),
    ("timed out", "no network: timed out"),
    ("connection refused", "connection refused"),
    ("certificate verify failed", "TLS certificate verification failed"),
    ("not found", "file not found on the server"),
    ("md5", "downloaded file failed its checksum"),
)


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
    if dims[0] == 0:
        raise DataError(f"{path}: holds no {'images' if ndim == 3 else 'labels'} (its header says 0)")
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
    """Fetch MNIST with torchvision into ``data_dir/MNIST/raw``.

    Raises :class:`DataError` with the reason in a few words. Network waits are
    bounded by the CLI (socket default timeout), not here: that is process-wide.
    """
    from torchvision.datasets import MNIST

    # torchvision prints progress and each failed mirror on stdout, which belongs to --json output.
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            for train in (True, False):
                MNIST(str(data_dir), train=train, download=True)
    except PermissionError:
        raise DataError(f"download failed: cannot write into {data_dir} (permission denied)") from None
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; torchvision raises RuntimeError
        raise DataError("download failed: " + _download_problem(f"{said.getvalue()} {e}")) from None


def _download_problem(text: str) -> str:
    """The reason a download failed, in a few whole words."""
    lowered = " ".join(text.split()).lower()
    for needle, reason in DOWNLOAD_PROBLEMS:
        if needle in lowered:
            return reason
    if "no space left" in lowered:
        return "the disk is full"
    return "no MNIST mirror could be reached"


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
        except DataError as e:
            reason = str(e)
        missing = _missing(raw, names)
        if not missing:
            return raw
    raise DataError(
        f"MNIST not found in {raw} ({reason}): it needs {', '.join(ALL_FILES)} (or .gz copies); "
        f"point --data-dir or RNNMNIST_DATA_DIR at a folder holding MNIST/raw/"
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
        """Restore the order; a state that does not describe this split raises ValueError naming the part."""
        perm, position, epoch, generator = (state[k] for k in ("permutation", "position", "epoch", "generator"))
        if not isinstance(perm, torch.Tensor) or perm.dtype != torch.int64 or tuple(perm.shape) != (self.n,):
            raise ValueError(f"data order: the permutation is not {self.n} int64 indices")
        if not torch.equal(torch.sort(perm.cpu()).values, torch.arange(self.n)):
            raise ValueError(f"data order: the permutation does not hold each of 0-{self.n - 1} once")
        for name, value, high in (("position", position, self.n), ("epoch", epoch, 10**12)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
                raise ValueError(f"data order: {name} {shown(value)} is not an integer in 0-{high}")
        if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
            raise ValueError("data order: the generator state is not a byte tensor")
        self.generator.set_state(generator)
        self.permutation = perm.to(self.device)
        self.epoch, self.position = epoch, position
