from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rnnmnist.training.synthetic import make_tiny_mnist

REAL_DATA_ENV = "RNNMNIST_DATA_DIR"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --data-dir with 600 training and 200 test images of synthetic, learnable digits."""
    return make_tiny_mnist(tmp_path_factory.mktemp("tiny-mnist"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real MNIST, from $RNNMNIST_DATA_DIR (set by .ci/run to ../shared/data)."""
    folder = os.environ.get(REAL_DATA_ENV)
    if not folder:
        pytest.skip(f"real MNIST not available: set {REAL_DATA_ENV} to a folder holding MNIST/raw/")
    if not (Path(folder) / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not available: {folder}/MNIST/raw does not exist")
    return Path(folder)
