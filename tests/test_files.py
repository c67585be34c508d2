"""rnnmnist.files: every file rnnmnist writes goes through one mechanism, which replaces only regular files,
follows a symbolic link to a regular file (keeping the link), and never writes another command's files in a
run, sweep or seeds folder.

Device nodes and FIFOs are made in a temporary folder (never the real /dev); the CLI is run in process where
that is enough and as a subprocess where a hang is the defect (a FIFO opened for reading blocks forever).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from clitools import copy_of, device_node, invoke, refusal_line, rnnmnist
from tinymodel import tiny_checkpoint

from rnnmnist import files
from rnnmnist.errors import RnnmnistError
from rnnmnist.files import TargetRefused, atomic_path, open_append, write_atomic
from rnnmnist.training.synthetic import tiny_train_args

# --- targets that are not regular files, made in tmp_path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def char_device(path: Path) -> Path:
    """A character device node like /dev/null, in a temporary folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    node = device_node(path.parent, "null")
    return node if node == path else node.rename(path)


def folder(path: Path) -> Path:
    path.mkdir()
    return path


NOT_REGULAR: dict[str, tuple[Callable[[Path], Path], Callable[[int], bool], str]] = {
    "fifo": (fifo, stat.S_ISFIFO, "it is a FIFO, not a regular file"),
    "char device": (char_device, stat.S_ISCHR, "it is a character device, not a regular file"),
    "folder": (folder, stat.S_ISDIR, "it is a folder, not a regular file"),
}


def untouched(path: Path, is_kind: Callable[[int], bool]) -> bool:
    return is_kind(os.lstat(path).st_mode) and not [p for p in path.parent.iterdir() if files.is_leftover(p)]


@pytest.fixture(params=list(NOT_REGULAR))
def not_regular(request: pytest.FixtureRequest) -> tuple[Callable[[Path], Path], Callable[[int], bool], str]:
    return NOT_REGULAR[request.param]


@pytest.fixture(params=["fifo", "char device"])
def special(request: pytest.FixtureRequest) -> tuple[Callable[[Path], Path], Callable[[int], bool], str]:
    """The CLI's --out options refuse a folder themselves (a usage error), so through the CLI: the others."""
    return NOT_REGULAR[request.param]


# --- the mechanism


def test_a_target_that_is_not_a_regular_file_is_refused_and_kept(tmp_path: Path, not_regular) -> None:
    make, is_kind, message = not_regular
    target = make(tmp_path / "model.onnx")
    with pytest.raises(TargetRefused, match=f"cannot write {target}: {message}"):
        write_atomic(target, b"data")
    assert untouched(target, is_kind)
    assert issubclass(TargetRefused, RnnmnistError)


def test_a_symlink_to_a_regular_file_replaces_the_file_and_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "models" / "v3.onnx"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "latest.onnx"
    link.symlink_to(Path("models") / "v3.onnx")
    write_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(Path("models") / "v3.onnx")
    assert real.read_bytes() == b"new"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # the replaced file keeps its permissions
    assert sorted(p.name for p in real.parent.iterdir()) == ["v3.onnx"]  # the temporary went beside the target


def test_a_replaced_file_keeps_its_permissions_but_never_setuid(tmp_path: Path) -> None:
    path = tmp_path / "model.ts"
    path.write_bytes(b"old")
    path.chmod(0o4755)
    write_atomic(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o755 and path.read_bytes() == b"new"


@pytest.mark.parametrize("case", ["dangling", "loop", "to fifo"])
def test_a_symlink_to_anything_else_is_refused_and_kept(tmp_path: Path, case: str) -> None:
    link = tmp_path / "out.png"
    if case == "dangling":
        link.symlink_to(tmp_path / "missing.png")
        message = "does not exist"
    elif case == "loop":
        link.symlink_to(tmp_path / "other.png")
        (tmp_path / "other.png").symlink_to(link)
        message = "loops"
    else:
        link.symlink_to(fifo(tmp_path / "pipe"))
        message = "a FIFO, not a regular file"
    with pytest.raises(TargetRefused, match=f"cannot write {link}: it is a symbolic link.*{message}"):
        write_atomic(link, b"data")
    assert link.is_symlink() and not (tmp_path / "missing.png").exists()
    assert not [p for p in tmp_path.iterdir() if files.is_leftover(p)]


@pytest.mark.parametrize(
    ("kind", "present", "name"),
    [
        ("run", "checkpoint.pt", "config.toml"),
        ("run", "config.toml", "checkpoint.pt"),
        ("run", "metrics.jsonl", "best.pt"),
        ("run", "config.toml", "run.json"),
        ("sweep", "study.db", "best.toml"),
        ("sweep", "best.toml", "study.db"),
        ("seeds", "summary.json", "summary.json"),
    ],
)
def test_a_folders_own_files_are_written_only_by_its_owner(tmp_path: Path, kind: str, present: str, name: str) -> None:
    (tmp_path / present).write_bytes(b"the folder's")
    target = tmp_path / name
    with pytest.raises(TargetRefused, match=f"cannot write {target}: .* {kind}"):
        write_atomic(target, b"an export")
    if target.exists():  # nor through a link from elsewhere
        link = tmp_path.parent / f"{tmp_path.name}-link"
        link.symlink_to(target)
        with pytest.raises(TargetRefused, match=f"cannot write {link}: .* {kind}"):
            write_atomic(link, b"an export")
    assert (tmp_path / present).read_bytes() == b"the folder's"
    write_atomic(target, b"the owner's", owner=kind)
    assert target.read_bytes() == b"the owner's"


def test_the_same_names_elsewhere_are_ordinary_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "config.toml", b"a")  # no run here: the first file of a folder makes none
    assert (tmp_path / "config.toml").read_bytes() == b"a"
    with pytest.raises(ValueError, match="owner"):
        write_atomic(tmp_path / "x", b"", owner="nobody")


