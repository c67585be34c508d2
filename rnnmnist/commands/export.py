"""``rnnmnist export``: a checkpoint's model as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import click

from rnnmnist.cli.options import Common, GivenPath, checkpoint_argument, data_options, output_options, pass_common

EXAMPLES = """\b
Examples:
  rnnmnist export runs/first/checkpoint.pt --format onnx            # runs/first/checkpoint.onnx
  rnnmnist export runs/first/checkpoint.pt --format torchscript --out model.ts
"""


@click.command(epilog=EXAMPLES)
@checkpoint_argument
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True, help="File format.")
@click.option(
    "--out", type=GivenPath(dir_okay=False, path_type=Path), help="Model file. [default: CHECKPOINT with .onnx/.ts]"
)
@data_options
@output_options
@pass_common
def export(common: Common, checkpoint: Path, fmt: str, out: Path | None) -> None:
    """Write CHECKPOINT's model as ONNX or TorchScript, and check it reproduces PyTorch.

    The exported model takes "images": float32 (N, 28, 28), pixels scaled to
    [0, 1], light digit on black; it returns "logits": float32 (N, 10). The
    sequence layout (rows, pixels, permutation) is inside. It is run on test
    images (random ones if MNIST is not at hand) and must match PyTorch within
    1e-4. It never overwrites CHECKPOINT. ONNX needs the onnx extra (onnx,
    onnxscript, onnxruntime): pip install 'rnnmnist[onnx]'.
    """
    from rnnmnist.export import export as export_model

    ui = common.ui()
    report = export_model(checkpoint, fmt, out, common.data_folder(), common.download)
    if common.as_json:
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
