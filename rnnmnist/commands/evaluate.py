"""``rnnmnist eval``: a checkpoint's accuracy, loss, per-class accuracy and confusion matrix, and a CI gate."""

from __future__ import annotations

from pathlib import Path

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
from rnnmnist.config import EVAL_BATCH_SIZE

EXAMPLES = """\b
Examples:
  rnnmnist eval runs/first                                  # its checkpoint.pt
  rnnmnist eval runs/first/checkpoint.pt --limit 256        # the notebook's test
  rnnmnist eval runs/first/checkpoint.pt --json --min-accuracy 0.98 || exit 1
"""


@click.command(name="eval", epilog=EXAMPLES)
@checkpoint_argument
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images of the split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=EVAL_BATCH_SIZE, show_default=True)
@click.option(
    "--min-accuracy",
    type=FiniteFloat(0.0, 1.0),
    help="Exit with code 1 when accuracy is below this (a gate for CI), e.g. 0.98.",
)
@device_option
@data_options
@output_options
@pass_common
def eval_command(
    common: Common, checkpoint: Path, split: str, limit: int | None, batch_size: int, min_accuracy: float | None
) -> None:
    """Evaluate CHECKPOINT: accuracy, loss, per-class accuracy and the confusion matrix.

    CHECKPOINT is a checkpoint file or a run folder (its checkpoint.pt, the final
    model; give RUN/best.pt for the best on validation).

    It computes in the precision the model was trained in where this device runs
    it, so the accuracy matches training's; elsewhere (bf16 on a CPU without
    AVX-512) in fp32, where the last digit may differ.
    """
    from rnnmnist.errors import RnnmnistError
    from rnnmnist.training.evaluate import evaluate_checkpoint

    ui = common.ui()
    done = evaluate_checkpoint(
        checkpoint, split, common.data_folder(), common.download, common.device, limit, batch_size
    )
    for note in [*done.notes, *filter(None, [done.precision.note])]:
        ui.detail(note)
    result = done.result
    from rnnmnist.training.datasets import SPECS

    data = SPECS[done.dataset]
    if common.as_json:
        ui.emit_json(
            {
                **result.to_json(),
                "split": split,
                "checkpoint": str(checkpoint),
                "precision": done.precision.name,
                "dataset": done.dataset,
                "class_names": list(data.classes),
            }
        )
    on = split if done.dataset == "mnist" else f"{data.title} {split}"
    ui.evaluation(result, f"on {on} ({result.n:,} images, {done.precision.name})", data.classes, str(checkpoint))
    if min_accuracy is not None and result.accuracy < min_accuracy:
        raise RnnmnistError(f"accuracy {result.accuracy:.4f} is below --min-accuracy {min_accuracy}")
