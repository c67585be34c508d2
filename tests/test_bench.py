"""The benchmark suite in its tiny mode, so it cannot rot. No timing is asserted."""

from __future__ import annotations

import json
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
        "budgets",
        "long",
    }
    for row in result["rows"]:
        if row["unit"]:  # rates, times, sizes, ratios
            assert row["value"] > 0, row
        else:  # accuracies
            assert 0 <= row["value"] <= 1, row
    assert result["machine"]["torch"]
