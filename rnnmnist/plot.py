"""Pictures of a run: training curves, the test confusion matrix, the most confidently wrong digits.

Needs matplotlib (``pip install 'rnnmnist[plot]'``); figures are drawn off-screen
and written atomically as PNG files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from rnnmnist import checkpoint
from rnnmnist.data import load_split, scale
from rnnmnist.datasets import DIGITS, class_names
from rnnmnist.device import usable_precision
from rnnmnist.errors import RnnmnistError
from rnnmnist.evaluate import confusion_matrix
from rnnmnist.files import write_atomic
from rnnmnist.predict import probabilities
from rnnmnist.rundir import RunDir

MISTAKES_SHOWN = 36  # a 6x6 grid
TRAIN_KEYS = ("examples", "loss", "accuracy", "lr")  # what a training line of metrics.jsonl must hold
VAL_KEYS = ("examples", "val_loss", "val_accuracy")


def _pyplot() -> ModuleType:
    try:
        import matplotlib
    except ImportError:
        raise RnnmnistError("rnnmnist plot needs matplotlib: pip install 'rnnmnist[plot]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training log lines, validation lines) of a metrics.jsonl."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise RnnmnistError(f"cannot read {path}: {e.strerror or e}") from None
    train, val = [], []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            raise RnnmnistError(f"{path}, line {number}: not JSON") from None
        keys = VAL_KEYS if isinstance(row, dict) and "val_accuracy" in row else TRAIN_KEYS
        if not isinstance(row, dict) or not all(_is_number(row.get(k)) for k in keys):
            raise RnnmnistError(
                f"{path}, line {number}: not an rnnmnist metrics line (it needs numbers for {', '.join(keys)})"
            )
        (val if keys is VAL_KEYS else train).append(row)
    return train, val


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())
    return path


def plot_curves(train: list[dict[str, Any]], val: list[dict[str, Any]], path: Path) -> Path:
    """Loss, accuracy and learning rate against examples seen."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [r["examples"] for r in train]
    vx = [r["examples"] for r in val]
    axes[0].plot(x, [r["loss"] for r in train], lw=1, label="training batch")
    axes[0].plot(vx, [r["val_loss"] for r in val], "o-", ms=3, label="validation")
    axes[0].set(title="Loss", yscale="log")
    axes[1].plot(x, [100 * r["accuracy"] for r in train], lw=1, label="training batch")
    axes[1].plot(vx, [100 * r["val_accuracy"] for r in val], "o-", ms=3, label="validation")
    axes[1].set(title="Accuracy (%)", ylim=(max(0, min([100 * r["accuracy"] for r in train] or [0])), 100.5))
    axes[2].plot(x, [r["lr"] for r in train], lw=1)
    axes[2].set(title="Learning rate")
    from matplotlib.ticker import FuncFormatter

    thousands = FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0")
    for ax in axes:
        ax.set_xlabel("examples seen")
        ax.xaxis.set_major_formatter(thousands)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        if val:
            ax.legend()
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_confusion(confusion: np.ndarray, path: Path, classes: tuple[str, ...] = DIGITS) -> Path:
    """The 10x10 confusion matrix as a heatmap (log colour scale so rare mistakes show)."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    shown = np.where(confusion > 0, confusion, np.nan)
    image = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(1, confusion.max())))
    for (i, j), n in np.ndenumerate(confusion):
        if n:
            color = "black" if i == j else "white"
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=color)
    accuracy = np.trace(confusion) / confusion.sum()
    kind = "digit" if classes == DIGITS else "class"
    ax.set(
        xticks=range(10),
        yticks=range(10),
        xticklabels=classes,
        yticklabels=classes,
        xlabel=f"predicted {kind}",
        ylabel=f"true {kind}",
        title=f"Test confusion matrix ({confusion.sum():,} images, {100 * accuracy:.2f}% right)",
    )
    if kind == "class":
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.colorbar(image, ax=ax, label="images")
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_mistakes(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, path: Path, classes: tuple[str, ...] = DIGITS
) -> Path:
    """The most confidently misclassified images, with predicted and true labels."""
    plt = _pyplot()
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:MISTAKES_SHOWN]
    cols = 6
    rows = max(1, -(-len(order) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.7), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
        ax.set_title(
            f"{classes[predicted[i]]} ({100 * probs[i, predicted[i]]:.0f}%), true {classes[labels[i]]}", fontsize=8
        )
    title = "Most confident mistakes on the test set" if len(order) else "No mistakes on the test set"
    fig.suptitle(title + ": predicted (confidence), true", fontsize=10)
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_run(run: Path, out: Path | None, data_dir: Path | None, download: bool) -> list[Path]:
    """Every picture of the run in folder ``run``; returns the files written (in ``out``, default ``run``).

    ``data_dir`` None: the data folder the run remembers (run.json), else ./data.
    """
    _pyplot()  # fail early, before any work, when matplotlib is missing
    run_dir = RunDir(run)
    if not run_dir.metrics_file.exists():
        raise RnnmnistError(f"{run} holds no metrics.jsonl: is it an rnnmnist run folder?")
    out = out if out is not None else run
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnmnistError(f"cannot create {out}: {e.strerror or e}") from None
    train, val = read_metrics(run_dir.metrics_file)
    written = [plot_curves(train, val, out / "curves.png")]
    if run_dir.checkpoint.exists():
        model, ckpt = checkpoint.load_model(run_dir.checkpoint)
        if data_dir is None:
            data_dir = run_dir.remembered_data_dir() or Path("data")
        test = load_split(data_dir, "test", 0, download, ckpt.config.dataset)
        images = scale(test.images)  # (N, 28, 28)
        precision = usable_precision(ckpt.config.precision, torch.device("cpu")).name
        probs = probabilities(model, images, precision).numpy()  # (N, 10)
        labels = test.labels.numpy()
        confusion = confusion_matrix(test.labels, torch.from_numpy(probs.argmax(axis=1))).numpy()
        classes = class_names(ckpt.config.dataset)
        written.append(plot_confusion(confusion, out / "confusion.png", classes))
        written.append(plot_mistakes(images.numpy(), labels, probs, out / "mistakes.png", classes))
    return written


def plot_overlaid(runs: list[tuple[str, Path]], path: Path) -> Path:
    """Several runs' curves in one figure (``rnnmnist compare --plot``): training loss, training batch
    accuracy and validation accuracy against examples seen, one colour per run."""
    plt = _pyplot()
    curves = []
    for label, folder in runs:
        metrics = RunDir(folder).metrics_file
        if not metrics.exists():
            raise RnnmnistError(f"{folder} holds no metrics.jsonl: is it an rnnmnist run folder?")
        curves.append((label, *read_metrics(metrics)))
    with_val = any(val for _, _, val in curves)
    fig, axes = plt.subplots(1, 3 if with_val else 2, figsize=(14 if with_val else 10, 3.8))
    for label, train, val in curves:
        x = [r["examples"] for r in train]
        (line,) = axes[0].plot(x, [r["loss"] for r in train], lw=1, label=label)
        axes[1].plot(x, [100 * r["accuracy"] for r in train], lw=1, color=line.get_color())
        if with_val:
            axes[2].plot(
                [r["examples"] for r in val], [100 * r["val_accuracy"] for r in val], "o-", ms=3, color=line.get_color()
            )
    axes[0].set(title="Training loss (batch)", yscale="log")
    axes[1].set(title="Training accuracy (batch, %)")
    if with_val:
        axes[2].set(title="Validation accuracy (%)")
    for ax in axes:
        ax.set_xlabel("examples seen")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path
