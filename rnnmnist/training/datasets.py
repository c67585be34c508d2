"""The MNIST family: where each data set's IDX files lie in torchvision's layout, its class names, its download.

Every member is 28x28 grey images of 10 classes, so one model and one loader
serve them all; only the folder, the file names and two format quirks differ:

mnist          MNIST/raw/         train-images-idx3-ubyte, ... (the four MNIST names)
fashion-mnist  FashionMNIST/raw/  the same four names; classes are clothes (words)
kmnist         KMNIST/raw/        the same four names; classes are hiragana (romanised, as torchvision names them)
emnist-digits  EMNIST/raw/        emnist-digits-{train,test}-{images-idx3,labels-idx1}-ubyte; the images are
                                  stored transposed, and are turned upright here (torchvision leaves them)
qmnist         QMNIST/raw/        qmnist-{train,test}-images-idx3-ubyte and qmnist-{train,test}-labels-idx2-int:
                                  labels are 8 big-endian int32 columns per image, the first is the class;
                                  the test split is torchvision's QMNIST(train=False): all 60,000 images

Each file may also be a ``.gz`` copy. This module imports no torch.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

IMAGE_SIZE = 28  # every member: IMAGE_SIZE x IMAGE_SIZE grey images
NUM_CLASSES = 10  # ... of this many classes
DIGITS = tuple(str(d) for d in range(NUM_CLASSES))


@dataclass(frozen=True)
class DatasetSpec:
    """One member of the MNIST family as rnnmnist reads it."""

    name: str  # the config's word
    title: str  # for messages
    folder: str  # torchvision's class name: its data lives in DATA_DIR/<folder>/raw
    train_files: tuple[str, str]  # (images, labels)
    test_files: tuple[str, str]
    classes: tuple[str, ...]
    labels_format: str = "idx1-ubyte"  # or "idx2-int" (QMNIST)
    transposed: bool = False  # images stored column by column (EMNIST)

    def files(self, which: str) -> tuple[str, str]:
        return self.train_files if which == "train" else self.test_files

    @property
    def all_files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files

    def raw_folder(self, data_dir: str | Path) -> Path:
        return Path(data_dir) / self.folder / "raw"

    def download(self, data_dir: Path) -> None:
        """Fetch the files with torchvision's class for this data set (prints go to a buffer, not stdout)."""
        from torchvision import datasets as tv

        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            for train in (True, False):
                if self.name == "emnist-digits":
                    tv.EMNIST(str(data_dir), split="digits", train=train, download=True)
                elif self.name == "qmnist":
                    tv.QMNIST(str(data_dir), what="train" if train else "test", download=True)
                else:
                    getattr(tv, self.folder)(str(data_dir), train=train, download=True)


_MNIST_FILES = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)

SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", "MNIST", "MNIST", *_MNIST_FILES, DIGITS),
        DatasetSpec(
            "fashion-mnist",
            "Fashion-MNIST",
            "FashionMNIST",
            *_MNIST_FILES,
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ),
        DatasetSpec(
            "kmnist", "KMNIST", "KMNIST", *_MNIST_FILES, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
        ),
        DatasetSpec(
            "emnist-digits",
            "EMNIST digits",
            "EMNIST",
            ("emnist-digits-train-images-idx3-ubyte", "emnist-digits-train-labels-idx1-ubyte"),
            ("emnist-digits-test-images-idx3-ubyte", "emnist-digits-test-labels-idx1-ubyte"),
            DIGITS,
            transposed=True,
        ),
        DatasetSpec(
            "qmnist",
            "QMNIST",
            "QMNIST",
            ("qmnist-train-images-idx3-ubyte", "qmnist-train-labels-idx2-int"),
            ("qmnist-test-images-idx3-ubyte", "qmnist-test-labels-idx2-int"),
            DIGITS,
            labels_format="idx2-int",
        ),
    )
}


def spec(name: str) -> DatasetSpec:
    """The data set called ``name`` (a config's ``dataset``, already checked against config.DATASETS)."""
    return SPECS[name]


def class_names(name: str) -> tuple[str, ...]:
    """The 10 class names of data set ``name``, in label order."""
    return SPECS[name].classes


def is_digits(name: str) -> bool:
    """Whether the classes are the digits 0-9 (what predict's preprocessing was made for)."""
    return SPECS[name].classes == DIGITS
