"""Starting ``nproc`` ranks of ``rnnmnist train`` (``--nproc``): shared by ``train`` and ``train --seeds``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from rnnmnist import config
from rnnmnist.cli.options import Common


def launch_ranks(
    nproc: int, common: Common, cfg: config.Config | None, out: Path, resume: bool, force: bool, tb: bool
) -> int:
    """Start ``nproc`` ranks of this command: the resolved config travels as a TOML file, the rest as flags."""
    from rnnmnist import process
    from rnnmnist.training.distributed import launch

    if cfg is not None and cfg.batch_size % nproc:
        raise click.UsageError(
            f"--batch-size {cfg.batch_size} (the global batch) does not divide among {nproc} processes"
        )
    if cfg is not None and cfg.outliers % nproc:
        raise click.UsageError(
            f"the batch's {cfg.outliers} generated non-digits (--outlier-share {cfg.outlier_share:g} of "
            f"--batch-size {cfg.batch_size}) do not divide among {nproc} processes"
        )
    argv = ["train", "--resume" if resume else "--out", str(out)]
    argv += ["--force"] * force + ["--tensorboard"] * tb + ["--json"] * common.as_json
    argv += ["--quiet"] * common.quiet + ["--verbose"] * common.verbose + ["--no-download"] * (not common.download)
    if common.data_dir is not None:
        argv += ["--data-dir", str(common.data_dir)]
    # The config is resolved already: its environment variables must not apply twice in the ranks.
    for name in config.CONFIG_FIELDS:
        os.environ.pop(f"RNNMNIST_TRAIN_{name.upper()}", None)
    os.environ.pop("RNNMNIST_TRAIN_NPROC", None)
    process.share_cores(nproc)
    process.quiet_torchrun()
    with tempfile.TemporaryDirectory(prefix="rnnmnist-") as tmp:
        if cfg is not None:
            resolved = Path(tmp) / "config.toml"
            resolved.write_text(config.to_toml(cfg), encoding="utf-8")
            argv += ["--config", str(resolved)]
        return launch(nproc, argv)