def test_open_append_refuses_a_fifo_at_once_and_appends_to_a_regular_file(tmp_path: Path) -> None:
    pipe = fifo(tmp_path / "metrics.jsonl")
    with pytest.raises(TargetRefused, match="it is a FIFO"):
        open_append(pipe, owner="run")  # never blocks waiting for a reader
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    log = tmp_path / "log.jsonl"
    log.write_text("1\n")
    with open_append(log) as f:
        f.write("2\n")
    assert log.read_text() == "1\n2\n"


def test_read_text_refuses_what_is_not_a_regular_file_at_once(tmp_path: Path, not_regular) -> None:
    make, is_kind, message = not_regular
    path = make(tmp_path / "metrics.jsonl")
    with pytest.raises(RnnmnistError, match=f"cannot read {path}: {message}"):
        files.read_text(path)  # a FIFO's reader would otherwise wait for a writer forever
    assert is_kind(os.lstat(path).st_mode)
    (tmp_path / "log").write_bytes(b"ok\xff\n")
    (tmp_path / "link").symlink_to(tmp_path / "log")
    assert files.read_text(tmp_path / "link") == "ok\ufffd\n"


def test_an_interrupted_write_removes_its_temporary_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    seen = []
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        seen.append(tmp)
        Path(tmp).write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and not Path(seen[0]).exists()
    assert Path(seen[0]).parent == tmp_path and files.is_leftover(Path(seen[0]))
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_fifo_that_appears_during_the_write_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "curves.png"
    with pytest.raises(TargetRefused, match="FIFO"), atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"png")
        fifo(target)
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert not [p for p in tmp_path.iterdir() if files.is_leftover(p)]


def test_the_run_folder_writer_and_the_audit_agree_on_the_run_files() -> None:
    from rnnmnist.training import rundir

    assert set(files.OWNED["run"]) <= set(rundir.OWN_FILES)
    assert set(rundir.RUN_FILES) <= set(files.OWNED["run"])


# --- through the CLI: export, compare --plot, plot, checkpoint.save, resume, sweep


@pytest.fixture
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A copy of the session's tiny run folder (checkpoint.pt, config.toml, metrics.jsonl, run.json)."""
    source = tiny_checkpoint(tiny_data, tmp_path_factory).parent
    return Path(shutil.copytree(source, tmp_path / "run"))


def export(run: Path, out: Path) -> Result:
    return invoke("export", str(run / "checkpoint.pt"), "--format", "torchscript", "--out", str(out))


def test_export_onto_a_target_that_is_not_a_regular_file(run: Path, tmp_path: Path, special) -> None:
    make, is_kind, message = special
    target = make(tmp_path / "model.ts")
    assert refusal_line(export(run, target)) == f"Error: cannot write {target}: {message}"
    assert untouched(target, is_kind)


