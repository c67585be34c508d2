"""Tiny MNIST-format data sets (IDX files) for tests and smoke runs: no network, no real MNIST needed."""

from __future__ import annotations

import struct
from pathlib import Path

import torch

TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: torch.Tensor) -> bytes:
    """An IDX file of unsigned bytes holding ``array``."""
    header = bytes([0, 0, 0x08, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    return header + array.to(torch.uint8).contiguous().numpy().tobytes()


def write_idx(path: Path, array: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(idx_bytes(array))
    return path


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable stand-ins for digits: a fixed random template per class, 10% of pixels flipped."""
    templates = torch.rand(10, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.75  # same for every split
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    flips = torch.rand(n, 28, 28, generator=g) < 0.1
    images = (templates[labels] ^ flips).to(torch.uint8) * 255
    return images, labels


def make_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """Write the four IDX files under ``root/MNIST/raw``; return ``root`` (a --data-dir)."""
    raw = root / "MNIST" / "raw"
    for (images_name, labels_name), (n, seed) in zip((TRAIN_FILES, TEST_FILES), ((n_train, 2), (n_test, 3))):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / images_name, images)
        write_idx(raw / labels_name, labels)
    return root


def tiny_train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """`rnnmnist train` arguments for a run of 20 small steps on tiny data."""
    return [
        "train",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--val-size",
        "100",
        "--batch-size",
        "25",
        "--iters",
        "501",
        "--hidden-size",
        "16",
        "--log-every",
        "5",
        "--device",
        "cpu",
        *extra,
    ]


def idx2_int_bytes(table: torch.Tensor) -> bytes:
    """An IDX file of big-endian int32 (QMNIST's labels format) holding the 2-d ``table``."""
    header = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", *table.shape)
    return header + table.to(torch.int32).numpy().astype(">i4").tobytes()


def make_tiny_dataset(root: Path, dataset: str, n_train: int = 600, n_test: int = 200) -> Path:
    """Like :func:`make_tiny_mnist`, in the layout and formats of ``dataset`` (see rnnmnist.training.datasets);
    return ``root`` (a --data-dir). EMNIST's images are written transposed and QMNIST's labels as
    (N, 8) int32 tables, as those files are."""
    from rnnmnist.training.datasets import spec

    s = spec(dataset)
    raw = s.raw_folder(root)
    for (images_name, labels_name), (n, seed) in zip((s.train_files, s.test_files), ((n_train, 2), (n_test, 3))):
        images, labels = synthetic_digits(n, seed)
        if s.transposed:
            images = images.transpose(1, 2)
        write_idx(raw / images_name, images)
        if s.labels_format == "idx2-int":
            # QMNIST's columns: class, NIST hsf, writer, ... (only the first one is read)
            table = torch.stack([labels, *(torch.full_like(labels, k) for k in range(1, 8))], dim=1)
            (raw / labels_name).write_bytes(idx2_int_bytes(table))
        else:
            write_idx(raw / labels_name, labels)
    return root
