"""MNIST as whole tensors: IDX parsing with checks, download, splits, shuffled batches.

The other members of the MNIST family (``--dataset``, see :mod:`rnnmnist.training.datasets`)
go through the same reading, checks and offline rules, from their own folders.

Each split is held as one uint8 tensor on the training device; batches are drawn
by indexing a shuffled permutation there and scaled to [0, 1] on the fly. There
is no per-image Python work on the training path.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnmnist.errors import BadValueError, DataError, shown
from rnnmnist.training.datasets import IMAGE_SIZE, NUM_CLASSES, spec

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


def raw_folder(data_dir: str | Path, dataset: str = "mnist") -> Path:
    """Where torchvision's layout keeps the data set's IDX files under ``data_dir``."""
    return spec(dataset).raw_folder(data_dir)


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


def read_idx2_int_labels(path: Path) -> torch.Tensor:
    """QMNIST's labels: an IDX file of big-endian int32, (N, 8); the first column is the class."""
    data = _read_bytes(path)
    if len(data) < 4 or bytes(data[:4]) != b"\x00\x00\x0c\x02":
        magic = data[:4].hex() if len(data) >= 4 else "missing"
        raise DataError(
            f"{path}: wrong magic number {magic} (expected 00000c02: 32-bit integers, 2 dimensions); "
            f"is this a QMNIST labels file?"
        )
    if len(data) < 12:
        raise DataError(f"{path}: truncated header ({len(data)} bytes)")
    rows, cols = struct.unpack(">2I", bytes(data[4:12]))
    if rows == 0 or cols == 0:
        raise DataError(f"{path}: holds no labels (its header says {rows} x {cols})")
    if len(data) - 12 != 4 * rows * cols:
        raise DataError(
            f"{path}: holds {len(data) - 12} bytes of data but its header promises {rows} x {cols} 32-bit "
            f"integers = {4 * rows * cols} bytes; the file is truncated or corrupt"
        )
    table = torch.frombuffer(data, dtype=torch.uint8, offset=12).view(rows, cols, 4).long()  # big-endian bytes
    first = table[:, 0]  # (N, 4)
    return (first[:, 0] << 24) | (first[:, 1] << 16) | (first[:, 2] << 8) | first[:, 3]


def read_pair(
    images_path: Path, labels_path: Path, labels_format: str = "idx1-ubyte", transposed: bool = False
) -> Split:
    """Read and cross-check one images file and its labels file.

    ``labels_format`` "idx2-int" reads QMNIST's labels; ``transposed`` images
    (EMNIST's) are turned upright.
    """
    images = read_idx(images_path, 3)
    if transposed:
        images = images.transpose(1, 2).contiguous()  # (N, 28, 28), rows first like MNIST
    labels = read_idx2_int_labels(labels_path) if labels_format == "idx2-int" else read_idx(labels_path, 1)
    if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if labels.numel() and (int(labels.max()) >= NUM_CLASSES or int(labels.min()) < 0):
        bad = int(labels.max()) if int(labels.max()) >= NUM_CLASSES else int(labels.min())
        raise DataError(f"{labels_path}: label {bad} is outside 0-9")
    return Split(images, labels.long())


def _missing(raw: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if _find(raw, n) is None]


def _download(data_dir: Path, dataset: str = "mnist") -> None:
    """Fetch the data set with torchvision's class into ``data_dir/<its folder>/raw``.

    Raises :class:`DataError` with the reason in a few words; a failed download leaves
    nothing behind that was not there before (torchvision makes the folders first).
    Network waits are bounded by the CLI (socket default timeout), not here: that is process-wide.
    """
    raw = raw_folder(data_dir, dataset)
    folders = [raw, raw.parent, Path(data_dir)]  # innermost first: the order to remove them in
    existed = {folder: folder.is_dir() for folder in folders}
    before = set(_entries(raw))
    # torchvision prints progress and each failed mirror on stdout, which belongs to --json output.
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            spec(dataset).download(data_dir)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; torchvision raises RuntimeError
        _remove_new(raw, before, folders, existed)
        if isinstance(e, PermissionError):
            raise DataError(f"download failed: cannot write into {data_dir} (permission denied)") from None
        raise DataError("download failed: " + _download_problem(f"{said.getvalue()} {e}")) from None


