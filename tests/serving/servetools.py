"""Helpers the serve tests share: a tiny saved model, PNG bytes, the API's answer shapes, a real server process.

Nothing here imports FastAPI, so a missing serve extra skips the test files (each checks for it) instead of
failing here.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rnnmnist.config import Config
from rnnmnist.training import checkpoint
from rnnmnist.training.model import SequenceClassifier

ROOT = Path(__file__).resolve().parents[2]


def save_model(path: Path, digit_check: dict | None = None, **fields) -> Path:
    """An untrained model's checkpoint; with ``digit_check``, that stored "one digit or not" check (else it
    has none, and the fallback judges: the untrained model is sure of nothing, so nothing is a digit)."""
    cfg = Config(hidden_size=16, precision="fp32", **fields)
    metrics = {"test_accuracy": 0.5, "broken": float("nan")}
    extra = {} if digit_check is None else {"digit_check": digit_check}
    checkpoint.save(path, cfg, SequenceClassifier(cfg), metrics, **extra)
    return path


def png(array: np.ndarray) -> bytes:
    """A PNG of a uint8 array, or of floats in [0, 1]."""
    if array.dtype != np.uint8:
        array = (array * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_record(r: dict) -> None:
    """A prediction's record: a digit, or "not a digit" (no prediction, what the network said still there)."""
    assert r["is_digit"] in (True, False) and (r["prediction"] is None) == (r["is_digit"] is False)
    assert (r["reason"] is None) == r["is_digit"]
    answer = r["prediction"] if r["is_digit"] else r["top3"][0][0]
    assert isinstance(answer, int) and 0 <= answer <= 9
    assert len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-4
    assert r["confidence"] == pytest.approx(max(r["probabilities"]), abs=1e-6)


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"error", "input"}  # an image that cannot be used: predict --json's error record
    assert isinstance(body["error"], str) and "\n" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rnnmnist(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **kwargs.pop("env", {})}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnmnist", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")
