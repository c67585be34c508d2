"""The CPU speed work (issue 17): phases in --json, and torch's Adam stepped without importing torch._dynamo."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from rnnmnist import internals
from rnnmnist.cli.main import cli
from rnnmnist.training.optimizer import optimizer_step
from rnnmnist.training.phases import PHASES, Phases, process_started

# On a torch the shortcuts were not written for, the plain path runs and imports torch._dynamo (test_internals.py).
written_for_this_torch = pytest.mark.skipif(
    not (internals.applies("defer_dynamo_import") and internals.applies("optimizer_step")),
    reason=f"rnnmnist.internals was written for torch {internals.WRITTEN_FOR['optimizer_step'][1]}",
)
TINY_FLAGS = ["--hidden-size", "16", "--batch-size", "25", "--iters", "301", "--val-size", "100", "--device", "cpu"]


def test_train_json_reports_each_phase_and_they_add_up_to_the_wall_time(tiny_data: Path, tmp_path: Path) -> None:
    argv = ["train", "--data-dir", str(tiny_data), "--out", str(tmp_path / "run"), "--json", *TINY_FLAGS]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    phases = out["phases"]
    assert tuple(phases) == PHASES
    assert all(v >= 0 for v in phases.values())
    assert phases["train"] >= out["train_seconds"] * 0.99  # the loop holds its steps
    assert phases["evaluate"] > 0 and phases["save"] > 0 and phases["data"] > 0
    # The wall time counts from the process's start, so it holds every phase.
    assert sum(phases.values()) <= out["wall_seconds"] + 0.01


def test_phases_count_startup_as_the_time_before_training_that_no_phase_took() -> None:
    phases = Phases(started=process_started())
    with phases.timed("data"):
        pass
    assert phases.as_dict()["startup"] == 0.0  # training has not begun
    with phases.timed("train"):
        pass
    shown = phases.as_dict()
    assert shown["startup"] > 0  # this process has run a while: at least its imports
    assert shown["startup"] <= phases.wall() + 0.001  # shown to the millisecond


def _model_and_optimizer(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.LSTM(4, 8, batch_first=True))
    return model, torch.optim.Adam(model.parameters(), lr=0.01, foreach=True)


def _train(model: nn.Module, opt: torch.optim.Optimizer, step) -> None:
    torch.manual_seed(1)
    for _ in range(5):
        out, _ = model[0](torch.rand(3, 5, 4))
        opt.zero_grad()
        out.square().mean().backward()
        step(opt)


def test_optimizer_step_is_torchs_update_bit_for_bit() -> None:
    a, opt_a = _model_and_optimizer(0)
    b, opt_b = _model_and_optimizer(0)
    _train(a, opt_a, lambda o: o.step())
    _train(b, opt_b, optimizer_step)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert all(torch.equal(state_a[i]["exp_avg_sq"], state_b[i]["exp_avg_sq"]) for i in state_a)


def test_optimizer_step_keeps_step_hooks() -> None:
    model, opt = _model_and_optimizer(0)
    called = []
    opt.register_step_post_hook(lambda *args: called.append(1))
    _train(model, opt, optimizer_step)
    assert len(called) == 5


@written_for_this_torch
def test_a_training_command_never_imports_torch_dynamo(tiny_data: Path, tmp_path: Path) -> None:
    """~1 s of a 10-second run: the CLI opts in to defer it (a fresh process, as users run it)."""
    # The CLI ends its process without the interpreter's teardown, after the exit handlers: the checks run there.
    script = textwrap.dedent(
        f"""
        import atexit, sys

        def check():
            print("dynamo imported:", "torch._dynamo" in sys.modules, flush=True)

        atexit.register(check)
        from rnnmnist.cli.main import main
        sys.argv = ["rnnmnist", "train", "--data-dir", {str(tiny_data)!r}, "--out", {str(tmp_path / "run")!r},
                    "-q", *{TINY_FLAGS!r}]
        main()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dynamo imported: False" in done.stdout


@written_for_this_torch
def test_deferring_dynamo_hands_over_to_it_once_imported() -> None:
    script = textwrap.dedent(
        """
        import sys
        import torch
        from torch import nn
        from rnnmnist import internals
        from rnnmnist.training.optimizer import optimizer_step

        internals.defer_dynamo_import()
        model = nn.Linear(2, 2)
        opt = torch.optim.Adam(model.parameters())
        model(torch.ones(1, 2)).sum().backward()
        optimizer_step(opt)
        opt.load_state_dict(opt.state_dict())
        opt.zero_grad()
        print("before:", "torch._dynamo" in sys.modules)
        import torch._dynamo  # now torch.compile could run: the optimizers' methods go through dynamo again

        model(torch.ones(1, 2)).sum().backward()
        optimizer_step(opt)
        opt.load_state_dict(opt.state_dict())
        opt.zero_grad()
        print("after: ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "before: False" in done.stdout and "after: ok" in done.stdout


def test_denormals_are_flushed_in_every_thread_while_training_and_kept_after() -> None:
    """784-step backward passes ran ~14x slower on denormals; the setting must reach torch's worker threads."""
    script = textwrap.dedent(
        """
        import torch
        from rnnmnist import process

        tiny = torch.full((1_000_000,), 1e-39)  # a denormal float32, in a tensor large enough for every thread
        with process.denormals_flushed():
            print("inside:", float((tiny * 1.0).abs().max()))
        print("after, this thread:", float((tiny[:1] * 1.0).abs().max()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "inside: 0.0" in done.stdout
    assert "after, this thread: 1e-39" in done.stdout or "after, this thread: 1.0000" in done.stdout


def test_the_cpu_uses_torchs_fused_adam_and_resumes_a_foreach_state() -> None:
    from rnnmnist.config import DEFAULTS
    from rnnmnist.training.optimizer import make_optimizer

    model, old = _model_and_optimizer(0)  # a state from before: foreach kernels
    _train(model, old, optimizer_step)
    new = make_optimizer(DEFAULTS, model, torch.device("cpu"))
    assert new.defaults["fused"] is True and new.defaults["betas"] == (0.9, DEFAULTS.beta2)
    new.load_state_dict(old.state_dict())  # the saved state's kernel choice comes with it, and it steps
    _train(model, new, optimizer_step)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    fused, opt_fused = _model_and_optimizer(0)
    opt_fused = make_optimizer(dataclasses.replace(DEFAULTS, lr=0.01, beta2=0.999), fused, torch.device("cpu"))
    plain, opt_plain = _model_and_optimizer(0)
    _train(fused, opt_fused, optimizer_step)
    _train(plain, opt_plain, optimizer_step)
    for p, q in zip(fused.parameters(), plain.parameters(), strict=True):  # the same update, to rounding
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)