def test_export_through_a_symlink_replaces_its_target(run: Path, tmp_path: Path) -> None:
    real = tmp_path / "model-v1.ts"
    real.write_bytes(b"old")
    link = tmp_path / "model.ts"
    link.symlink_to(real)
    result = export(run, link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and real.read_bytes()[:2] == b"PK"  # TorchScript is a zip archive


def test_export_never_writes_a_runs_own_files(run: Path, tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for name in ("config.toml", "metrics.jsonl", "run.json", "best.pt"):
        line = refusal_line(export(run, run / name))
        assert line.startswith(f"Error: cannot write {run / name}: ") and "run" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert refusal_line(export(run, run / "config.toml")) == (
        f"Error: cannot write {run / 'config.toml'}: {run} is an rnnmnist run folder and config.toml is its own file "
        f"(only rnnmnist train writes it); choose another name"
    )
    assert export(run, run / "checkpoint.ts").exit_code == 0  # beside the checkpoint, as by default


def test_compare_plot_onto_a_target_that_is_not_a_regular_file(run: Path, tmp_path: Path, special) -> None:
    pytest.importorskip("matplotlib")
    make, is_kind, message = special
    other = Path(shutil.copytree(run, tmp_path / "other"))
    target = make(tmp_path / "both.png")
    line = refusal_line(invoke("compare", str(run), str(other), "--plot", str(target)))
    assert line == f"Error: cannot write {target}: {message}"
    assert untouched(target, is_kind)


def test_compare_plot_never_writes_a_runs_own_files(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    other = Path(shutil.copytree(run, tmp_path / "other"))
    before = (run / "config.toml").read_bytes()
    line = refusal_line(invoke("compare", str(run), str(other), "--plot", str(run / "config.toml")))
    assert line.startswith(f"Error: cannot write {run / 'config.toml'}: ")
    assert (run / "config.toml").read_bytes() == before


def test_compare_plot_through_a_symlink(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    other = Path(shutil.copytree(run, tmp_path / "other"))
    (tmp_path / "real.png").write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "real.png")
    assert invoke("compare", str(run), str(other), "--plot", str(link)).exit_code == 0
    assert link.is_symlink() and (tmp_path / "real.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_onto_a_target_that_is_not_a_regular_file(run: Path, tmp_path: Path, tiny_data: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "figures"
    out.mkdir()
    target = fifo(out / "curves.png")
    line = refusal_line(invoke("plot", str(run), "--out", str(out), "--data-dir", str(tiny_data)))
    assert line == f"Error: cannot write {target}: it is a FIFO, not a regular file"
    assert stat.S_ISFIFO(os.lstat(target).st_mode)


def test_checkpoint_save_onto_a_target_that_is_not_a_regular_file(run: Path, tmp_path: Path, not_regular) -> None:
    from rnnmnist.training import checkpoint

    make, is_kind, message = not_regular
    model, ckpt = checkpoint.load_model(run / "checkpoint.pt")
    target = make(tmp_path / "checkpoint.pt")
    with pytest.raises(TargetRefused, match=message):
        checkpoint.save(target, ckpt.config, model, {})
    assert untouched(target, is_kind)
    checkpoint.save(run / "checkpoint.pt", ckpt.config, model, {})  # the run's own writer may


@pytest.fixture
def stopped(stopped_run: tuple[Path, bytes], tmp_path: Path) -> Path:
    """A copy of a run stopped by SIGTERM after its first logged step: resumable."""
    return copy_of(stopped_run, tmp_path / "stopped")


def test_resume_with_a_fifo_for_its_metrics_is_refused_not_hung(stopped: Path, tiny_data: Path) -> None:
    (stopped / "metrics.jsonl").unlink()
    pipe = fifo(stopped / "metrics.jsonl")
    done = rnnmnist("train", "--resume", str(stopped), "--data-dir", str(tiny_data), timeout=240)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    # Refused before the run reads or appends to it: a resumed run writes its metrics there too.
    assert done.stderr.strip() == f"Error: cannot write {pipe}: it is a FIFO, not a regular file"
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


def test_sweep_refuses_a_study_db_that_is_not_a_regular_file(tmp_path: Path, tiny_data: Path) -> None:
    pytest.importorskip("optuna")
    space = tmp_path / "space.toml"
    space.write_text("iters = 51\nbatch_size = 25\nval_size = 100\nhidden_size = 8\n[search]\nlr = [0.01, 0.02]\n")
    out = folder(tmp_path / "sweep")
    pipe = fifo(out / "study.db")
    args = ("sweep", "--config", str(space), "--out", str(out), "--data-dir", str(tiny_data), "--trials", "1")
    done = rnnmnist(*args, timeout=240)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == f"Error: cannot write {pipe}: it is a FIFO, not a regular file"
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode) and not (out / "trials").exists()


def test_train_tensorboard_refuses_a_tensorboard_that_is_not_a_folder(tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    out = folder(tmp_path / "run")
    pipe = fifo(out / "tensorboard")
    result = invoke(*tiny_train_args(tiny_data, out), "--tensorboard")
    assert refusal_line(result) == f"Error: cannot write into {pipe}: it is a FIFO, not a folder"
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


@pytest.mark.parametrize("command", ["plot", "compare --plot"])
def test_a_fifo_for_metrics_is_refused_not_hung(run: Path, tmp_path: Path, tiny_data: Path, command: str) -> None:
    pytest.importorskip("matplotlib")
    other = Path(shutil.copytree(run, tmp_path / "other"))
    (run / "metrics.jsonl").unlink()
    pipe = fifo(run / "metrics.jsonl")
    if command == "plot":
        args = ["plot", str(run), "--out", str(tmp_path / "figures"), "--data-dir", str(tiny_data)]
    else:
        args = ["compare", str(other), str(run), "--plot", str(tmp_path / "both.png")]
    done = rnnmnist(*args, timeout=240)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{pipe}: it is a FIFO, not a regular file" in done.stderr.strip().splitlines()[-1]
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
