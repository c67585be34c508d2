"""The command line: a thin click group. Heavy imports (torch, rich) happen inside commands,
so ``rnnmnist --help`` never loads them.

Exit codes: 0 success; 1 a failure the user can fix (data, checkpoint, gate not
met); 2 a usage error (bad flag, bad config file); 130/143 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rnnmnist import __version__, config
from rnnmnist.config import CONFIG_FIELDS, DEFAULTS, EVAL_BATCH_SIZE, ConfigError
from rnnmnist.errors import RnnmnistError
from rnnmnist.signals import StoppedAtOnce

if TYPE_CHECKING:  # the real imports are inside the commands, to keep --help free of torch
    from rnnmnist.checkpoint import Checkpoint
    from rnnmnist.rundir import RunDir
    from rnnmnist.ui import Ui

DATA_ENV = "RNNMNIST_DATA_DIR"


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _fail(message: str, code: int) -> None:
    if message:
        click.echo(f"Error: {_one_line(message)}", err=True)
    sys.exit(code)


def _other_rank() -> bool:
    """In a distributed run, ranks other than 0 leave errors they share with rank 0 to rank 0."""
    return os.environ.get("RANK", "0") != "0" and os.environ.get("WORLD_SIZE", "1") != "1"


class RnnmnistGroup(click.Group):
    """Turns every error a user can cause into one line on stderr and an exit code."""

    def main(self, args: Any = None, *rest: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        self.invocation = list(sys.argv[1:] if args is None else args)  # for train --nproc to relaunch
        try:
            rv = super().main(args, *rest, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            path = e.ctx.command_path if e.ctx else "rnnmnist"
            _fail(f"{e.format_message()} (see '{path} --help')", 2)
        except ConfigError as e:
            _fail(str(e), 2)
        except RnnmnistError as e:
            from_peer = type(e).__name__ != "DistributedError" and _other_rank()
            _fail("" if from_peer else str(e), e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        except StoppedAtOnce as e:
            _fail("stopped at once by a second signal; files already written are intact", 128 + e.signum)
        except BrokenPipeError:
            # The reader went away (`rnnmnist ... | head`): say nothing more, and let the
            # interpreter's final flush go nowhere instead of failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


# Every option can also come from the environment: RNNMNIST_<COMMAND>_<OPTION>, e.g. RNNMNIST_TRAIN_LR.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "auto_envvar_prefix": "RNNMNIST"}


@click.group(cls=RnnmnistGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="rnnmnist", message="%(prog)s %(version)s")
def cli() -> None:
    """Train, evaluate and use recurrent networks (LSTM, GRU, RNN) that read MNIST digits as sequences.

    \b
    Quick start:
      rnnmnist train --iters 100000          # the notebook's length, the improved recipe
      rnnmnist train --config configs/seed.toml   # the original notebook, setting for setting
      rnnmnist eval runs/<run>/checkpoint.pt
      rnnmnist predict runs/<run>/checkpoint.pt --index 0 --index 1
    """


# --- options shared by commands


def _check_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    try:
        return config.check_value(param.name, value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


def _config_option(name: str) -> Any:
    f = CONFIG_FIELDS[name]
    default = getattr(DEFAULTS, name)
    shown = str(default).lower() if isinstance(default, bool) else default
    text = f.metadata["help"]
    help_text = f"{text[0].upper()}{text[1:]}. [default: {shown}]"
    flag = "--" + name.replace("_", "-")
    if f.type == "bool":
        return click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=help_text)
    choices = f.metadata["choices"]
    kind = click.Choice(choices) if choices else {"int": click.INT, "float": click.FLOAT}[f.type]
    return click.option(flag, name, type=kind, default=None, callback=_check_flag, help=help_text)


def config_options(func: Any) -> Any:
    """One flag per Config field; help and defaults come from the dataclass."""
    for name in reversed(CONFIG_FIELDS):
        func = _config_option(name)(func)
    return func


def data_options(func: Any) -> Any:
    func = click.option(
        "--download/--no-download",
        default=True,
        show_default=True,
        help="Download MNIST into --data-dir when its files are missing.",
    )(func)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("data"),
        envvar=DATA_ENV,
        show_envvar=True,
        show_default=True,
        help="Folder holding MNIST/raw/ (torchvision's layout); an existing copy is used offline.",
    )(func)


def json_option(func: Any) -> Any:
    func = click.option("-v", "--verbose", "verbose", is_flag=True, help="Also show settings and details.")(func)
    func = click.option("-q", "--quiet", "quiet", is_flag=True, help="Show results only: no progress or logs.")(func)
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print JSON on stdout (a stable schema, see README); human output goes to stderr.",
    )(func)


def _verbosity(quiet: bool, verbose: bool) -> int:
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose contradict each other")
    return -1 if quiet else 1 if verbose else 0


def _ui(as_json: bool, quiet: bool, verbose: bool) -> Any:
    from rnnmnist.ui import Ui

    return Ui(json_mode=as_json, verbosity=_verbosity(quiet, verbose))


def device_option(func: Any) -> Any:
    return click.option(
        "--device",
        type=click.Choice(config.DEVICES),
        default=DEFAULTS.device,
        show_default=True,
        help="Where to run: auto picks cuda, then mps, then cpu.",
    )(func)


checkpoint_argument = click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))


# --- train


def resolve_config(config_file: Path | None, flags: dict[str, Any]) -> config.Config:
    """Defaults < --config FILE < flags given on the command line."""
    given = {k: v for k, v in flags.items() if v is not None}
    if "iters" in given and "epochs" in given:
        raise click.UsageError("give --iters or --epochs, not both")
    if "iters" in given:
        given["epochs"] = 0.0  # --iters on the command line beats epochs from a config file
    sources = []
    if config_file is not None:
        sources.append((str(config_file), config.read_toml(config_file)))
    sources.append(("command line", given))
    return config.build(*sources)


def _default_out_dir() -> Path:
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


TRAIN_EXAMPLES = """\b
Examples:
  rnnmnist train --iters 100000                  # 781 steps, as the notebook
  rnnmnist train --config configs/seed.toml      # the notebook exactly
  rnnmnist train --config configs/seed.toml --iters 200000
  rnnmnist train --epochs 5 --out runs/five --json > result.json
  rnnmnist train --config runs/five/config.toml --out runs/again   # rerun a run
