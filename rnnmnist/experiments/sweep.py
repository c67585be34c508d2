"""Hyperparameter sweeps on Optuna: a search space in TOML, each trial a normal run folder, pruning on validation.

The sweep file holds plain ``key = value`` lines (settings of every trial, as in a
``--config`` file) and a ``[search]`` table: for each config field searched, a list
of choices or a range::

    iters = 60000
    eval_every = 50                                # validation passes: what the pruner sees
    [search]
    lr = { low = 0.001, high = 0.03, log = true }  # a float range, log scale
    hidden_size = [64, 128, 256]                   # choices
    layers = { low = 1, high = 3 }                 # an int range (linear)

Trial N trains into OUT/trials/trial-NNNN/. The objective is the final model's
validation accuracy (the held-out part of the training split; the test set is
never looked at). With ``eval_every`` each validation pass is reported to the
trial, and the pruner may stop a trial early: it then keeps a resumable
checkpoint (``rnnmnist train --resume`` can finish it).

The study lives in Optuna's storage: a SQLite file OUT/study.db by default, or any
database URL (PostgreSQL for workers on several machines). Every worker started
on the same storage and study name shares the study; ``--trials N`` is the
study's total of finished (complete or pruned) trials, so a restarted sweep runs
only what is missing. Workers send a heartbeat; a trial whose worker died (killed,
machine lost) is marked failed by the next worker after two missed beats, or at once
when that worker ran on this machine (its process is gone: seen in /proc, or by
``kill -0`` elsewhere). A worker whose part is done waits for the trials other workers
are running, so that it ends when the study holds ``--trials`` finished trials, or
says how many it holds.
Optuna is imported only here (``pip install 'rnnmnist[sweep]'``; rnnmnist.extras).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnmnist import config
from rnnmnist.config import SEARCH_TABLE, Config, ConfigError
from rnnmnist.errors import RnnmnistError
from rnnmnist.extras import missing, require
from rnnmnist.files import target, write_atomic

STUDY_FILE = "study.db"
BEST_FILE = "best.toml"
TRIALS_FOLDER = "trials"
DEFAULT_STUDY = "rnnmnist"
PRUNERS = ("median", "hyperband", "none")
OPEN_ATTEMPTS = 5


def require_optuna() -> Any:
    require("rnnmnist sweep", "sweep", "optuna")
    import optuna

    return optuna


# --- the search space
@dataclass(frozen=True)
class Param:
    """One searched config field: ``choices``, or a ``low``-``high`` range (``log`` scale or linear)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if config.FIELD_TYPES[self.name] is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return " | ".join(map(str, self.choices))
        return f"{self.low:g} to {self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class SearchSpace:
    fixed: dict[str, Any]  # settings of every trial
    params: tuple[Param, ...]
    source: str  # the file, for messages

    def config(self, values: dict[str, Any], where: str = "trial") -> Config:
        return config.build((self.source, self.fixed), (where, config.length_override(values)))

    def fingerprint(self) -> str:
        """The space as canonical JSON: a study refuses to continue with another one."""
        params = [
            {"name": p.name, "choices": p.choices, "low": p.low, "high": p.high, "log": p.log} for p in self.params
        ]
        return json.dumps({"fixed": self.fixed, "params": params}, sort_keys=True)


def _param(source: str, name: str, spec: Any) -> Param:
    where = f"{source}: [{SEARCH_TABLE}] {name}"
    if name not in config.CONFIG_FIELDS:
        raise ConfigError(f"{where}: not a config key (see rnnmnist train --help)")
    kind = config.FIELD_TYPES[name]
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: the list of choices is empty")
        try:
            choices = tuple(config.check_value(name, value) for value in spec)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if len(set(choices)) != len(choices):
            raise ConfigError(f"{where}: a choice is listed twice")
        return Param(name, choices=choices)
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: give a list of choices or {{ low = ..., high = ... }} (optionally log = true)")
    if kind not in (int, float):
        raise ConfigError(f"{where}: a range needs a number field; list the choices instead")
    unknown = set(spec) - {"low", "high", "log"}
    if unknown or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range is {{ low = ..., high = ..., log = true|false }}")
    try:
        low, high = config.check_value(name, spec["low"]), config.check_value(name, spec["high"])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false")
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0")
    return Param(name, low=low, high=high, log=log)


