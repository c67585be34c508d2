"""rnnmnist runs / compare: run folders read without weights (peek), statuses, filters, side by side."""

from __future__ import annotations

import io
import json
import pickle
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnmnist import config
from rnnmnist.cli.main import cli
from rnnmnist.config import Config
from rnnmnist.errors import CheckpointError
from rnnmnist.experiments.peek import TensorStub, peek
from rnnmnist.training import checkpoint
from rnnmnist.training.events import LogRecord, StopEarly, TrainCallbacks
from rnnmnist.training.lifecycle import Plan, train
from rnnmnist.training.rundir import RunLock

TINY = Config(hidden_size=16, batch_size=25, iters=251, val_size=100, log_every=5, device="cpu", eval_every=5)


class StopAtFirstLog(TrainCallbacks):
    def on_log(self, record: LogRecord) -> None:
        raise StopEarly


@pytest.fixture(scope="module")
def runs_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fast/ and slow/ finished (the default lr and 0.003), stopped/ resumable, group/killed/ failed."""
    root = tmp_path_factory.mktemp("runs")
    for name, cfg in (("fast", TINY), ("slow", replace(TINY, lr=0.003))):
        train(Plan(root / name, cfg, data_dir=tiny_data, download=False), None, time.perf_counter())
    with pytest.raises(StopEarly):
        train(Plan(root / "stopped", TINY, data_dir=tiny_data, download=False), StopAtFirstLog(), time.perf_counter())
    killed = root / "group" / "killed"
    killed.mkdir(parents=True)
    (killed / "config.toml").write_text('cell = "gru"\n')
    (killed / "metrics.jsonl").write_text('{"step": 5, "elapsed": 1.5}\n{"step": 10, "elapsed": 2.5}\n')
    return root


def _runs(*args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["runs", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["runs"]


def test_peek_reads_what_load_reads_without_the_weights(runs_dir: Path) -> None:
    for name in ("fast", "stopped"):
        path = runs_dir / name / "checkpoint.pt"
        raw, ckpt = peek(path), checkpoint.load(path)
        assert raw["config"] == ckpt.config.to_dict() and raw["metrics"] == ckpt.metrics
        assert raw["model"]["head.weight"] == TensorStub((10, 16))
    assert peek(runs_dir / "stopped" / "checkpoint.pt")["training"]["step"] == 5


def test_peek_refuses_what_a_checkpoint_never_holds(tmp_path: Path) -> None:
    class Shell:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"format": "rnnmnist-checkpoint", "x": Shell()}))
    with pytest.raises(CheckpointError, match=r"refusing posix\.system"):
        peek(evil)
    assert not (tmp_path / "owned").exists()
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(CheckpointError, match="not an rnnmnist checkpoint"):
        peek(tmp_path / "text.pt")
    foreign = io.BytesIO()
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weights": 1}))
    (tmp_path / "foreign.pt").write_bytes(foreign.getvalue())
    with pytest.raises(CheckpointError, match="no rnnmnist format marker"):
        peek(tmp_path / "foreign.pt")


def test_runs_lists_statuses_and_figures(runs_dir: Path) -> None:
    rows = {r["name"]: r for r in _runs(str(runs_dir))}
    assert set(rows) == {"fast", "slow", "stopped", "group/killed"}
    fast = rows["fast"]
    metrics = checkpoint.load(runs_dir / "fast" / "checkpoint.pt").metrics
    assert fast["status"] == "finished" and fast["steps"] == 10
    assert fast["test_accuracy"] == metrics["test_accuracy"]
    assert fast["best_test_accuracy"] == metrics["best"]["test_accuracy"]
    assert fast["wall_seconds"] == metrics["wall_seconds"]
    assert fast["config_diff"]["hidden_size"] == 16 and "precision" not in fast["config_diff"]
    assert rows["slow"]["config_diff"]["lr"] == 0.003
    assert rows["stopped"]["status"] == "resumable" and rows["stopped"]["steps"] == 5
    assert rows["stopped"]["test_accuracy"] is None
    killed = rows["group/killed"]
    assert killed["status"] == "failed" and killed["steps"] == 10 and killed["train_seconds"] == 2.5
    assert killed["config_diff"] == {"cell": "gru"} and "no checkpoint.pt" in killed["problem"]


def test_runs_sees_a_running_run_without_taking_its_lock(runs_dir: Path) -> None:
    lock = RunLock(runs_dir / "stopped")
    lock.acquire()
    try:
        assert {r["name"]: r["status"] for r in _runs(str(runs_dir))}["stopped"] == "running"
    finally:
        lock.release()


def test_runs_where_and_sort(runs_dir: Path) -> None:
    assert [r["name"] for r in _runs(str(runs_dir), "--where", "status=finished", "--sort", "lr")] == ["slow", "fast"]
    assert [r["name"] for r in _runs(str(runs_dir), "--where", "cell=gru")] == ["group/killed"]
    assert [r["name"] for r in _runs(str(runs_dir), "--where", "lr=0.003", "--where", "hidden-size=16")] == ["slow"]
    ranked = _runs(str(runs_dir), "--sort", "test_accuracy")
    accuracies = [r["test_accuracy"] for r in ranked if r["test_accuracy"] is not None]
    assert accuracies == sorted(accuracies, reverse=True) and ranked[-1]["test_accuracy"] is None
    table = CliRunner().invoke(cli, ["runs", str(runs_dir)])
    assert table.exit_code == 0 and "resumable" in table.output and "cell=gru" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--where", "colour=red"), "'colour' is not a config key or status"),
        (("--where", "status=done"), "status is one of finished, running, resumable, failed"),
        (("--where", "lr=fast"), "lr=fast"),
        (("--sort", "speed"), "sort by one of"),
    ],
)
def test_runs_bad_filters_are_one_line(runs_dir: Path, args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["runs", str(runs_dir), *args])
    assert result.exit_code == 2 and message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")


def test_compare_shows_what_differs_and_plots(runs_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "compare.png"
    folders = [str(runs_dir / name) for name in ("fast", "slow", "stopped")]
    result = CliRunner().invoke(cli, ["compare", *folders, "--plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["differing_keys"] == ["lr"]
    assert [r["config_differing"]["lr"] for r in report["runs"]] == [config.DEFAULTS.lr, 0.003, config.DEFAULTS.lr]
    assert report["files"] == [str(png)] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = CliRunner().invoke(cli, ["compare", *folders[:2]])
    assert "0.003" in table.output and "test accuracy" in table.output
    one = CliRunner().invoke(cli, ["compare", folders[0]])
    assert one.exit_code == 2 and "at least two" in one.output


# --- damaged folders: listed as damaged with the reason, never a traceback, never a hang
def _tiny_checkpoint(**metrics: object) -> bytes:
    from rnnmnist.training.model import SequenceClassifier

    cfg = Config(hidden_size=4, device="cpu")
    return checkpoint.to_bytes(cfg, SequenceClassifier(cfg.model), {"test_accuracy": 0.5, **metrics})


def _run_folder(root: Path, name: str, cfg_text: str = "", ckpt: bytes | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(cfg_text)
    if ckpt is not None:
        (folder / "checkpoint.pt").write_bytes(ckpt)
    return folder


def _strict_json(text: str) -> dict:
    """JSON as the standard has it: a bare NaN or Infinity is refused."""

    def refuse(word: str) -> None:
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def _with_pickle(blob: bytes, data_pkl: bytes) -> bytes:
    """``blob`` (a torch zip) with its data.pkl replaced (a valid zip: the damage reaches the unpickler)."""
    source, out = zipfile.ZipFile(io.BytesIO(blob)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in source.namelist():
            z.writestr(name, data_pkl if name.endswith("/data.pkl") else source.read(name))
    return out.getvalue()


@pytest.mark.parametrize(
    ("data_pkl", "message"),
    [
        (b"\x80\x02}K\x01a.", "AttributeError: 'dict' object has no attribute 'append'"),  # APPEND onto a dict
        (b"\x80\x02}r\xff\xff\xff\xff.", "memo index 4294967295"),  # LONG_BINPUT: was a MemoryError
        # LONG_BINPUT at 2**24: the C unpickler would grow its memo to 2**25 entries (256 MB zeroed) before the
        # format check; at 2**29 (one byte changed in a real checkpoint) 8 GB and 16 s.
        (b"\x80\x02}r\x00\x00\x00\x01.", "memo index 16777216"),
        (b"\x80\x02}q\x00(X\x06\x00\x00\x00formatX\x13\x00\x00\x00rnnmnist-checkpointq\x01u.", None),
    ],
)
def test_peek_turns_any_damaged_pickle_into_one_checkpoint_error(
    tmp_path: Path, data_pkl: bytes, message: str | None
) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(_with_pickle(_tiny_checkpoint(), data_pkl))
    if message is None:
        assert peek(path) == {"format": "rnnmnist-checkpoint"}
    else:
        with pytest.raises(CheckpointError, match="not an rnnmnist checkpoint") as e:
            peek(path)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_a_damaged_checkpoint_is_listed_as_damaged_with_the_rest(tmp_path: Path) -> None:
    blob = _tiny_checkpoint()
    _run_folder(tmp_path, "good", ckpt=blob)
    _run_folder(tmp_path, "bad", ckpt=_with_pickle(blob, b"\x80\x02}K\x01a."))
    # A metric no float holds (a crafted or damaged file): a plain int of 400 digits.
    _run_folder(tmp_path, "huge", ckpt=_tiny_checkpoint(test_loss=10**400, wall_seconds=float("nan")))
    rows = {r["name"]: r for r in _runs(str(tmp_path))}
    assert rows["good"]["status"] == "finished" and rows["good"]["test_accuracy"] == 0.5
    assert rows["bad"]["status"] == "damaged" and "not an rnnmnist checkpoint" in rows["bad"]["problem"]
    assert rows["huge"]["status"] == "finished" and rows["huge"]["test_loss"] is None
    assert rows["huge"]["wall_seconds"] is None
    compared = CliRunner().invoke(cli, ["compare", str(tmp_path / "good"), str(tmp_path / "bad")])
    assert compared.exit_code == 0, compared.output
    assert "damaged" in compared.output


def test_runs_and_compare_json_is_strict_json(tmp_path: Path) -> None:
    """TOML dates and NaN in config.toml, NaN metrics: ISO strings and null, never a bare NaN."""
    blob = _tiny_checkpoint(test_loss=float("nan"))
    _run_folder(tmp_path, "dated", "lr = 1979-05-27\nwhen = 1979-05-27T07:32:00Z\nat = 07:32:00\n", blob)
    _run_folder(tmp_path, "nan", "lr = nan\ndropout = inf\n", blob)
    result = CliRunner().invoke(cli, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in _strict_json(result.stdout)["runs"]}
    assert rows["dated"]["config"] == {"lr": "1979-05-27", "when": "1979-05-27T07:32:00+00:00", "at": "07:32:00"}
    assert rows["nan"]["config"] == {"lr": None, "dropout": None} and rows["nan"]["test_loss"] is None
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "dated"), str(tmp_path / "nan"), "--json"])
    assert result.exit_code == 0, result.output
    report = _strict_json(result.stdout)
    assert "lr" in report["differing_keys"]
    assert [r["config_differing"]["lr"] for r in report["runs"]] == ["1979-05-27", None]
    table = CliRunner().invoke(cli, ["compare", str(tmp_path / "dated"), str(tmp_path / "nan")])
    assert table.exit_code == 0 and "1979-05-27" in table.output
    assert CliRunner().invoke(cli, ["runs", str(tmp_path), "--sort", "lr"]).exit_code == 0


def test_sort_orders_mixed_types_numbers_first(tmp_path: Path) -> None:
    _run_folder(tmp_path, "a-string", 'hidden_size = "64"\n')
    _run_folder(tmp_path, "b-big", "hidden_size = 256\n")
    _run_folder(tmp_path, "c-small", "hidden_size = 32\n")
    _run_folder(tmp_path, "d-list", "hidden_size = [1, 2]\n")
    _run_folder(tmp_path, "e-damaged", "hidden_size = \n")
    names = [r["name"] for r in _runs(str(tmp_path), "--sort", "hidden_size")]
    assert names == ["c-small", "b-big", "a-string", "d-list", "e-damaged"]
    names = [r["name"] for r in _runs(str(tmp_path), "--sort", "hidden_size", "--reverse")]
    assert names == ["b-big", "c-small", "a-string", "d-list", "e-damaged"]


def test_a_step_that_is_a_bool_is_no_step_count(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, "run", "")
    (folder / "metrics.jsonl").write_text('{"step": 4, "elapsed": 1.0}\n{"step": true, "elapsed": 2.0}\n')
    (row,) = _runs(str(tmp_path))
    assert row["steps"] is None and row["train_seconds"] == 2.0


@pytest.mark.parametrize("name", ["metrics.jsonl", "checkpoint.pt", "best.pt"])
def test_runs_never_blocks_on_a_fifo_in_a_run_folder(tmp_path: Path, name: str) -> None:
    """A FIFO opened for reading waits for a writer: every file runs reads is checked to be a regular file."""
    import os
    import subprocess
    import sys

    _run_folder(tmp_path, "good", ckpt=_tiny_checkpoint())
    os.mkfifo(_run_folder(tmp_path, "fifo") / name)
    command = [sys.executable, "-m", "rnnmnist", "runs", str(tmp_path), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)  # a regression fails, not hangs
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in _strict_json(done.stdout)["runs"]}
    assert rows["good"]["status"] == "finished"
    if name == "best.pt":  # an unfinished run's extra figure: left out
        assert rows["fifo"]["status"] == "failed" and rows["fifo"]["best_val_accuracy"] is None
    else:
        assert rows["fifo"]["status"] == "damaged" and f"{name} is not a regular file" in rows["fifo"]["problem"]


# --- a property: whatever bytes checkpoint.pt holds, peek says CheckpointError or returns, and runs lists it
@pytest.fixture(scope="module")
def tiny_blob() -> bytes:
    return _tiny_checkpoint(test_loss=0.25, steps=3)


def _mutations(size: int) -> st.SearchStrategy:
    """Up to 4 bytes replaced or bits flipped, then maybe cut short."""
    edit = st.tuples(st.integers(0, size - 1), st.integers(0, 255), st.booleans())
    return st.tuples(st.lists(edit, min_size=1, max_size=4), st.none() | st.integers(0, size))


def _mutate(data: bytes, how: tuple) -> bytes:
    edits, cut = how
    mutated = bytearray(data)
    for where, byte, flip in edits:
        mutated[where] = mutated[where] ^ (1 << (byte % 8)) if flip else byte
    return bytes(mutated[:cut] if cut is not None else mutated)


def _check_mutated(tmp_path: Path, blob: bytes, data: st.DataObject) -> None:
    pkl = next(
        zipfile.ZipFile(io.BytesIO(blob)).read(n)
        for n in zipfile.ZipFile(io.BytesIO(blob)).namelist()
        if n.endswith("/data.pkl")
    )
    in_pickle = data.draw(st.booleans(), label="mutate the pickle (else the zip file)")
    if in_pickle:  # a valid zip around a damaged pickle: the damage reaches the unpickler
        damaged = _with_pickle(blob, _mutate(pkl, data.draw(_mutations(len(pkl)), label="pickle edits")))
    else:
        damaged = _mutate(blob, data.draw(_mutations(len(blob)), label="file edits"))
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    (folder / "config.toml").write_text("")
    (folder / "checkpoint.pt").write_bytes(damaged)
    try:
        assert isinstance(peek(folder / "checkpoint.pt"), dict)
    except CheckpointError as e:
        assert "\n" not in str(e)
    from rnnmnist.experiments.runs import STATUSES, read_run

    info = read_run(folder, "run", set())
    assert info.status in STATUSES
    json.dumps(info.to_json(), allow_nan=False)


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_peek_and_runs_survive_mutated_checkpoints(tmp_path: Path, tiny_blob: bytes, data: st.DataObject) -> None:
    _check_mutated(tmp_path, tiny_blob, data)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_peek_and_runs_survive_mutated_checkpoints_many(tmp_path: Path, tiny_blob: bytes, data: st.DataObject) -> None:
    _check_mutated(tmp_path, tiny_blob, data)
