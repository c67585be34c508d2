"""``rnnmnist plot``: pictures of a run (training curves, confusion matrix, most confident mistakes)."""

from __future__ import annotations

from pathlib import Path

import click

from rnnmnist.cli.options import Common, GivenPath, RunOrCheckpoint, data_options, output_options, pass_common

EXAMPLES = """\b
Examples:
  rnnmnist plot runs/first                    # writes runs/first/curves.png, confusion.png, mistakes.png
  rnnmnist plot runs/first --out figures/
  rnnmnist plot runs/first/best.pt            # the confusion matrix and mistakes of best.pt
"""


@click.command(epilog=EXAMPLES)
@click.argument("run", type=RunOrCheckpoint(folder=True))
@click.option(
    "--out", type=GivenPath(file_okay=False, path_type=Path), help="Folder for the PNGs. [default: the run folder]"
)
@data_options
@output_options
@pass_common
def plot(common: Common, run: Path, out: Path | None) -> None:
    """Draw a run: training curves, the test confusion matrix, the most confident mistakes (PNG).

    RUN is a run folder or a checkpoint in one (its folder is drawn; the pictures
    of the model come from that checkpoint, e.g. best.pt, else checkpoint.pt).
    Needs matplotlib: pip install 'rnnmnist[plots]'. The confusion matrix and the
    mistakes need the run's checkpoint.pt and the MNIST test set (from the folder
    the run was trained with, unless --data-dir says otherwise).
    """
    from rnnmnist.plot import plot_run

    ui = common.ui()
    folder, model = (run.parent, run) if run.is_file() else (run, None)
    paths = plot_run(folder, out, common.data_dir, common.download, model)
    if common.as_json:
        ui.emit_json({"files": [str(p) for p in paths]})
    ui.written(paths)
