"""``rnnmnist plot``: pictures of a run (training curves, confusion matrix, most confident mistakes)."""

from __future__ import annotations

from pathlib import Path

import click

from rnnmnist.commands.options import Common, data_options, output_options, pass_common

EXAMPLES = """\b
Examples:
  rnnmnist plot runs/five                    # writes runs/five/curves.png, confusion.png, mistakes.png
  rnnmnist plot runs/five --out figures/
"""


@click.command(epilog=EXAMPLES)
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for the PNGs. [default: RUN]")
@data_options
@output_options
@pass_common
def plot(common: Common, run: Path, out: Path | None) -> None:
    """Draw a run: training curves, the test confusion matrix, the most confident mistakes (PNG).

    Needs matplotlib: pip install 'rnnmnist[plots]'. The confusion matrix and the
    mistakes need the run's checkpoint.pt and the MNIST test set (from the folder
    the run was trained with, unless --data-dir says otherwise).
    """
    from rnnmnist.plot import plot_run

    ui = common.ui()
    paths = plot_run(run, out, common.data_dir, common.download)
    if common.as_json:
        ui.emit_json({"files": [str(p) for p in paths]})
    ui.written(paths)
