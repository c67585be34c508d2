"""Resuming a run (train --resume): a damaged training state, the environment, other data.

Each test resumes a copy of one run stopped by SIGTERM (conftest's ``stopped_run``), as a real process
where the run must find its data from the folder alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from clitools import copy_of, invoke, one_error_line, rnnmnist


def _damage(state: dict, what: str) -> None:
    order = state["data_order"]
    n = order["permutation"].numel()
    if what == "index past the split":
        order["permutation"][0] = n + 5
    elif what == "float permutation":
        order["permutation"] = order["permutation"].double()
    elif what == "short permutation":
        order["permutation"] = order["permutation"][:-3]
    elif what == "negative position":
        order["position"] = -4
    elif what == "moment of another shape":
        first = next(iter(state["optimizer"]["state"].values()))
        first["exp_avg"] = torch.zeros(3, 3)
    elif what == "a moment missing":
        next(iter(state["optimizer"]["state"].values())).pop("exp_avg_sq")
    elif what == "betas of another type":
        state["optimizer"]["param_groups"][0]["betas"] = (5.0, "x")
    elif what == "string step":
        state["step"] = "10"
    elif what == "no rng":
        del state["rng"]
    elif what == "best step after step":
        state["best_step"] = 10**6


DAMAGES = (
    "index past the split",
    "float permutation",
    "short permutation",
    "negative position",
    "moment of another shape",
    "a moment missing",
    "betas of another type",
    "string step",
    "no rng",
    "best step after step",
)


@pytest.mark.slow
@pytest.mark.parametrize("what", DAMAGES)
def test_damaged_training_state_is_one_line_on_resume(
    stopped_run: tuple[Path, bytes], tmp_path: Path, what: str
) -> None:
    folder, good = stopped_run
    payload = torch.load(io.BytesIO(good), weights_only=True)
    _damage(payload["training"], what)
    out = copy_of(stopped_run, tmp_path / "run")
    torch.save(payload, out / "checkpoint.pt")
    done = rnnmnist("train", "--resume", str(out))  # the data folder comes from run.json
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr)
    assert "training state is damaged" in line or (what == "short permutation" and "unless its checkpoint" in line)
    assert (out / "metrics.jsonl").read_bytes() == (folder / "metrics.jsonl").read_bytes()


def test_environment_settings_do_not_block_resume(stopped_run: tuple[Path, bytes], tmp_path: Path) -> None:
    out = copy_of(stopped_run, tmp_path / "run")
    result = invoke("train", "--resume", str(out), "--print-config", env={"RNNMNIST_TRAIN_LR": "0.5"})
    assert result.exit_code == 0, result.output
    assert "\nlr = 0.5\n" not in result.output


def test_resume_on_other_data_says_which_data_the_run_needs(stopped_run: tuple[Path, bytes], tmp_path: Path) -> None:
    from rnnmnist.training.synthetic import make_tiny_mnist

    out = copy_of(stopped_run, tmp_path / "run")
    other = make_tiny_mnist(tmp_path / "other", n_train=400)
    done = rnnmnist("train", "--resume", str(out), "--data-dir", str(other))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "was trained on 500 training images" in line and "holds 300" in line and "--data-dir " in line
