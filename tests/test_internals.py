"""rnnmnist.internals: each shortcut into torch's or CPython's internals runs only on the version it was written
for, and the plain path it falls back to elsewhere gives the same results (run for real, in fresh processes,
with the guards made to see other versions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rnnmnist import internals

ROOT = Path(__file__).resolve().parents[1]
OTHER_VERSIONS = "torch=2.99,python=3.99"  # versions no shortcut was written for


def _run(script: str, *args: str, versions: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != internals.VERSIONS_ENV}
    if versions is not None:
        env[internals.VERSIONS_ENV] = versions
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    code = textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code, *args], env=env, text=True, timeout=120, **kwargs)


def test_every_shortcut_names_a_runtime_and_the_major_minor_it_was_written_for() -> None:
    for name, (runtime, version) in internals.WRITTEN_FOR.items():
        assert callable(getattr(internals, name)), name
        assert runtime in ("torch", "python")
        assert re.fullmatch(r"\d+\.\d+", version), version


def test_the_guards_compare_the_running_versions_unless_told_to_see_others(monkeypatch: pytest.MonkeyPatch) -> None:
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    running = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "torch": torch_version}
    monkeypatch.delenv(internals.VERSIONS_ENV, raising=False)
    for name, (runtime, version) in internals.WRITTEN_FOR.items():
        assert internals.applies(name) == (running[runtime] == version)
    monkeypatch.setenv(internals.VERSIONS_ENV, OTHER_VERSIONS)
    assert not any(internals.applies(name) for name in internals.WRITTEN_FOR)
    written = ",".join(f"{runtime}={version}" for runtime, version in internals.WRITTEN_FOR.values())
    monkeypatch.setenv(internals.VERSIONS_ENV, written)
    assert all(internals.applies(name) for name in internals.WRITTEN_FOR)


STEPPING = """
    import sys
    import torch
    from torch import nn
    from rnnmnist import internals
    from rnnmnist.training.optimizer import optimizer_step

    internals.defer_dynamo_import()
    torch.manual_seed(0)
    model = nn.LSTM(4, 8, batch_first=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        out, _ = model(torch.rand(3, 5, 4))
        opt.zero_grad()
        out.square().mean().backward()
        optimizer_step(opt)
    opt.load_state_dict(opt.state_dict())
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, sys.argv[1])
    print("dynamo imported:", "torch._dynamo" in sys.modules)
"""


def test_on_another_torch_the_optimizer_is_stepped_and_saved_as_torch_does_with_the_same_result(
    tmp_path: Path,
) -> None:
    """The plain path is torch's own: its wrappers import torch._dynamo, and the numbers are the same bit for bit."""
    saved = {}
    for versions in (None, OTHER_VERSIONS):
        path = tmp_path / f"{versions}.pt"
        done = _run(STEPPING, str(path), versions=versions, capture_output=True)
        assert done.returncode == 0, done.stderr[-2000:]
        fast = versions is None and internals.applies("optimizer_step")
        assert f"dynamo imported: {not fast}" in done.stdout
        saved[versions] = torch.load(path, weights_only=True)
    fast, plain = saved[None], saved[OTHER_VERSIONS]
    for key, value in fast["model"].items():
        assert torch.equal(value, plain["model"][key]), key
    for i, state in fast["optimizer"]["state"].items():
        assert all(torch.equal(state[k], plain["optimizer"]["state"][i][k]) for k in state)


EXITING = """
    import atexit, os, sys
    import torch
    from rnnmnist import internals

    class Witness:  # says so when the interpreter tears its modules down
        def __del__(self, write=os.write):
            write(2, b"torn down\\n")

    witness = Witness()
    atexit.register(print, "exit handler ran")
    print("buffered;", end=" ")  # stdout is a file: nothing is written until it is flushed
    internals.exit_without_teardown(sys.argv[1] if sys.argv[1] != "3" else 3)
"""


@pytest.mark.parametrize("code, status", [("3", 3), ("no such file", 1)])
@pytest.mark.parametrize("versions", [None, OTHER_VERSIONS])
def test_the_exit_runs_exit_handlers_flushes_and_keeps_the_status_on_any_python(
    tmp_path: Path, versions: str | None, code: str, status: int
) -> None:
    """Where it was written for, the exit skips the teardown; elsewhere it is sys.exit's, with the same outcome."""
    out = tmp_path / "stdout"
    with out.open("w") as stdout:
        done = _run(EXITING, code, versions=versions, stdout=stdout, stderr=subprocess.PIPE)
    assert done.returncode == status
    assert out.read_text() == "buffered; exit handler ran\n"
    assert (code == "no such file") == ("no such file" in done.stderr)
    fast = versions is None and internals.applies("exit_without_teardown")
    assert ("torn down" in done.stderr) != fast
