"""Hostile checkpoints and training states: every key deleted, retyped, reshaped or out of range.

Whatever a checkpoint holds, loading it for eval/predict or for --resume ends in a
model (and a training state) or in one CheckpointError line — never another
exception. Many mutations run in process through the same code the commands
use; a bounded number go through `eval`, `predict` and `train --resume` as
subprocesses, which must print a result or one `Error:` line with exit code 1,
and change no file outside the run folder.
"""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from clitools import device_node, one_error_line, rnnmnist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnmnist.config import Config
from rnnmnist.errors import RnnmnistError
from rnnmnist.training import checkpoint
from rnnmnist.training.data import load_mnist
from rnnmnist.training.distributed import SINGLE
from rnnmnist.training.lifecycle import _build_parts
from rnnmnist.training.model import SequenceClassifier
from rnnmnist.training.run import Run, TrainState
from rnnmnist.training.rundir import RunDir

CFG = Config(hidden_size=8, batch_size=25, iters=25 * 12 + 1, val_size=100, log_every=5, device="cpu", precision="fp32")

# Replacement values of every kind a damaged or crafted file could hold.
ODD_VALUES = [
    None,
    True,
    -1,
    0,
    10**30,
    -(2**70),
    1.5,
    float("nan"),
    float("inf"),
    "x",
    "",
    b"\x00",
    [],
    [1, "a"],
    {},
    {"a": 1},
    torch.tensor(3),
    torch.zeros(0),
    torch.zeros(3, 3),
    torch.full((2,), float("nan")),
    torch.zeros(5, dtype=torch.int64),
    torch.zeros(2, dtype=torch.complex64),
    torch.zeros(4, dtype=torch.uint8),
]


