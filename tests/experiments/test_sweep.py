"""rnnmnist sweep: search spaces, trials as run folders, pruning, a shared study, workers that die."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnmnist import config
from rnnmnist.cli.main import cli
from rnnmnist.config import ConfigError
from rnnmnist.training import checkpoint

optuna = pytest.importorskip("optuna")
sqlalchemy_exc = pytest.importorskip("sqlalchemy.exc")  # Optuna's own dependency

from rnnmnist.experiments.sweep import open_study, read_space, run_sweep, worker_identity  # noqa: E402 - needs optuna

TINY = """\
iters = 251
batch_size = 25
val_size = 100
log_every = 5
eval_every = 5
hidden_size = 8
device = "cpu"
"""


def _space(tmp_path: Path, search: str, settings: str = TINY, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(settings + "[search]\n" + search)
    return path


def _study(out: Path, name: str = "rnnmnist") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("colour = [1, 2]\n", "[search] colour: not a config key"),
        ("cell = { low = 1, high = 2 }\n", "a range needs a number field"),
        ("lr = { low = 0.1, high = 0.01 }\n", "low (0.1) must be below high (0.01)"),
        ("weight_decay = { low = 0.0, high = 0.1, log = true }\n", "a log range needs low > 0"),
        ('cell = ["lstm", "transformer"]\n', "cell must be one of lstm, gru, rnn"),
        ("hidden_size = [8]\n", "hidden_size is both set and searched"),
        ("lr = { low = 0.01, hi = 0.1 }\n", "a range is { low = ..., high = ..., log = true|false }"),
    ],
)
def test_bad_search_spaces_name_the_key(tmp_path: Path, search: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        read_space(_space(tmp_path, search))
    assert message in str(e.value) and str(tmp_path / "space.toml") in str(e.value)


def test_every_searched_value_makes_a_config_with_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[search\] iters = 10: .*iters=10 with batch_size=25 runs no step"):
        read_space(_space(tmp_path, "iters = [10, 251]\n", TINY.replace("iters = 251\n", "")))


def test_a_bad_sweep_file_is_a_usage_error(tmp_path: Path) -> None:
    space = tmp_path / "nothing.toml"
    space.write_text("lr = 0.01\n")
    result = CliRunner().invoke(cli, ["sweep", "--config", str(space), "--trials", "1"])
    assert result.exit_code == 2 and "no [search] table" in result.output and result.output.count("\n") == 1


def test_without_optuna_it_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    space = _space(tmp_path, "lr = [0.01, 0.003]\n")
    result = CliRunner().invoke(cli, ["sweep", "--config", str(space), "--trials", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output == "Error: rnnmnist sweep needs the sweep extra: pip install 'rnnmnist[sweep]'\n"


def test_a_tiny_sweep_continues_and_writes_the_best_config(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    space = _space(
        tmp_path,
        "lr = { low = 0.003, high = 0.03, log = true }\nhidden_size = [8, 16]\n",
        TINY.replace("hidden_size = 8\n", ""),
    )
    args = ["sweep", "--config", str(space), "--out", str(out), "--data-dir", str(tiny_data), "--no-download"]
    result = CliRunner().invoke(cli, [*args, "--trials", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == {"complete": 2} and report["trials_run_by_this_worker"] == 2
    for trial in report["trials"]:
        ckpt = checkpoint.load(Path(trial["folder"]) / "checkpoint.pt")  # a normal, finished run folder
        assert ckpt.training is None and ckpt.config.lr == trial["params"]["lr"]
        assert ckpt.config.hidden_size == trial["params"]["hidden_size"] and ckpt.config.iters == 251
        assert trial["val_accuracy"] == ckpt.metrics["val_accuracy"]  # the objective: validation, not test
    best = report["trials"][0]
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in report["trials"])
    # best.toml is ready to train: the best trial's config.
    best_cfg = config.build(("best", config.read_toml(out / "best.toml")))
    trained = config.build(("trial", config.read_toml(Path(best["folder"]) / "config.toml")))
    assert best_cfg == replace(trained, precision="auto")  # the folder's config has precision resolved
    # The same command again continues the study: one more trial makes three.
    result = CliRunner().invoke(cli, [*args, "--trials", "3", "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["trials_run_by_this_worker"] == 1 and again["counts"] == {"complete": 3}
    assert len({t["folder"] for t in again["trials"]}) == 3
    # Another search space in the same study is refused.
    other = _space(tmp_path, "lr = [0.01, 0.02]\n", name="other.toml")
    result = CliRunner().invoke(cli, ["sweep", "--config", str(other), "--out", str(out), "--trials", "4"])
    assert result.exit_code == 1 and "was started with another search space" in result.output


def test_pruned_trials_stop_early_and_stay_resumable(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    space = read_space(_space(tmp_path, "lr = [0.01]\n"))
    always = optuna.pruners.ThresholdPruner(lower=1.01)  # every validation accuracy is below: prune at once
    result = run_sweep(space, out, 1, study_name="pruned", pruner=always, data_dir=tiny_data, download=False)
    (row,) = result.rows
    assert row.state == "pruned" and row.note == "pruned at step 5" and row.steps == 5
    assert Path(row.folder) == (out / "trials" / "pruned" / "trial-0000").resolve()
    assert checkpoint.load(Path(row.folder) / "checkpoint.pt").training["step"] == 5  # resumable
    assert result.best_file is None and not (out / "best.toml").exists()
    assert _study(out, "pruned").trials[0].intermediate_values == {5: pytest.approx(row_value(out))}


def row_value(out: Path) -> float:
    lines = (out / "trials" / "pruned" / "trial-0000" / "metrics.jsonl").read_text().splitlines()
    return next(json.loads(line)["val_accuracy"] for line in lines if "val_accuracy" in line)


def _pid(trial: optuna.trial.FrozenTrial) -> str:
    """ ":PID" of the worker (host:pid) that ran ``trial``."""
    worker = trial.user_attrs.get("worker", "")
    return worker[worker.rfind(":") :]


@pytest.mark.slow  # two fresh processes importing torch and Optuna: 30-80 s on 2 busy cores
def test_two_workers_share_the_study_and_a_killed_one_leaves_it_usable(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    # 1,000 steps a trial (seconds on a quiet machine), so that the two workers' trials overlap and one is
    # caught running: with 40 steps, trials could all finish between two looks at the study.
    space = _space(tmp_path, "lr = { low = 0.003, high = 0.03, log = true }\n", TINY.replace("251", "25001"))
    args = ["sweep", "--config", str(space), "--out", str(out), "--data-dir", str(tiny_data), "--no-download"]
    args += ["--trials", "3", "--heartbeat", "1", "--pruner", "none", "-q"]
    workers = [
        subprocess.Popen([sys.executable, "-m", "rnnmnist", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    pids = {f":{w.pid}": w for w in workers}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until a worker is in the middle of a trial: it will be killed
            running = []
            if (out / "study.db").exists():
                # The study is being created: not there yet, or its tables half made (the workers retry the same).
                with contextlib.suppress(KeyError, optuna.exceptions.OptunaError, sqlalchemy_exc.SQLAlchemyError):
                    running = [
                        t
                        for t in _study(out).get_trials(states=[optuna.trial.TrialState.RUNNING])
                        if _pid(t) in pids and (Path(t.user_attrs["folder"]) / "metrics.jsonl").exists()
                    ]
            if running:
                break
            time.sleep(0.2)
        assert running, "no worker started a trial"
        victim = pids[_pid(running[0])]
        survivor = next(w for w in workers if w is not victim)
        victim.kill()
        killed_at = time.monotonic()
        _, err = survivor.communicate(timeout=120)
        assert survivor.returncode == 0, err.decode()
        # The survivor saw the victim's process gone (on this machine, no heartbeat to wait for), failed its
        # trial and ran one more itself: it ends with the study holding --trials finished trials.
        finished = _study(out).trials
        dead = next(t for t in finished if t.number == running[0].number)
        assert dead.state == optuna.trial.TrialState.FAIL and "died" in dead.user_attrs["note"]
        assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in finished) >= 3
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.communicate()
    # A third worker after two missed heartbeats (the grace period, 2 s) fails the dead worker's trial and
    # fills the study up. SQLite keeps heartbeat times to the whole second, so a trial reads as stale only
    # once the clock's second is 3 past its last heartbeat's: wait that long after the kill, plus a margin.
    time.sleep(max(0.0, killed_at + 3.5 - time.monotonic()))
    result = CliRunner().invoke(cli, [*args[:-1], "--json"])
    assert result.exit_code == 0, result.output
    trials = _study(out).trials
    killed = next(t for t in trials if t.number == running[0].number)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 3, [(t.number, t.state.name, _pid(t), t.datetime_complete) for t in trials]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["folder"] for t in trials}) == len(trials)  # disjoint run folders
    # Both workers, alive at once, took trials of the one study.
    assert all(any(t.user_attrs["worker"].endswith(f":{w.pid}") for t in trials) for w in workers)
    assert (out / "best.toml").exists()


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (its own data folder and port), stopped afterwards."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl): apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="PostgreSQL's driver is not installed: pip install psycopg2-binary")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="rnnmnist-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "rnnmnist", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -F"
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql+psycopg2://rnnmnist@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # starts a PostgreSQL server
def test_workers_on_two_machines_share_a_postgresql_study(tiny_data: Path, tmp_path: Path, postgres_url: str) -> None:
    space = _space(tmp_path, "lr = { low = 0.003, high = 0.03, log = true }\n")
    args = ["sweep", "--config", str(space), "--storage", postgres_url, "--study-name", "rows"]
    args += ["--data-dir", str(tiny_data), "--no-download", "--json"]
    # Two "machines": each its own --out (its trial folders), one study in the database server.
    first = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a"), "--trials", "2"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b"), "--trials", "3"])
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout)
    assert report["counts"] == {"complete": 3} and report["trials_run_by_this_worker"] == 1
    assert report["storage"].startswith("postgresql+psycopg2://rnnmnist")
    folders = sorted(t["folder"] for t in report["trials"])
    assert [Path(f).parents[2].name for f in folders] == ["a", "a", "b"]  # OUT/trials/rows/trial-N
    assert not (tmp_path / "a" / "study.db").exists()


# --- a worker killed with kill -9 (its trial still "running", its heartbeat still fresh) and a restart at once
def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _orphan_trial(out: Path, space: Path, worker: str, heartbeat: bool = True) -> int:
    """A RUNNING trial in OUT's study, as a worker left it when killed mid-trial; its number."""
    study = open_study(read_space(space), f"sqlite:///{(out / 'study.db').resolve()}", "rnnmnist", "none", 1)
    with warnings.catch_warnings():  # Optuna: a heartbeat storage "is supposed to be used with Study.optimize"
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    for key, value in {**worker_identity(), "worker": worker}.items():  # as a worker names itself
        trial.set_user_attr(key, value)
    trial.set_user_attr("folder", str((out / "trials" / f"trial-{trial.number:04d}").resolve()))
    if heartbeat:
        study._storage.record_heartbeat(trial._trial_id)  # as the dead worker's heartbeat thread did
    return trial.number


