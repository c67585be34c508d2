"""On the real MNIST (RNNMNIST_DATA_DIR, set by .ci/run); skipped with a reason elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def rnnmnist(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rnnmnist", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def real_run(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("real") / "run"
    # 200 steps of 128 (the notebook counts examples: 200 * 128 < 25,601).
    done = rnnmnist("train", "--data-dir", str(real_data), "--iters", "25601", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_trains_to_90_percent_in_200_steps(real_run: dict) -> None:
    assert real_run["steps"] == 200
    assert real_run["test_n"] == 10_000
    assert real_run["test_accuracy"] >= 0.90


def test_eval_reproduces_train_accuracy(real_run: dict, real_data: Path) -> None:
    done = rnnmnist("eval", real_run["checkpoint"], "--data-dir", str(real_data), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n"] == 10_000
    assert report["accuracy"] == real_run["test_accuracy"]
    first = json.loads(
        rnnmnist("eval", real_run["checkpoint"], "--data-dir", str(real_data), "--limit", "256", "--json").stdout
    )
    assert first["accuracy"] == real_run["test_accuracy_first256"]


def test_predict_real_test_images(real_run: dict, real_data: Path) -> None:
    done = rnnmnist("predict", real_run["checkpoint"], "--data-dir", str(real_data), "--index", "0", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["label"] == 7  # the first MNIST test image is a 7
    assert row["prediction"] == 7
