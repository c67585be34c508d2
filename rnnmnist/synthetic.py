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
