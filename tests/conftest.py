"""Fixtures shared by the test files: tiny synthetic MNIST, the real MNIST where available, a stopped run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clitools import ENV

from rnnmnist.training.synthetic import make_tiny_mnist, tiny_train_args

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


@pytest.fixture(scope="session")
def stopped_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A tiny run stopped by SIGTERM after its first logged step: its folder and its resumable checkpoint's bytes.

    Tests change copies of it (clitools.copy_of), never the folder itself.
    """
    out = tmp_path_factory.mktemp("stopped") / "run"
    args = tiny_train_args(tiny_data, out)
    i = args.index("--iters")
    args[i + 1] = str(25 * 4000 + 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args, "--log-every", "1"], stderr=subprocess.PIPE, env=ENV
    )
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and metrics.stat().st_size > 0):
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    return out, (out / "checkpoint.pt").read_bytes()