def test_a_restart_right_after_a_worker_was_killed_fails_its_trial_and_runs_one(
    tiny_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    space = _space(tmp_path, "lr = [0.01]\n")
    orphan = _orphan_trial(out, space, f"{socket.gethostname()}:{_dead_pid()}")
    args = ["sweep", "--config", str(space), "--out", str(out), "--data-dir", str(tiny_data), "--no-download"]
    result = CliRunner().invoke(cli, [*args, "--trials", "1", "--heartbeat", "60", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == {"complete": 1, "fail": 1} and report["trials_run_by_this_worker"] == 1
    dead = next(t for t in report["trials"] if t["number"] == orphan)
    assert dead["state"] == "fail" and "died" in dead["note"]
    assert (out / "best.toml").exists()


def test_a_trial_running_elsewhere_is_waited_for_until_its_heartbeat_stops(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    space = _space(tmp_path, "lr = [0.01]\n")
    _orphan_trial(out, space, "another-machine:4242")  # its liveness cannot be seen from here: its heartbeat can
    args = ["sweep", "--config", str(space), "--out", str(out), "--data-dir", str(tiny_data), "--no-download"]
    result = CliRunner().invoke(cli, [*args, "--trials", "1", "--heartbeat", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"complete": 1, "fail": 1}


def test_fewer_finished_trials_than_asked_is_exit_1(tiny_data: Path, tmp_path: Path) -> None:
    """A running trial that is no sweep worker's (no worker, no heartbeat) is not waited for forever."""
    out = tmp_path / "sweep"
    out.mkdir()
    space = _space(tmp_path, "lr = [0.01]\n")
    study = open_study(read_space(space), f"sqlite:///{(out / 'study.db').resolve()}", "rnnmnist", "none", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        study.ask()  # e.g. a script's study.ask() never told
    args = ["sweep", "--config", str(space), "--out", str(out), "--data-dir", str(tiny_data), "--no-download"]
    result = CliRunner().invoke(cli, [*args, "--trials", "1", "--heartbeat", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "Error: only 0 of 1 trials finished: trial 0 is running with no rnnmnist worker or heartbeat "
        "(started outside rnnmnist sweep?); run the same command again when it has finished"
    )
