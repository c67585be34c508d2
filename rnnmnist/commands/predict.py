"""``rnnmnist predict``: the digit in people's images (files, folders, stdin) or in test-set images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from rnnmnist.cli.options import (
    Common,
    FiniteFloat,
    checkpoint_argument,
    data_options,
    device_option,
    output_options,
    pass_common,
)
from rnnmnist.errors import ExitCode

if TYPE_CHECKING:
    from rnnmnist.images.predict import Prediction
    from rnnmnist.training.checkpoint import Checkpoint
    from rnnmnist.training.digitcheck import DigitCheck

STRICT_EXIT = ExitCode.NOT_A_DIGIT  # predict --strict: an input is not one digit

EXAMPLES = """\b
Examples:
  rnnmnist predict runs/first/checkpoint.pt my-digit.png photo.jpg
  rnnmnist predict runs/first/checkpoint.pt scans/ --json > predictions.jsonl
  rnnmnist predict runs/first/checkpoint.pt my-digit.png --show     # what the network sees
  cat digit.png | rnnmnist predict runs/first/checkpoint.pt -
  rnnmnist predict runs/first/checkpoint.pt --index 0 --index 7     # test-set images
  rnnmnist predict runs/first/checkpoint.pt my-digit.png --trace    # watch it read, row by row
  rnnmnist predict runs/first/checkpoint.pt scans/ --json --min-confidence 0.9   # flag doubtful ones
  rnnmnist predict runs/first/checkpoint.pt scans/ --strict          # exit 3 if one is not a digit
"""


@click.command(epilog=EXAMPLES)
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
    type=FiniteFloat(0, 1),
    metavar="X",
    help='Mark predictions less confident than X as uncertain (JSON: "uncertain": true).',
)
@click.option(
    "--trace",
    is_flag=True,
    help="Show how each answer forms as the network reads, row by row; --json adds trace and decided_at.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit with code 3 when any input is not a single digit (an input that failed still exits 1).",
)
@device_option
@data_options
@output_options
@pass_common
def predict(
    common: Common,
    checkpoint: Path,
    inputs: tuple[str, ...],
    indices: tuple[int, ...],
    show: bool,
    min_confidence: float | None,
    trace: bool,
    strict: bool,
) -> int:
    """Predict the digit in each INPUT with CHECKPOINT (a checkpoint file, or a run folder for its checkpoint.pt).

    INPUT is an image file Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP), a
    folder (every image inside, by name) or - for one image on stdin. Each image
    is made MNIST-like first: ink light on black, cropped, scaled to 20x20 and
    centred by mass in 28x28 (also for a model of another --dataset: it was made
    for digits). An input that fails gets a one-line error and the others are
    still predicted; the exit code is then 1.
    """
    if not inputs and not indices:
        raise click.UsageError("nothing to predict: give image files, folders, - (stdin) or --index I")
    common.verbosity  # noqa: B018 - a usage error (--quiet --verbose) is found before any image is read
    from rnnmnist.images.inputs import InputImages
    from rnnmnist.signals import interrupting

    # SIGINT/SIGTERM unwind through InputImages, which stops its worker processes at once; images
    # start decoding in those workers now, while torch is imported and the model loaded.
    with interrupting(), InputImages(inputs) as images:
        from rnnmnist.images import predict as prediction
        from rnnmnist.training import checkpoint as ckpt_io
        from rnnmnist.training.device import resolve_device, usable_precision

        dev = resolve_device(common.device)
        model, ckpt = ckpt_io.load_model(checkpoint, dev)
        precision = usable_precision(ckpt.config.precision, dev)
        check = digit_check(ckpt, strict)
        results = prediction.predict_digits(model, precision.name, images.results(), trace, check)
    ui = common.ui()
    for note in [*ckpt.notes, *filter(None, [precision.note, _fallback_note(check)])]:
        ui.detail(note)
    if indices:
        results += prediction.predict_test_images(
            model, precision.name, common.data_folder(), indices, common.download, trace, ckpt.config.dataset, check
        )
    from rnnmnist.training.datasets import SPECS, class_names, is_digits

    prediction.name_classes(results, class_names(ckpt.config.dataset))
    if inputs and not is_digits(ckpt.config.dataset) and ui.verbosity >= 0:
        ui.line(
            f"note: this model was trained on {SPECS[ckpt.config.dataset].title}; images are prepared as digits "
            f"are (cropped to the ink, fitted in 20x20, centred by mass), which may not match how its images were made"
        )
    if min_confidence is not None:
        prediction.mark_uncertain(results, min_confidence)
    if common.as_json:
        for r in results:
            ui.emit_json(r.to_json())
    ui.predictions(results, show, ckpt.config.mode if trace else None)
    return exit_code(results, strict)


def _fallback_note(check: DigitCheck | None) -> str | None:
    if check is None or check.calibrated_on:
        return None
    return (
        "this checkpoint holds no calibrated digit check (written before rnnmnist 0.4.0, by a run stopped before "
        f"its end, or without a validation split): 'not a digit' is a confidence below {check.threshold:g}"
    )


def digit_check(ckpt: Checkpoint, strict: bool) -> DigitCheck | None:
    """The checkpoint's "one digit or not" check; None for a model of another data set, which --strict refuses."""
    check = ckpt.digit_check
    if strict and check is None:
        from rnnmnist.errors import BadValueError

        raise BadValueError(f"--strict needs a model of digits; this one was trained on {ckpt.config.dataset}")
    return check


def exit_code(results: list[Prediction], strict: bool) -> int:
    """1 when an input failed; else with ``strict`` 3 when an image is not one digit; else 0."""
    if any(r.error for r in results):
        return ExitCode.FAILURE
    if strict and any(r.is_digit is False for r in results):
        return STRICT_EXIT
    return ExitCode.SUCCESS
