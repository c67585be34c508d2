"""The command line: a thin click group over one module per command (``rnnmnist/commands/``).

This is the edge of the program: the only place that turns errors into one
line and an exit code, and that opts the process into what the library never
does by itself (signal handling, network time-outs; see :mod:`rnnmnist.signals`
and :mod:`rnnmnist.process`).
Heavy imports (torch, rich) happen inside commands, so ``rnnmnist --help`` never
loads them.

Exit codes: :class:`rnnmnist.errors.ExitCode` (0 success, 1 a failure the user can fix,
2 a usage error, 130/143 interrupted), documented in the CLI reference.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import click

from rnnmnist import __version__, internals, process, signals
from rnnmnist.commands.evaluate import eval_command
from rnnmnist.commands.export import export
from rnnmnist.commands.plot import plot
from rnnmnist.commands.predict import predict
from rnnmnist.commands.presets import presets
from rnnmnist.commands.runs import compare, runs
from rnnmnist.commands.serve import serve
from rnnmnist.commands.sweep import sweep
from rnnmnist.commands.train import train
from rnnmnist.config import ConfigError
from rnnmnist.errors import ExitCode, RnnmnistError, one_line


class OutputError(RnnmnistError):
    """Standard output cannot be written (closed, full disk, I/O error)."""


class _GuardedOutput:
    """Standard output that reports a failed write as :class:`OutputError` (one line, exit 1)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _call(self, name: str, *args: Any) -> Any:
        if self._stream is None:
            raise OutputError("cannot write to standard output: it is closed")
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as e:  # ValueError: the stream was closed under us
            reason = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)
            raise OutputError(f"cannot write to standard output: {reason}") from None

    def write(self, text: str) -> int:
        return self._call("write", text)

    def flush(self) -> None:
        self._call("flush")

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            if name == "isatty":
                return lambda: False
            raise AttributeError(name)
        return getattr(self._stream, name)


def _fail(message: str, code: int) -> None:
    if message:
        click.echo(f"Error: {one_line(message, 1000)}", err=True)
    sys.exit(code)


def _silence_stdout() -> None:
    """After stdout failed, the interpreter's final flush must go nowhere instead of failing again."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until the process ends
    try:
        os.dup2(sys.stdout.fileno(), 1)
    except OSError as e:
        if e.errno != errno.EBADF:
            raise


def _other_rank() -> bool:
    """In a distributed run, ranks other than 0 leave errors they share with rank 0 to rank 0."""
    return os.environ.get("RANK", "0") != "0" and os.environ.get("WORLD_SIZE", "1") != "1"


class RnnmnistGroup(click.Group):
    """Turns every error a user can cause into one line on stderr and an exit code."""

    def main(self, args: Any = None, *rest: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(args, *rest, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            path = e.ctx.command_path if e.ctx else "rnnmnist"
            _fail(f"{e.format_message()} (see '{path} --help')", ExitCode.USAGE)
        except ConfigError as e:
            _fail(str(e), ExitCode.USAGE)
        except OutputError as e:
            _silence_stdout()
            _fail(str(e), ExitCode.FAILURE)
        except RnnmnistError as e:
            from_peer = type(e).__name__ != "DistributedError" and _other_rank()
            _fail("" if from_peer else str(e), e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except signals.Interrupted as e:
            what = "stopped at once by a second signal" if e.at_once else f"interrupted ({e.name})"
            _fail(f"{what}; files already written are intact", e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted (SIGINT); files already written are intact", ExitCode.INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`rnnmnist ... | head`): say nothing more.
            _silence_stdout()
            sys.exit(ExitCode.FAILURE)
        finally:
            if standalone_mode:  # the program's own process: the command has ended, whatever happens next
                signals.default_signals()
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else ExitCode.SUCCESS)


# Every option can also come from the environment: RNNMNIST_<COMMAND>_<OPTION>, e.g. RNNMNIST_TRAIN_LR.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "auto_envvar_prefix": "RNNMNIST"}


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """rnnmnist's version, torch's, and where and in what precision `rnnmnist train` would compute here."""
    if not value or ctx.resilient_parsing:
        return
    import torch

    from rnnmnist.config import DEFAULTS
    from rnnmnist.training.device import auto_precision, resolve_device, training_precision

    device = resolve_device(DEFAULTS.device)
    if DEFAULTS.precision == "auto":
        precision, why = auto_precision(device)
    else:
        precision, why = training_precision(DEFAULTS.precision, device), "the default"
    where = f"would train on {device.type} in {precision}: {why}"
    click.echo(f"rnnmnist {__version__} (torch {torch.__version__}; {where})")
    ctx.exit()


@click.group(cls=RnnmnistGroup, context_settings=CONTEXT)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version, torch's, and the device and precision rnnmnist train would use here; exit.",
)
def cli() -> None:
    """Train, evaluate and use recurrent networks (LSTM, GRU, RNN) that read MNIST digits as sequences.

    \b
    Quick start:
      rnnmnist train --iters 100000          # the notebook's length, the improved recipe
      rnnmnist train --config seed           # the original notebook, setting for setting
      rnnmnist presets                       # the other presets: best, fast99, handwriting, ...
      rnnmnist eval runs/<run>/checkpoint.pt
      rnnmnist predict runs/<run>/checkpoint.pt --index 0 --index 7
    """


for command in (train, eval_command, predict, plot, export, serve):
    cli.add_command(command)
for command in (runs, compare, sweep):  # experiments (issue 16)
    cli.add_command(command)
cli.add_command(presets)


def main() -> None:
    """The ``rnnmnist`` program: the process-wide opt-ins, then the group."""
    signals.raise_on_signals()
    process.bound_network_waits()
    sys.stdout = _GuardedOutput(sys.stdout)
    try:
        cli(prog_name="rnnmnist")
    except SystemExit as e:
        internals.exit_without_teardown(e.code)
