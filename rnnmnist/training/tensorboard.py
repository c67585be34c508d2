"""TensorBoard logging of a training run (``train --tensorboard``; ``pip install 'rnnmnist[tensorboard]'``)."""

from __future__ import annotations

from pathlib import Path

import torch

from rnnmnist.config import Config
from rnnmnist.errors import RnnmnistError
from rnnmnist.extras import require
from rnnmnist.files import folder_target
from rnnmnist.training.events import LogRecord, TrainCallbacks


def require_tensorboard() -> None:
    require("rnnmnist train --tensorboard", "tensorboard", "tensorboard")


class TensorBoardLogger(TrainCallbacks):
    """Scalars against examples seen: train/loss, train/accuracy, train/lr, train/examples_per_s, val/*."""

    def __init__(self, folder: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        try:
            self.writer = SummaryWriter(log_dir=str(folder_target(folder)))
        except OSError as e:
            raise RnnmnistError(f"cannot write into {folder}: {e.strerror or e}") from None
        self.batch_size = 1

    def on_start(self, cfg: Config, first_step: int, total_steps: int, device: torch.device, n_train: int) -> None:
        self.batch_size = cfg.batch_size
        self.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in cfg.to_dict().items()))

    def on_log(self, r: LogRecord) -> None:
        for name in ("loss", "accuracy", "lr", "examples_per_s"):
            self.writer.add_scalar(f"train/{name}", getattr(r, name), r.examples)

    def on_validate(self, step: int, accuracy: float, loss: float, best: bool) -> None:
        self.writer.add_scalar("val/accuracy", accuracy, step * self.batch_size)
        self.writer.add_scalar("val/loss", loss, step * self.batch_size)

    def close(self) -> None:
        self.writer.close()
