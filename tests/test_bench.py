"""The benchmark suite in its tiny mode, so it cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_tiny_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    sections = {row["section"] for row in result["rows"]}
    assert sections == {
        "help",
        "train",
        "gemm",
        "eval",
        "wall",
        "tta",
        "memory",
        "scaling",
        "predict",
        "redrawn",
        "handwriting",
        "phases",
        "fp32tta",
        "fast99",
        "budgets",
        "long",
    }
    for row in result["rows"]:
        if row["unit"]:  # rates, times, sizes, ratios
            assert row["value"] > 0, row
        else:  # accuracies
            assert 0 <= row["value"] <= 1, row
    assert result["machine"]["torch"]


def test_bench_gemm_section_tiny(tmp_path: Path) -> None:
    out = tmp_path / "gemm.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--tiny", "--sections", "gemm", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        # one thread: two on two busy cores can stall each small product many-fold; nothing is timed here
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    names = ("gate GEMMs of a step, fp32, per step", "GEMM floor, fp32", "training step / GEMM floor, fp32")
    for name in (*names, "LSTM layer alone, fp32", "training step / LSTM layer alone, fp32"):
        assert name in rows, sorted(rows)
    assert rows["GEMM floor, fp32: achieved"]["unit"] == "GFLOP/s"
    floor = rows["GEMM floor, fp32"]["value"]
    assert floor == min(rows[f"gate GEMMs of a step, fp32, {layout}"]["value"] for layout in ("per step", "batched"))
    assert all(row["value"] > 0 and math.isfinite(row["value"]) for row in rows.values())
    ratio = rows["training step / LSTM layer alone, fp32"]["value"]
    assert ratio == rows["training step, fp32"]["value"] / rows["LSTM layer alone, fp32"]["value"]


GPU_FIGURES = (
    {
        f"{mode}_{what}"
        for mode in ("rows", "pixels")
        for what in (
            "bare_samples_per_s",
            "fp32_samples_per_s",
            "auto_samples_per_s",
            "fp32_vs_bare",
            "auto_vs_bare",
            "rounds",
            "steps_per_round",
            "hidden_size",
            "batch_size",
        )
    }
    | {
        f"{run}_{what}"
        for run in ("tta_rows", "smnist_epoch")
        for what in ("test_accuracy", "steps", "train_seconds", "loop_seconds", "wall_seconds")
    }
    | {"total_seconds"}
)


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path: Path) -> None:
    """bench/gpu.sh's CPU dry run: the whole GPU check at tiny sizes, on tiny IDX data it writes itself."""
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--device", "cpu", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout) == result  # the summary printed is the one written
    assert result["dry_run"] is True and result["missing"] == []
    assert result["device"]["type"] == "cpu" and result["device"]["torch"]
    assert {"name", "cuda", "cudnn"} <= result["device"].keys()
    assert result["auto_precision"] in ("fp32", "bf16")
    assert set(result["figures"]) == GPU_FIGURES
    for name, value in result["figures"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (name, value)
    assert 0 <= result["figures"]["tta_rows_test_accuracy"] <= 1
    assert result["figures"]["smnist_epoch_steps"] == 500 // 50  # one pass over the tiny training split


def test_gpu_check_refuses_a_full_run_without_cuda() -> None:
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "dry run" in done.stderr and "Traceback" not in done.stderr