@pytest.fixture(scope="module")
def resumable(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run folder whose checkpoint.pt is resumable (at step 0), and that checkpoint's payload."""
    out = _saved_run(tmp_path_factory.mktemp("hostile-ckpt") / "run", tiny_data, steps=0)
    return out, torch.load(out / "checkpoint.pt", weights_only=True)


def _saved_run(out: Path, tiny_data: Path, steps: int) -> Path:
    """A run folder ``out`` with a resumable checkpoint after ``steps`` optimizer steps on random images."""
    run_dir = RunDir(out)
    run_dir.prepare_new(force=False)
    run_dir.write_config(CFG)
    run_dir.write_info(tiny_data)
    run_dir.lock.release()
    torch.manual_seed(0)
    model = SequenceClassifier(CFG.model)
    data = load_mnist(tiny_data, CFG.val_size, download=False)
    state = TrainState(CFG, model, len(data.train), torch.device("cpu"))
    for _ in range(steps):
        state.optimizer.zero_grad()
        model(torch.rand(4, 28, 28)).logsumexp(1).mean().backward()
        state.optimizer.step()
        state.step += 1
    Run(CFG, model, data, state, run_dir).save_resumable()
    return out


def _paths(payload: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in the nested payload (dicts and lists), leaves and containers."""
    found = []
    items = payload.items() if isinstance(payload, dict) else enumerate(payload) if isinstance(payload, list) else ()
    for key, value in items:
        path = (*prefix, key)
        found.append(path)
        found += _paths(value, path)
    return found


def _mutate(payload: dict, path: tuple, how: str, value: Any) -> dict:
    damaged = copy.deepcopy(payload)
    parent = damaged
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if how == "delete":
        del parent[key]
    elif how == "retype":
        parent[key] = value
    elif how == "reshape" and isinstance(parent[key], torch.Tensor) and parent[key].numel() > 1:
        parent[key] = parent[key].flatten()[:-1]
    elif how == "out of range" and isinstance(parent[key], torch.Tensor) and parent[key].numel():
        parent[key] = parent[key].clone()
        parent[key].view(-1)[0] = 10**6 if not parent[key].is_floating_point() else float("inf")
    elif how == "out of range" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
        parent[key] = -parent[key] - 10**9
    else:
        parent[key] = value
    return damaged


def _use_in_process(raw: bytes, path: Path, tiny_data: Path) -> str:
    """Load the bytes as eval/predict and --resume do; 'ok' or the error's line. Any other exception fails."""
    path.write_bytes(raw)
    try:
        ckpt = checkpoint.load(path)
        ckpt.build_model()
        if ckpt.training is not None and not ckpt.notes:
            data = load_mnist(tiny_data, ckpt.config.val_size, download=False)
            _build_parts(ckpt.config, ckpt, data, torch.device("cpu"), SINGLE)
    except RnnmnistError as e:
        message = str(e)
        assert message and "\n" not in message, message
        return message
    return "ok"


def _bytes(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_damage_to_any_key_is_a_model_or_one_line(
    resumable: tuple[Path, dict], tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    _, payload = resumable
    path = data.draw(st.sampled_from(_paths(payload)))
    how = data.draw(st.sampled_from(["delete", "retype", "reshape", "out of range"]))
    value = data.draw(st.sampled_from(ODD_VALUES))
    damaged = _mutate(payload, path, how, value)
    outcome = _use_in_process(_bytes(damaged), tmp_path_factory.mktemp("h") / "c.pt", tiny_data)
    assert outcome  # a model and training state, or one line saying what is wrong


def test_deleting_any_key_a_model_or_resume_needs_is_noticed(
    resumable: tuple[Path, dict], tiny_data: Path, tmp_path: Path
) -> None:
    _, payload = resumable
    outcomes = {path: _use_in_process(_bytes(_mutate(payload, path, "delete", None)), tmp_path / "c.pt", tiny_data)
                for path in _paths(payload)}  # fmt: skip
    # What a model or a resume needs cannot go missing unnoticed.
    for needed in (("model",), ("config",), ("training", "optimizer"), ("training", "data_order"), ("training", "rng")):
        assert outcomes[needed] != "ok", needed


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "how", "value"),
    [
        (("training", "data_order", "permutation"), "retype", torch.zeros(3)),
        (("training", "step"), "retype", "10"),
        (("training", "optimizer", "state"), "retype", {0: {"exp_avg": torch.zeros(2)}}),
        (("model", "head.weight"), "reshape", None),
        (("model", "head.bias"), "retype", torch.full((10,), float("nan"))),
        (("config", "hidden_size"), "retype", 0),
        (("config", "lr"), "retype", "fast"),
        (("format_version",), "retype", 99),
    ],
)
def test_damaged_checkpoints_through_the_commands(
    resumable: tuple[Path, dict], tiny_data: Path, tmp_path: Path, path: tuple, how: str, value: Any
) -> None:
    source, payload = resumable
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.toml", "run.json"):
        (out / name).write_bytes((source / name).read_bytes())
    (out / "checkpoint.pt").write_bytes(_bytes(_mutate(payload, path, how, value)))
    before = _tree_digest(tiny_data)
    ckpt = str(out / "checkpoint.pt")
    for args in (
        ("eval", ckpt, "--data-dir", str(tiny_data)),
        ("predict", ckpt, "--index", "0", "--data-dir", str(tiny_data)),
        ("train", "--resume", str(out)),
    ):
        done = rnnmnist(*args, timeout=300)  # without RNNMNIST_DATA_DIR: the run remembers its data
        assert "Traceback" not in done.stderr, done.stderr
        if done.returncode != 0:
            assert done.returncode == 1, (args, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert _tree_digest(tiny_data) == before  # nothing outside the run folder changed


def test_eval_of_an_endless_file_is_refused(tmp_path: Path) -> None:
    done = rnnmnist("eval", str(device_node(tmp_path, "zero")))
    assert done.returncode == 1
    assert "over the 2 GiB limit" in one_error_line(done.stderr)


@pytest.fixture(scope="module")
def stepped(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A resumable checkpoint's payload after two optimizer steps: Adam's moments are there to damage."""
    out = _saved_run(tmp_path_factory.mktemp("hostile-stepped") / "run", tiny_data, steps=2)
    return torch.load(out / "checkpoint.pt", weights_only=True)


def _group(payload: dict) -> dict:
    return payload["training"]["optimizer"]["param_groups"][0]


def _moments(payload: dict) -> dict:
    return payload["training"]["optimizer"]["state"][0]


# Damage torch's Optimizer.load_state_dict accepts, and whose first use would fail inside the next step.
OPTIMIZER_DAMAGE = {
    "a moment missing": lambda p: _moments(p).pop("exp_avg_sq"),
    "a moment added": lambda p: _moments(p).__setitem__("max_exp_avg_sq", torch.zeros_like(_moments(p)["exp_avg"])),
    "betas of another type": lambda p: _group(p).__setitem__("betas", (5.0, "x")),
    "one beta": lambda p: _group(p).__setitem__("betas", (0.9,)),
    "amsgrad switched on": lambda p: _group(p).__setitem__("amsgrad", True),
    "lr a string": lambda p: _group(p).__setitem__("lr", "fast"),
    "eps NaN": lambda p: _group(p).__setitem__("eps", float("nan")),
    "fused a string": lambda p: _group(p).__setitem__("fused", "yes"),
    "a setting added, not a plain value": lambda p: _group(p).__setitem__("momentum", torch.tensor(0.9)),
    "eps zero, not this run's": lambda p: _group(p).__setitem__("eps", 0.0),
    "weight decay not this run's": lambda p: _group(p).__setitem__("weight_decay", 1e300),
    "beta2 not this run's": lambda p: _group(p).__setitem__("betas", (0.9, 0.5)),
    "a setting torch reads removed": lambda p: _group(p).pop("eps"),
    "parameters renumbered": lambda p: _group(p).__setitem__("params", list(range(1, len(_group(p)["params"]) + 1))),
    "a step of two numbers": lambda p: _moments(p).__setitem__("step", torch.tensor([2.0, 2.0])),
    "a negative second moment": lambda p: _moments(p)["exp_avg_sq"].view(-1).__setitem__(0, -1.0),
}


# What another torch may write: flags it lacks (torch fills them in), settings this torch lacks.
OTHER_TORCH = {
    "as written": lambda p: None,
    "a flag missing": lambda p: _group(p).pop("decoupled_weight_decay"),
    "every flag missing": lambda p: [_group(p).pop(k) for k in ("amsgrad", "maximize", "foreach", "fused")],
    "a setting this torch lacks": lambda p: _group(p).__setitem__("new_flag", False),
    "a named setting this torch lacks": lambda p: _group(p).__setitem__("new_mode", "auto"),
    "written for CUDA": lambda p: [_group(p).__setitem__(k, None) for k in ("foreach", "fused")],
}


def _changed(payload: dict, change: Any) -> dict:
    changed = copy.deepcopy(payload)
    change(changed)
    return changed


@pytest.mark.parametrize("variant", OTHER_TORCH)
def test_a_stepped_state_of_this_or_another_torch_resumes_and_steps(
    stepped: dict, tiny_data: Path, tmp_path: Path, variant: str
) -> None:
    path = tmp_path / "c.pt"
    assert _use_in_process(_bytes(_changed(stepped, OTHER_TORCH[variant])), path, tiny_data) == "ok"
    ckpt = checkpoint.load(path)
    data = load_mnist(tiny_data, ckpt.config.val_size, download=False)
    model, _, state = _build_parts(ckpt.config, ckpt, data, torch.device("cpu"), SINGLE)
    model(torch.rand(4, 28, 28)).logsumexp(1).mean().backward()
    state.optimizer.step()  # the step a damaged state would fail in
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("damage", OPTIMIZER_DAMAGE)
def test_an_optimizer_state_torch_would_fail_on_later_is_refused_on_load(
    stepped: dict, tiny_data: Path, tmp_path: Path, damage: str
) -> None:
    outcome = _use_in_process(_bytes(_changed(stepped, OPTIMIZER_DAMAGE[damage])), tmp_path / "c.pt", tiny_data)
    assert "training state is damaged (optimizer:" in outcome, outcome


def _odd(kind: str, like: torch.Tensor) -> torch.Tensor:
    if kind == "meta":
        return torch.empty(like.shape, dtype=like.dtype, device="meta")
    if kind == "sparse":
        return like.to_sparse()
    flat = like.reshape(-1)
    if kind == "nested":
        return torch.nested.nested_tensor([flat, flat[:1]])
    return flat[:1].expand(like.shape if like.numel() > 1 else (2,))  # one number in every place: stride 0


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("kind", ["meta", "sparse", "nested", "expanded"])
@pytest.mark.parametrize(
    "where",
    [
        ("model", "head.weight"),
        ("model", "head.bias"),
        ("training", "optimizer", "state", 0, "exp_avg"),
        ("training", "optimizer", "state", 0, "step"),
        ("training", "rng", 0, "cpu"),
        ("training", "data_order", "permutation"),
    ],
)
def test_a_tensor_without_plain_values_anywhere_is_one_line(
    stepped: dict, tiny_data: Path, tmp_path: Path, kind: str, where: tuple
) -> None:
    """Meta tensors (shapes without values), sparse and nested ones load with weights_only=True; the
    first check that reads them would fail with torch's own error. An expanded one (one number standing
    in every place) would make Adam's in-place update write every place at once."""
    payload = copy.deepcopy(stepped)
    parent = payload
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = _odd(kind, parent[where[-1]])
    outcome = _use_in_process(_bytes(payload), tmp_path / "c.pt", tiny_data)
    assert "is not a plain tensor of numbers" in outcome and ".".join(map(str, where)) in outcome, outcome


def test_a_long_path_to_a_shared_table_hides_nothing_below_it(stepped: dict, tiny_data: Path, tmp_path: Path) -> None:
    """A key reached first along a long path (keys are walked last first) is still walked to the end."""
    payload = copy.deepcopy(stepped)
    optimizer = payload["training"]["optimizer"]
    optimizer["state"][0]["exp_avg"] = _odd("expanded", optimizer["state"][0]["exp_avg"])
    chain: Any = optimizer
    for _ in range(6):  # the table reached first six levels down: a walk cut at depth 8 saw little of it
        chain = [chain]
    payload["zzz"] = chain
    outcome = _use_in_process(_bytes(payload), tmp_path / "c.pt", tiny_data)
    assert outcome.endswith("state.0.exp_avg is not a plain tensor of numbers"), outcome


def _shared_lists(levels: int, width: int) -> list:
    nested: list = [0]
    for _ in range(levels):
        nested = [nested] * width  # one list, repeated: unpickling keeps it shared
    return nested


@pytest.mark.parametrize(
    ("junk", "outcome"),
    [
        (_shared_lists(9, 12), "ok"),  # 12**9 paths through 10 lists: a walk along every path never ends
        (list(range(200_000)), "holds more than 100,000 values"),
    ],
    ids=["shared lists", "too many values"],
)
def test_a_small_file_of_many_values_is_read_once_or_refused(
    stepped: dict, tiny_data: Path, tmp_path: Path, junk: list, outcome: str
) -> None:
    payload = copy.deepcopy(stepped)
    payload["junk"] = junk
    (tmp_path / "c.pt").write_bytes(_bytes(payload))
    done = rnnmnist("eval", str(tmp_path / "c.pt"), "--data-dir", str(tiny_data), "--json", timeout=120)
    if outcome == "ok":
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1 and outcome in one_error_line(done.stderr)
