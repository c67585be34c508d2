"""Options that several commands share, declared once, and the :class:`Common` object they fill.

Shared options are not passed to the command function: click stores them on the
context's :class:`Common` (``ctx.obj``), which the command takes with
``@pass_common``. Only this layer (the CLI) renders and exits.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rnnmnist import config
from rnnmnist.config import CONFIG_FIELDS, DEFAULTS, ConfigError

if TYPE_CHECKING:
    from rnnmnist.cli.ui import Ui

DATA_ENV = "RNNMNIST_DATA_DIR"


class FiniteFloat(click.FloatRange):
    """A float option: a finite number, optionally within a range. Every float option of every command
    uses it: click's FloatRange lets ``nan`` through (NaN fails every comparison, so no bound refuses it),
    and an unbounded float would take ``inf``."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()


@dataclass
class Common:
    """The shared options of one command invocation."""

    data_dir: Path | None = None  # None: not given (a command picks its default: ./data, or the run's)
    download: bool = True
    as_json: bool = False
    quiet: bool = False
    verbose: bool = False
    device: str = "auto"

    @property
    def verbosity(self) -> int:
        if self.quiet and self.verbose:
            raise click.UsageError("--quiet and --verbose contradict each other")
        return -1 if self.quiet else 1 if self.verbose else 0

    def ui(self) -> Ui:
        from rnnmnist.cli.ui import Ui

        return Ui(json_mode=self.as_json, verbosity=self.verbosity)

    def data_folder(self, default: Path = Path("data")) -> Path:
        return self.data_dir if self.data_dir is not None else default


pass_common = click.make_pass_decorator(Common, ensure=True)


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    setattr(ctx.ensure_object(Common), param.name, value)
    return value


def _shared(*decls: str, **attrs: Any) -> Callable[[Any], Any]:
    return click.option(*decls, expose_value=False, callback=_store, **attrs)


def data_options(func: Any) -> Any:
    func = _shared(
        "--download/--no-download",
        "download",
        default=True,
        show_default=True,
        help="Download MNIST into --data-dir when its files are missing.",
    )(func)
    return _shared(
        "--data-dir",
        "data_dir",
        type=GivenPath(file_okay=False, path_type=Path),
        default=None,
        envvar=DATA_ENV,
        show_envvar=True,
        help="Folder holding MNIST/raw/ (torchvision's layout); an existing copy is used offline. [default: data]",
    )(func)


def output_options(func: Any) -> Any:
    func = _shared("-v", "--verbose", "verbose", is_flag=True, help="Also show settings and details.")(func)
    func = _shared("-q", "--quiet", "quiet", is_flag=True, help="Show results only: no progress or logs.")(func)
    return _shared(
        "--json",
        "as_json",
        is_flag=True,
        help="Print JSON on stdout (stable schema: see the docs, Reliability); human output goes to stderr.",
    )(func)


def device_option(func: Any) -> Any:
    return _shared(
        "--device",
        "device",
        type=click.Choice(config.DEVICES),
        default=DEFAULTS.device,
        show_default=True,
        help="Where to run: auto picks cuda, then mps, then cpu.",
    )(func)


FINAL_CHECKPOINT = "checkpoint.pt"  # what a run folder stands for: its final model (best.pt is named when wanted)


class GivenPath(click.Path):
    """A path. An empty one (an unset shell variable, say) is refused rather than read as the current
    folder, and so is a file's path ending in a slash, ``.`` or ``..``, which name a folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("it is empty: give a path", param, ctx)
        if isinstance(value, str) and not self.dir_okay and os.path.basename(value) in ("", ".", ".."):
            self.fail(f"{value!r} names a folder (it ends in a slash, . or ..): give a file's path", param, ctx)
        return super().convert(value, param, ctx)


class RunOrCheckpoint(click.ParamType):
    """A checkpoint file or a run folder (standing for its checkpoint.pt). With ``folder`` (commands that
    read a run's other files) a run folder stays a folder and a checkpoint must lie in one."""

    name = "run_or_checkpoint"

    def __init__(self, folder: bool = False) -> None:
        self.folder = folder

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = click.Path(exists=True, path_type=Path).convert(value, param, ctx)
        if path.is_dir():
            if self.folder:
                return path
            if (path / FINAL_CHECKPOINT).is_file():
                return path / FINAL_CHECKPOINT
            best = f" (it has best.pt: give {path / 'best.pt'})" if (path / "best.pt").is_file() else ""
            self.fail(f"{_shown(path)} is a folder without {FINAL_CHECKPOINT}{best}: give a run folder or a checkpoint")
        # Anything else is read as a checkpoint, whose loading names what is wrong with it (a FIFO, a device).
        if self.folder:
            folder = path.parent
            if not (folder / "metrics.jsonl").is_file():
                self.fail(f"{_shown(path)} is not in a run folder (no metrics.jsonl beside it): give the run folder")
        return path


def _shown(path: Path) -> str:
    return click.format_filename(path)


checkpoint_argument = click.argument("checkpoint", type=RunOrCheckpoint())


def _check_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    try:
        return config.check_value(param.name, value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


def _config_option(name: str) -> Callable[[Any], Any]:
    f = CONFIG_FIELDS[name]
    default = getattr(DEFAULTS, name)
    shown = str(default).lower() if isinstance(default, bool) else default
    text = f.metadata["help"]
    help_text = f"{text[0].upper()}{text[1:]}. [default: {shown}]"
    flag = "--" + name.replace("_", "-")
    kind = config.FIELD_TYPES[name]
    if kind is bool:
        return click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=help_text)
    allowed = config.choices(name)
    click_type = click.Choice(allowed) if allowed else {int: click.INT, float: FiniteFloat()}[kind]
    return click.option(flag, name, type=click_type, default=None, callback=_check_flag, help=help_text)


def config_options(func: Any) -> Any:
    """One flag per Config field; help and defaults come from the dataclass."""
    for name in reversed(CONFIG_FIELDS):
        func = _config_option(name)(func)
    return func


def flags_by_source(ctx: click.Context, flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Config flags that were set, split into (from the environment, typed on the command line)."""
    from_env, typed = {}, {}
    for name, value in flags.items():
        if value is None:
            continue
        source = ctx.get_parameter_source(name)
        (from_env if source == click.core.ParameterSource.ENVIRONMENT else typed)[name] = value
    return from_env, typed