def _entries(folder: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return list(folder.iterdir())
    return []


def _remove_new(raw: Path, before: set[Path], folders: list[Path], existed: dict[Path, bool]) -> None:
    """Undo a failed download: the files it began in ``raw`` and the folders it made (only if empty)."""
    for path in _entries(raw):
        if path not in before and path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()
    for folder in folders:
        if not existed[folder]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # refuses a folder that is not empty: nothing of anyone else's goes


def _misplaced(data_dir: Path, names: tuple[str, ...], dataset: str) -> str | None:
    """Why ``data_dir`` is the wrong folder although the files are near: it is the data set's own folder
    or its raw folder (the likeliest mistake), or holds the files directly. None when it is not that."""
    s = spec(dataset)
    name = "--data-dir"
    here = Path(os.path.abspath(data_dir))  # as typed, made absolute: the parent named is one the user knows
    if here.name == s.folder and not _missing(here / "raw", names):
        return f"{name} {data_dir} is the {s.folder} folder itself: use its parent: --data-dir {here.parent}"
    if here.name == "raw" and here.parent.name == s.folder and not _missing(here, names):
        return f"{name} {data_dir} is the {s.folder}/raw folder itself: use --data-dir {here.parent.parent}"
    if not _missing(here, names):
        return (
            f"{name} {data_dir} holds the {s.title} files directly, but rnnmnist reads them from "
            f"{s.folder}/raw/ inside it: move them into {Path(data_dir) / s.folder / 'raw'}"
        )
    return None


def _download_problem(text: str) -> str:
    """The reason a download failed, in a few whole words."""
    lowered = " ".join(text.split()).lower()
    for needle, reason in DOWNLOAD_PROBLEMS:
        if needle in lowered:
            return reason
    if "no space left" in lowered:
        return "the disk is full"
    return "no MNIST mirror could be reached"


def ensure_files(data_dir: str | Path, names: tuple[str, ...], download: bool, dataset: str = "mnist") -> Path:
    """Make sure the IDX files ``names`` are in the data set's raw folder under ``data_dir``; download if allowed.

    Files already there are used as they are, offline.
    """
    raw = raw_folder(data_dir, dataset)
    missing = _missing(raw, names)
    if not missing:
        return raw
    misplaced = _misplaced(Path(data_dir), names, dataset)
    if misplaced is not None:  # before any download, which would fetch a second copy inside it
        raise DataError(misplaced)
    reason = "downloading is turned off (--no-download)"
    if download:
        try:
            _download(Path(data_dir), dataset)
        except DataError as e:
            reason = str(e)
        missing = _missing(raw, names)
        if not missing:
            return raw
    s = spec(dataset)
    raise DataError(
        f"{s.title} not found in {raw} ({reason}): it needs {', '.join(s.all_files)} (or .gz copies); "
        f"point --data-dir or RNNMNIST_DATA_DIR at a folder holding {s.folder}/raw/"
    )


def _read_file_pair(data_dir: str | Path, which: str, download: bool, dataset: str = "mnist") -> Split:
    s = spec(dataset)
    names = s.files(which)
    raw = ensure_files(data_dir, names, download, dataset)
    return read_pair(_find(raw, names[0]), _find(raw, names[1]), s.labels_format, s.transposed)


def split_train(full: Split, val_size: int) -> tuple[Split, Split]:
    """Hold out the first ``val_size`` training images for validation, as the notebook's loader did."""
    if val_size >= len(full):
        raise BadValueError(
            f"val_size={val_size} leaves no training images (the training file holds {len(full):,}); "
            "choose a smaller --val-size"
        )
    val = Split(full.images[:val_size], full.labels[:val_size])
    train = Split(full.images[val_size:], full.labels[val_size:])
    return train, val


def load_mnist(data_dir: str | Path, val_size: int, download: bool = True, dataset: str = "mnist") -> Mnist:
    """All three splits of ``dataset`` (MNIST or another of its family), on the CPU."""
    train, val = split_train(_read_file_pair(data_dir, "train", download, dataset), val_size)
    return Mnist(train=train, val=val, test=_read_file_pair(data_dir, "test", download, dataset))


def load_split(data_dir: str | Path, split: str, val_size: int, download: bool = True, dataset: str = "mnist") -> Split:
    """One split (train, val or test) of ``dataset``, on the CPU."""
    if split == "test":
        return _read_file_pair(data_dir, "test", download, dataset)
    train, val = split_train(_read_file_pair(data_dir, "train", download, dataset), val_size)
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
