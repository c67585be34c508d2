"""On the real MNIST (RNNMNIST_DATA_DIR, set by .ci/run); skipped with a reason elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import rnnmnist


@pytest.fixture(scope="module")
def real_run(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("real") / "run"
    # 200 steps of 128 (the notebook counts examples: 200 * 128 < 25,601).
    args = ["--iters", "25601", "--batch-size", "128"]
    done = rnnmnist("train", "--data-dir", str(real_data), *args, "--out", str(out), "--json")
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


def test_redrawn_test_digits_are_predicted_like_the_originals(real_run: dict, real_data: Path, tmp_path: Path) -> None:
    """MNIST test digits redrawn as people's images (dark on light, any size, lit, blurred, noisy,
    PNG/JPEG): accuracy stays close to the originals'."""
    import numpy as np

    from rnnmnist.images.redraw import random_style, redraw
    from rnnmnist.training.data import load_split

    test = load_split(real_data, "test", 0, download=False)
    rng = np.random.default_rng(2024)
    n = 300
    for i in range(n):
        style = random_style(rng)
        suffix = "jpg" if style.fmt == "JPEG" else "png"
        (tmp_path / f"{i:04d}.{suffix}").write_bytes(redraw(test.images[i].numpy(), style, seed=i))
    done = rnnmnist("predict", real_run["checkpoint"], str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    predicted = [json.loads(line)["top3"][0][0] for line in done.stdout.splitlines()]  # the answer, digit or not
    redrawn = float(np.mean(np.array(predicted) == test.labels[:n].numpy()))
    original = json.loads(
        rnnmnist("eval", real_run["checkpoint"], "--data-dir", str(real_data), "--limit", str(n), "--json").stdout
    )["accuracy"]
    assert redrawn >= original - 0.05, (redrawn, original)


def test_real_mnist_digits_pass_through_unchanged(real_data: Path) -> None:
    import numpy as np

    from rnnmnist.images.preprocess import to_mnist
    from rnnmnist.training.data import load_split

    images = load_split(real_data, "test", 0, download=False).images[:500].float().numpy() / 255
    for image in images:
        assert np.abs(to_mnist(image) - image).max() < 0.05


@pytest.mark.precision
def test_a_bf16_model_is_used_in_fp32_where_bf16_cannot_run(real_run: dict, real_data: Path) -> None:
    """The real run above trained in the machine's precision (bf16 on AVX-512 BF16/AMX CPUs): on a
    machine without bf16 (forced here) eval, predict and export still work, in fp32, and agree."""
    import os

    import torch

    from rnnmnist.training import checkpoint
    from rnnmnist.training.data import load_split
    from rnnmnist.training.evaluate import evaluate

    env = {**os.environ, "RNNMNIST_DISABLE_BF16": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "rnnmnist", "eval", real_run["checkpoint"], "--data-dir", str(real_data), "--json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["precision"] == "fp32"
    assert abs(report["accuracy"] - real_run["test_accuracy"]) <= 0.002
    predicted = subprocess.run(
        [sys.executable, "-m", "rnnmnist", "predict", real_run["checkpoint"], "--data-dir", str(real_data),
         "--index", "0", "--json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert predicted.returncode == 0 and json.loads(predicted.stdout)["prediction"] == 7
    # Prediction by prediction, the two precisions agree on (nearly) every test image.
    model, ckpt = checkpoint.load_model(real_run["checkpoint"])
    test = load_split(real_data, "test", 0, download=False)
    fp32 = evaluate(model, test, 1000, "fp32").predictions
    trained = evaluate(model, test, 1000, ckpt.config.precision).predictions
    agreement = (fp32 == trained).float().mean().item()
    assert agreement >= 0.998, agreement
    assert torch.equal(fp32, evaluate(model, test, 1000, "fp32").predictions)