def read_space(path: Path) -> SearchSpace:
    """Read and check a sweep file; :class:`ConfigError` names the file and the key."""
    try:
        values = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read sweep file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    search = values.pop(SEARCH_TABLE, None)
    tables = [k for k, v in values.items() if isinstance(v, dict)]
    if tables:
        raise ConfigError(f"{path}: [{tables[0]}] is not used; a sweep file has settings and a [{SEARCH_TABLE}] table")
    if not isinstance(search, dict) or not search:
        raise ConfigError(f"{path}: no [{SEARCH_TABLE}] table: what should the sweep vary? (e.g. lr = [0.01, 0.003])")
    both = sorted(set(search) & set(values))
    if both:
        raise ConfigError(f"{path}: {both[0]} is both set and searched")
    space = SearchSpace(dict(values), tuple(_param(str(path), k, v) for k, v in search.items()), str(path))
    try:
        base = space.config({}, "defaults")  # checks the fixed settings together
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    if base.val_size == 0 and "val_size" not in search:
        raise ConfigError(f"{path}: val_size = 0 leaves no validation split, the sweep's objective")
    for p in space.params:  # every value must make a valid config with the fixed settings
        for value in p.choices or (p.low, p.high):
            try:
                space.config({p.name: value}, f"[{SEARCH_TABLE}] {p.name}")
            except ConfigError as e:
                raise ConfigError(f"{path}: [{SEARCH_TABLE}] {p.name} = {value!r}: {e}") from None
    return space


# --- the study
def trials_folder(out: Path, study_name: str) -> Path:
    """OUT/trials/ for the default study; another study's trials go in OUT/trials/<its name>/."""
    return out / TRIALS_FOLDER if study_name == DEFAULT_STUDY else out / TRIALS_FOLDER / study_name


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / STUDY_FILE).resolve()}"


def open_study(
    space: SearchSpace, storage_url: str, study_name: str, pruner: Any = "median", heartbeat: int = 60
) -> Any:
    """Create or join the study; refuse one that was started with another search space."""
    optuna = require_optuna()
    from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError  # Optuna's own dependency

    kwargs: dict[str, Any] = {}
    if storage_url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # workers wait for each other's writes
    try:
        for attempt in range(OPEN_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(
                        storage_url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat, **kwargs
                    )
                study = optuna.create_study(
                    storage=storage,
                    study_name=study_name,
                    direction="maximize",
                    load_if_exists=True,
                    sampler=optuna.samplers.TPESampler(),
                    pruner=_pruner(optuna, pruner),
                )
                break
            except (IntegrityError, OperationalError):
                # Workers started at once race to create the tables (or the study): the loser finds them
                # made on its next try. A server that is down fails the same way every time.
                if attempt == OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)
    except ImportError as e:  # the database's driver (e.g. psycopg2 for PostgreSQL)
        if storage_url.startswith("postgresql"):
            raise missing(f"--storage {_safe(storage_url)}", "postgres") from None
        raise RnnmnistError(f"--storage {_safe(storage_url)}: its database driver is missing ({e})") from None
    except (SQLAlchemyError, optuna.exceptions.OptunaError, ValueError) as e:  # bad URL, server down, password
        raise RnnmnistError(f"cannot open the study in {_safe(storage_url)}: {type(e).__name__}: {e}") from None
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", space.fingerprint())
    elif stored != space.fingerprint():
        raise RnnmnistError(
            f"study {study_name!r} in {_safe(storage_url)} was started with another search space; "
            f"use another --out, --study-name or --storage"
        )
    return study