"""


@cli.command(epilog=TRAIN_EXAMPLES)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of config keys (see configs/); flags given here override it.",
)
@config_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder for checkpoint.pt, config.toml, metrics.jsonl. [default: runs/DATE-TIME]",
)
@click.option("--force", is_flag=True, help="Replace a run already in --out.")
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this folder from its last checkpoint, with its stored config.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config as TOML and exit.")
@click.option("--tensorboard", is_flag=True, help="Also log to OUT/tensorboard/ (needs rnnmnist[tensorboard]).")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train with N processes on this machine (DistributedDataParallel via torchrun's launcher).",
)
@data_options
@json_option
def train(
    config_file: Path | None,
    out: Path | None,
    force: bool,
    resume: Path | None,
    print_config: bool,
    tensorboard: bool,
    nproc: int | None,
    data_dir: Path,
    download: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
    **flags: Any,
) -> None:
    """Train a model on MNIST and write a run folder.

    Training length counts examples like the notebook (--iters), or passes over
    the 55,000 training images (--epochs). At the end the model is evaluated on
    all 10,000 test images. Ctrl-C (or SIGTERM) stops after the current step and
    saves a checkpoint that --resume continues; a second Ctrl-C stops at once.
    """
    started = time.perf_counter()
    ui = _ui(as_json, quiet, verbose)
    if resume is not None:
        if config_file or out or force or any(v is not None for v in flags.values()):
            raise click.UsageError(
                "--resume continues a run with its stored config; drop --config, --out, --force and config flags"
            )
        run_dir, ckpt = _resumable(resume)
        cfg = ckpt.config
    else:
        from rnnmnist.rundir import RunDir

        cfg, ckpt = resolve_config(config_file, flags), None
        run_dir = RunDir(out if out is not None else _default_out_dir())
    if print_config:
        click.echo(config.to_toml(cfg), nl=False)
        return
    if nproc and nproc > 1 and "WORLD_SIZE" not in os.environ:
        from rnnmnist.distributed import launch

        if cfg.batch_size % nproc:
            raise click.UsageError(
                f"--batch-size {cfg.batch_size} (the global batch) does not divide among {nproc} processes"
            )

        argv = _without_nproc(click.get_current_context().find_root().command.invocation)
        if out is None and resume is None:  # every process must write to the same folder
            argv += ["--out", str(run_dir.path)]
        sys.exit(launch(nproc, argv))
    if tensorboard:
        from rnnmnist.tensorboard import require_tensorboard

        require_tensorboard()  # before any work is done
    _train(cfg, run_dir, ckpt, force, data_dir, download, ui, started, tensorboard)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _resumable(folder: Path) -> tuple[RunDir, Checkpoint]:
    from rnnmnist import checkpoint as ckpt_io
    from rnnmnist.rundir import RunDir

    run_dir = RunDir(folder)
    run_dir.prepare_resume()
    ckpt = ckpt_io.load(run_dir.checkpoint)
    if ckpt.training is None:
        raise RnnmnistError(f"{run_dir.checkpoint} holds a finished run; there is nothing to resume")
    return run_dir, ckpt


def _train(
    cfg: config.Config,
    run_dir: RunDir,
    resume: Checkpoint | None,
    force: bool,
    data_dir: Path,
    download: bool,
    ui: Ui,
    started: float,
    tensorboard: bool,
) -> None:
    from rnnmnist import distributed
    from rnnmnist import train as training
    from rnnmnist.data import load_mnist
    from rnnmnist.device import resolve_device
    from rnnmnist.rundir import RunDir
    from rnnmnist.signals import GracefulStop

    rank = distributed.from_environment()
    device = resolve_device(cfg.device)
    if rank.distributed:
        device = distributed.join(rank, device)
        run_dir = RunDir(distributed.broadcast(str(run_dir.path)))  # rank 0's folder for every rank
    try:
        data = load_mnist(data_dir, cfg.val_size, download)
        ui.detail(
            f"MNIST from {data_dir}: {len(data.train):,} training, {len(data.val):,} validation and "
            f"{len(data.test):,} test images; device {device}"
            + (f", {rank.world_size} processes" if rank.distributed else "")
        )
        _prepare_folder(run_dir, resume, force, rank)  # once the data is there: a failed start leaves no folder
        board = None
        if tensorboard and rank.main:
            from rnnmnist.tensorboard import TensorBoardLogger

            board = TensorBoardLogger(run_dir.path / "tensorboard")
        try:
            display_context = ui.training() if rank.main else contextlib.nullcontext(training.TrainCallbacks())
            with GracefulStop() as stop, display_context as display:
                callbacks = training.CallbackList(display, board) if board else display
                summary = training.run(cfg, data, run_dir, device, callbacks, started, stop, resume, rank)
        finally:
            if board is not None:
                board.close()
    finally:
        distributed.leave()
    if not rank.main:
        return
    if ui.json_mode:
        ui.emit_json({**summary.metrics(), "checkpoint": str(summary.checkpoint), "out_dir": str(run_dir.path)})
    ui.train_summary(summary)


def _prepare_folder(run_dir: RunDir, resume: Checkpoint | None, force: bool, rank: Any) -> None:
    """Rank 0 creates (or checks) the run folder; in a distributed run the others learn how that went."""
    from rnnmnist import distributed

    problem = None
    if rank.main:
        try:
            if resume is None:
                run_dir.prepare_new(force)
        except RnnmnistError as e:
            problem = str(e)
    if rank.distributed:
        problem = distributed.broadcast(problem)
    if problem:
        raise RnnmnistError(problem)


# --- eval

EVAL_EXAMPLES = """\b
Examples:
  rnnmnist eval runs/five/checkpoint.pt
  rnnmnist eval runs/five/checkpoint.pt --limit 256        # the notebook's test
  rnnmnist eval runs/five/checkpoint.pt --json --min-accuracy 0.98 || exit 1