def _safe(url: str) -> str:
    """A storage URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}"


def _pruner(optuna: Any, pruner: Any) -> Any:
    if not isinstance(pruner, str):
        return pruner  # an Optuna pruner object (tests, library users)
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


# --- workers: who runs a trial, and whether that process is still alive
def worker_identity() -> dict[str, str]:
    """User attributes naming this process, set on each trial it runs: ``worker`` (host:pid), and where
    known its pid namespace and start time (a pid seen from another container, or reused, is not it)."""
    identity = {"worker": f"{socket.gethostname()}:{os.getpid()}"}
    with contextlib.suppress(OSError):
        identity["worker_pid_namespace"] = os.readlink("/proc/self/ns/pid")
    started = _process_state(os.getpid())
    if started is not None:
        identity["worker_started"] = started[1]
    return identity


def _process_state(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) of a process, from /proc; None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after "pid (command name)": the name may hold spaces
    return (fields[0], fields[19]) if len(fields) > 19 else None


def worker_alive(attrs: dict[str, Any]) -> bool | None:
    """Whether the process that ran a trial (its user ``attrs``) is alive; None when it cannot be seen from
    here (another machine or container, or no worker recorded): its heartbeat tells then."""
    worker, namespace = attrs.get("worker"), attrs.get("worker_pid_namespace")
    if not isinstance(worker, str) or not isinstance(namespace, str):
        return None
    host, _, pid_text = worker.rpartition(":")
    here = worker_identity()
    if host != socket.gethostname() or namespace != here.get("worker_pid_namespace") or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if Path("/proc/self/stat").exists():
        state = _process_state(pid)
        if state is None:
            return False  # no such process
        # A zombie (killed, not yet reaped by its parent) is dead; another start time is another process.
        return state[0] not in ("Z", "X") and attrs.get("worker_started") in (None, state[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study: Any) -> list[int]:
    """Mark failed the running trials whose worker process is seen dead (on this machine); their numbers.

    Optuna fails a dead worker's trial only when its heartbeats are overdue; on this machine a killed
    worker is seen at once, so a sweep restarted right after ``kill -9`` does not count its trial."""
    optuna = require_optuna()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if worker_alive(t.user_attrs) is not False:
            continue
        # Another worker may fail it first: then it is finished, and that is what was wanted. The note goes
        # through the study's storage, as Optuna's own fail_stale_trials does: a Study has no public way to
        # set an attribute of a trial it did not start.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            study._storage.set_trial_user_attr(t._trial_id, "note", f"its worker ({t.user_attrs['worker']}) died")
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


def counts(study: Any) -> dict[str, int]:
    """Trials of the study by state (complete, pruned, running, fail, waiting)."""
    result: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        result[t.state.name.lower()] = result.get(t.state.name.lower(), 0) + 1
    return result


def _taken(study: Any) -> int:
    """Trials that count toward --trials: finished ones, and those running now."""
    c = counts(study)
    return c.get("complete", 0) + c.get("pruned", 0) + c.get("running", 0)


def _finished(study: Any) -> int:
    c = counts(study)
    return c.get("complete", 0) + c.get("pruned", 0)


class _Reporter:
    """Reports each validation pass to the trial; a pruned trial stops the run (rnnmnist.training.events.StopEarly)."""

    def __init__(self, trial: Any) -> None:
        from rnnmnist.training.events import TrainCallbacks

        self.trial = trial
        self.pruned_at: int | None = None
        self.callbacks = type("PruningCallbacks", (TrainCallbacks,), {"on_validate": self.on_validate})()

    def on_validate(self, step: int, accuracy: float, loss: float, best: bool) -> None:
        from rnnmnist.training.events import StopEarly

        self.trial.report(accuracy, step)
        if self.trial.should_prune():
            self.pruned_at = step
            raise StopEarly


@dataclass
class TrialRow:
    number: int
    state: str  # complete, pruned, running, fail, waiting
    value: float | None  # validation accuracy (complete trials)
    params: dict[str, Any]
    folder: str | None
    steps: int | None
    note: str | None  # why pruned or failed

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "val_accuracy": self.value,
            "params": self.params,
            "folder": self.folder,
            "steps": self.steps,
            "note": self.note,
        }


def trial_rows(study: Any) -> list[TrialRow]:
    """Every trial, best first (complete trials by validation accuracy, then the others by number)."""
    rows = [
        TrialRow(
            t.number,
            t.state.name.lower(),
            t.value if t.state.name == "COMPLETE" else None,
            dict(t.params),
            t.user_attrs.get("folder"),
            t.user_attrs.get("steps"),
            t.user_attrs.get("note"),
        )
        for t in study.get_trials(deepcopy=False)
    ]
    return sorted(rows, key=lambda r: (r.value is None, -(r.value or 0), r.number))


@dataclass
class SweepResult:
    study_name: str
    storage: str
    trials_wanted: int
    ran_here: int
    rows: list[TrialRow]
    best_config: Config | None
    best_file: Path | None
    shortfall: str | None = None  # why the study holds fewer finished trials than wanted (None: it holds them)

    @property
    def finished(self) -> int:
        return sum(r.state in ("complete", "pruned") for r in self.rows)

    @property
    def counts(self) -> dict[str, int]:
        """Trials by state."""
        return count_states(self.rows)

    def to_json(self) -> dict[str, Any]:
        best = self.rows[0] if self.rows and self.rows[0].value is not None else None
        return {
            "study": self.study_name,
            "storage": _safe(self.storage),
            "trials_wanted": self.trials_wanted,
            "trials_run_by_this_worker": self.ran_here,
            "trials_finished": self.finished,
            "shortfall": self.shortfall,
            "counts": self.counts,
            "best": None if best is None else {**best.to_json(), "config_file": str(self.best_file)},
            "trials": [r.to_json() for r in self.rows],
        }


def count_states(rows: list[TrialRow]) -> dict[str, int]:
    result: dict[str, int] = {}
    for r in rows:
        result[r.state] = result.get(r.state, 0) + 1
    return result


def run_sweep(
    space: SearchSpace,
    out: Path,
    trials: int,
    storage: str | None = None,
    study_name: str = DEFAULT_STUDY,
    pruner: Any = "median",
    data_dir: Path | None = None,
    download: bool = True,
    heartbeat: int = 60,
    display: Callable[[int, dict[str, Any], Path], Any] | None = None,
    waiting: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run trials until the study holds ``trials`` finished ones; write the best config to OUT/best.toml.

    ``display(number, params, folder)`` gives a context manager yielding the
    training display of one trial (or None). A trial that diverges is marked
    failed and the sweep goes on; an interrupt marks it failed and ends the sweep
    (starting it again continues the study). When the trials left are running in other
    workers, this one waits for them (``waiting(line)`` says so), failing those whose
    worker dies; ``shortfall`` says why the study holds fewer finished trials than asked.
    """
    from rnnmnist.training.events import TrainingDiverged

    require_optuna()  # says how to install it before anything is written
    storage = _prepare_storage(out, storage)
    study = open_study(space, storage, study_name, pruner, heartbeat)
    objective = _Objective(space, trials_folder(out, study_name), data_dir, download, display)

    def enough(study: Any, _trial: Any) -> None:
        fail_dead_trials(study)
        if _taken(study) >= trials:
            study.stop()

    shortfall = _run_until_finished(
        study,
        trials,
        heartbeat,
        waiting,
        optimize=lambda: study.optimize(objective, callbacks=[enough], catch=(TrainingDiverged,)),
    )
    rows = trial_rows(study)
    best_cfg, best_file = _write_best(space, out, study_name, rows)
    return SweepResult(study_name, storage, trials, objective.ran, rows, best_cfg, best_file, shortfall)


def _prepare_storage(out: Path, storage: str | None) -> str:
    """OUT created, and the storage URL (OUT/study.db by default), its SQLite file checked to be writable."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnmnistError(f"cannot create {out}: {e.strerror or e}") from None
    storage = storage or default_storage(out)
    if storage.startswith("sqlite:///"):  # SQLite writes the file in place: a regular file, or none yet
        target(Path(storage.removeprefix("sqlite:///").partition("?")[0]), owner="sweep")
    return storage


class _Objective:
    """One trial: its values drawn from the space, trained into its own run folder; returns the
    validation accuracy (never the test set). Counts the trials this worker ran."""

    def __init__(
        self,
        space: SearchSpace,
        folder: Path,
        data_dir: Path | None,
        download: bool,
        display: Callable[[int, dict[str, Any], Path], Any] | None,
    ) -> None:
        self.space, self.folder, self.data_dir, self.download, self.display = space, folder, data_dir, download, display
        self.identity = worker_identity()
        self.ran = 0

    def __call__(self, trial: Any) -> float:
        from rnnmnist.training.lifecycle import Plan

        self.ran += 1
        params = {p.name: p.suggest(trial) for p in self.space.params}
        cfg = self.space.config(params, f"trial {trial.number}")
        folder = self.folder / f"trial-{trial.number:04d}"
        trial.set_user_attr("folder", str(folder.resolve()))
        for key, value in self.identity.items():
            trial.set_user_attr(key, value)
        plan = Plan(folder, cfg, data_dir=self.data_dir, download=self.download)
        with self.display(trial.number, params, folder) if self.display else contextlib.nullcontext() as shown:
            summary = self._train(trial, plan, shown)
        trial.set_user_attr("steps", summary.steps)
        trial.set_user_attr("val_loss", summary.val.loss)
        return summary.val.accuracy  # never the test set

    @staticmethod
    def _train(trial: Any, plan: Any, shown: Any) -> Any:
        """The trial's run, its validation passes reported; pruned or diverged, the trial says so."""
        from rnnmnist.training.events import CallbackList, StopEarly, TrainingDiverged
        from rnnmnist.training.lifecycle import train

        reporter = _Reporter(trial)
        try:
            return train(plan, CallbackList(*filter(None, [shown, reporter.callbacks])), time.perf_counter())
        except StopEarly:
            trial.set_user_attr("steps", reporter.pruned_at)
            trial.set_user_attr("note", f"pruned at step {reporter.pruned_at}")
            raise require_optuna().TrialPruned(f"pruned at step {reporter.pruned_at}") from None
        except TrainingDiverged as e:
            trial.set_user_attr("note", str(e))
            raise