"""


@cli.command(name="eval", epilog=EVAL_EXAMPLES)
@checkpoint_argument
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images of the split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=EVAL_BATCH_SIZE, show_default=True)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0.0, 1.0),
    help="Exit with code 1 when accuracy is below this (a gate for CI), e.g. 0.98.",
)
@device_option
@data_options
@json_option
def eval_command(
    checkpoint: Path,
    split: str,
    limit: int | None,
    batch_size: int,
    min_accuracy: float | None,
    device: str,
    data_dir: Path,
    download: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Evaluate CHECKPOINT: accuracy, loss, per-class accuracy and the confusion matrix."""
    from rnnmnist import checkpoint as ckpt_io
    from rnnmnist.data import load_split
    from rnnmnist.device import resolve_device
    from rnnmnist.evaluate import evaluate

    ui = _ui(as_json, quiet, verbose)
    dev = resolve_device(device)
    model, ckpt = ckpt_io.load_model(checkpoint, dev)
    data = load_split(data_dir, split, ckpt.config.val_size, download)
    if limit is not None:
        data = data.head(limit)
    result = evaluate(model, data.to(dev), batch_size, ckpt.config.precision)
    if as_json:
        ui.emit_json({**result.to_json(), "split": split, "checkpoint": str(checkpoint)})
    ui.evaluation(result, f"{checkpoint} on {split} ({result.n:,} images)")
    if min_accuracy is not None and result.accuracy < min_accuracy:
        raise RnnmnistError(f"accuracy {result.accuracy:.4f} is below --min-accuracy {min_accuracy}")