def _write_best(
    space: SearchSpace, out: Path, study_name: str, rows: list[TrialRow]
) -> tuple[Config | None, Path | None]:
    """The best trial's config, written to OUT/best.toml with a header naming it; (None, None) before any completes."""
    if not rows or rows[0].value is None:
        return None, None
    best = rows[0]
    best_cfg = space.config(best.params, f"trial {best.number}")
    best_file = out / BEST_FILE
    header = (
        f"# rnnmnist sweep {study_name!r}: the best of {len(rows)} trials, trial {best.number} "
        f"(validation accuracy {best.value:.4f}); train it with: rnnmnist train --config {best_file}\n"
    )
    write_atomic(best_file, (header + config.to_toml(best_cfg)).encode("utf-8"), owner="sweep")
    return best_cfg, best_file


def _run_until_finished(
    study: Any, trials: int, heartbeat: int, waiting: Callable[[str], None] | None, optimize: Callable[[], None]
) -> str | None:
    """Run trials (``optimize``) until the study holds ``trials`` finished ones, waiting for those that other
    live workers run; the reason when it cannot (a running trial no worker of ours answers for)."""
    optuna = require_optuna()
    unclaimed_since: dict[int, float] = {}
    awaited: list[int] = []
    while True:
        fail_dead_trials(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # workers elsewhere whose heartbeats stopped
        if _finished(study) >= trials:
            return None
        if _taken(study) < trials:
            optimize()
            continue
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        now = time.monotonic()
        # A trial without a worker was not started by rnnmnist sweep (ours name theirs at once): it may never
        # be finished, and with no heartbeat it is never found stale either. Wait two beats, then say so.
        unclaimed = [t for t in running if not isinstance(t.user_attrs.get("worker"), str)]
        for t in unclaimed:
            unclaimed_since.setdefault(t.number, now)
        overdue = [t for t in unclaimed if now - unclaimed_since[t.number] > 2 * heartbeat]
        if overdue:
            return (
                f"only {_finished(study)} of {trials} trials finished: trial {overdue[0].number} is running with no "
                f"rnnmnist worker or heartbeat (started outside rnnmnist sweep?); "
                f"run the same command again when it has finished"
            )
        numbers = sorted(t.number for t in running)
        if waiting is not None and numbers != awaited:
            shown = ", ".join(f"{t.number} ({t.user_attrs.get('worker', 'no worker')})" for t in running[:5])
            waiting(f"waiting for {len(running)} trial(s) other workers are running: {shown}")
        awaited = numbers
        time.sleep(min(heartbeat, 5))