# --- predict

PREDICT_EXAMPLES = """\b
Examples:
  rnnmnist predict runs/five/checkpoint.pt my-digit.png photo.jpg
  rnnmnist predict runs/five/checkpoint.pt scans/ --json > predictions.jsonl
  rnnmnist predict runs/five/checkpoint.pt my-digit.png --show     # what the network sees
  cat digit.png | rnnmnist predict runs/five/checkpoint.pt -
  rnnmnist predict runs/five/checkpoint.pt --index 0 --index 7     # test-set images
  rnnmnist predict runs/five/checkpoint.pt scans/ --json --min-confidence 0.9   # flag doubtful ones
"""


@cli.command(epilog=PREDICT_EXAMPLES)
@checkpoint_argument
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option(
    "--index",
    "indices",
    type=click.IntRange(min=0),
    multiple=True,
    help="Predict test-set image I (repeatable); its true label is shown beside.",
)
@click.option("--show", is_flag=True, help="Print each 28x28 image the network sees, as terminal art.")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    metavar="X",
    help='Mark predictions less confident than X as uncertain (JSON: "uncertain": true).',
)
@device_option
@data_options
@json_option
def predict(
    checkpoint: Path,
    inputs: tuple[str, ...],
    indices: tuple[int, ...],
    show: bool,
    min_confidence: float | None,
    device: str,
    data_dir: Path,
    download: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> int:
    """Predict the digit in each INPUT with CHECKPOINT.

    INPUT is an image file Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP), a
    folder (every image inside, by name) or - for one image on stdin. Each image
    is made MNIST-like first: ink light on black, cropped, scaled to 20x20 and
    centred by mass in 28x28. An input that fails gets a one-line error and the
    others are still predicted; the exit code is then 1.
    """
    if not inputs and not indices:
        raise click.UsageError("nothing to predict: give image files, folders, - (stdin) or --index I")
    _verbosity(quiet, verbose)  # a usage error is found before any image is read
    from rnnmnist.images import InputImages

    # Images start decoding in worker processes now, while torch is imported and the model loaded.
    with InputImages(inputs, sys.stdin.buffer) as images:
        from rnnmnist import checkpoint as ckpt_io
        from rnnmnist import predict as prediction
        from rnnmnist.device import resolve_device

        dev = resolve_device(device)
        model, ckpt = ckpt_io.load_model(checkpoint, dev)
        precision = ckpt.config.precision
        results = prediction.predict_images(model, precision, images)
    ui = _ui(as_json, quiet, verbose)
    if indices:
        results += prediction.predict_test_images(model, precision, data_dir, indices, download)
    if min_confidence is not None:
        prediction.mark_uncertain(results, min_confidence)
    if as_json:
        for r in results:
            ui.emit_json(r.to_json())
    ui.predictions(results, show)
    return 1 if any(r.error for r in results) else 0


# --- plot

PLOT_EXAMPLES = """\b
Examples:
  rnnmnist plot runs/five                    # writes runs/five/curves.png, confusion.png, mistakes.png
  rnnmnist plot runs/five --out figures/
"""


@cli.command(epilog=PLOT_EXAMPLES)
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for the PNGs. [default: RUN]")
@data_options
@json_option
def plot(
    run: Path, out: Path | None, data_dir: Path, download: bool, as_json: bool, quiet: bool, verbose: bool
) -> None:
    """Draw a run: training curves, the test confusion matrix, the most confident mistakes (PNG).

    Needs matplotlib: pip install 'rnnmnist[plot]'. The confusion matrix and the
    mistakes need the run's checkpoint.pt and the MNIST test set.
    """
    from rnnmnist.plot import plot_run

    ui = _ui(as_json, quiet, verbose)
    paths = plot_run(run, out, data_dir, download)
    if as_json:
        ui.emit_json({"files": [str(p) for p in paths]})
    ui.written(paths)


# --- export

EXPORT_EXAMPLES = """\b
Examples:
  rnnmnist export runs/five/checkpoint.pt --format onnx            # runs/five/checkpoint.onnx
  rnnmnist export runs/five/checkpoint.pt --format torchscript --out model.ts
"""


@cli.command(epilog=EXPORT_EXAMPLES)
@checkpoint_argument
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True, help="File format.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Model file. [default: CHECKPOINT with .onnx/.ts]"
)
@data_options
@json_option
def export(
    checkpoint: Path,
    fmt: str,
    out: Path | None,
    data_dir: Path,
    download: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Write CHECKPOINT's model as ONNX or TorchScript, and check it reproduces PyTorch.

    The exported model takes "images": float32 (N, 28, 28), pixels scaled to
    [0, 1], light digit on black; it returns "logits": float32 (N, 10). The
    sequence layout (rows, pixels, permutation) is inside. It is run on test
    images (random ones if MNIST is not at hand) and must match PyTorch within
    1e-4. ONNX needs rnnmnist[export] (onnx, onnxscript, onnxruntime).
    """
    from rnnmnist.export import export as export_model

    ui = _ui(as_json, quiet, verbose)
    report = export_model(checkpoint, fmt, out, data_dir, download)
    if as_json:
        ui.emit_json(
            {
                "file": str(report.path),
                "format": report.format,
                "checked_images": report.checked,
                "checked_on": report.inputs,
                "max_abs_diff": report.max_abs_diff,
            }
        )
    ui.line(
        f"wrote {report.path} ({report.format}); checked on {report.checked} {report.inputs}: "
        f"max logit difference from PyTorch {report.max_abs_diff:.1e}, same predictions"
    )


def main() -> None:
    cli(prog_name="rnnmnist")
