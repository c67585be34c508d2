"""Pictures of a run: training curves, the test confusion matrix, the most confidently wrong digits,
and how the network reads (its answer after each row, and accuracy against rows read).

Needs matplotlib (``pip install 'rnnmnist[plots]'``); figures are drawn off-screen
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

from rnnmnist.errors import RnnmnistError
from rnnmnist.extras import require
from rnnmnist.files import read_text, write_atomic
from rnnmnist.images.predict import probabilities
from rnnmnist.training import checkpoint
from rnnmnist.training.data import load_split, scale
from rnnmnist.training.datasets import DIGITS, class_names
from rnnmnist.training.device import usable_precision
from rnnmnist.training.evaluate import confusion_matrix
from rnnmnist.training.rundir import RunDir

MISTAKES_SHOWN = 36  # a 6x6 grid
TRAIN_KEYS = ("examples", "loss", "accuracy", "lr")  # what a training line of metrics.jsonl must hold
VAL_KEYS = ("examples", "val_loss", "val_accuracy")


def _pyplot(what: str = "rnnmnist plot") -> ModuleType:
    """matplotlib's pyplot, drawing to files; ``what`` names the command in the missing-extra error."""
    require(what, "plots", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training log lines, validation lines) of a metrics.jsonl."""
    lines = read_text(path).splitlines()  # a FIFO there is refused, not waited on
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
    fig = curves_figure(train, val)
    path = _save(fig, path)
    plt.close(fig)
    return path


def curves_figure(train: list[dict[str, Any]], val: list[dict[str, Any]]) -> Any:
    """The figure of :func:`plot_curves`. Training figures are of one batch each (the loss and accuracy
    of the batch about to be trained on), which the titles say: they are not test accuracy."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [r["examples"] for r in train]
    vx = [r["examples"] for r in val]
    axes[0].plot(x, [r["loss"] for r in train], lw=1, label="training batch")
    axes[0].plot(vx, [r["val_loss"] for r in val], "o-", ms=3, label="validation")
    axes[0].set(title="Loss: training batch, validation" if val else "Training batch loss", yscale="log")
    axes[1].plot(x, [100 * r["accuracy"] for r in train], lw=1, label="training batch")
    axes[1].plot(vx, [100 * r["val_accuracy"] for r in val], "o-", ms=3, label="validation")
    title = "Accuracy (%): training batch, validation" if val else "Training batch accuracy (%)"
    axes[1].set(title=title, ylim=(max(0, min([100 * r["accuracy"] for r in train] or [0])), 100.5))
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
    return fig


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


READING_EXAMPLES = 4  # the first test digits (7, 2, 1, 0), drawn as they are read
READING_STAGES = (7, 14, 21, 28)  # rows read in each snapshot (for 784-step models, 28 pixels a row)


def _read_mask(model: Any, steps: int, read: int) -> np.ndarray:
    """(28, 28) bool: the pixels a model has read after ``read`` of its ``steps`` steps."""
    if steps == 28:
        mask = np.zeros((28, 28), dtype=bool)
        mask[:read] = True
        return mask
    flat = np.zeros(784, dtype=bool)
    order = model.permutation.cpu().numpy() if hasattr(model, "permutation") else np.arange(784)
    flat[order[:read]] = True
    return flat.reshape(28, 28)


def _snapshots(model: Any, image: np.ndarray, steps: int) -> np.ndarray:
    """RGB (28, 4*28 + gaps, 3): the image after each of READING_STAGES, what is not read yet dimmed in blue."""
    gap = np.ones((28, 2, 3))
    panels = []
    for rows in READING_STAGES:
        read = _read_mask(model, steps, rows * steps // 28)
        rgb = np.repeat(image[:, :, None], 3, axis=2)
        dim = np.stack([0.25 * image, 0.25 * image, 0.22 + 0.3 * image], axis=2)
        panels += [np.where(read[:, :, None], rgb, dim), gap]
    return np.concatenate(panels[:-1], axis=1)


def plot_reading(
    model: Any, images: np.ndarray, labels: np.ndarray, traces: np.ndarray, accuracy: np.ndarray, path: Path
) -> Path:
    """How the network reads: a few digits with the rows read so far and the probabilities after each step,
    and the test accuracy as a function of the rows read.

    ``traces`` is (k, steps, 10) for ``images`` (k, 28, 28); ``accuracy`` is (steps,) over the test set.
    """
    from rnnmnist.images.trace import decided_at

    plt = _pyplot()
    steps = traces.shape[1]
    unit = "rows" if steps == 28 else "pixels"
    k = len(images)
    fig = plt.figure(figsize=(3.3 * k, 7.2))
    grid = fig.add_gridspec(3, k, height_ratios=[0.6, 1.5, 1.7], hspace=0.5, wspace=0.3)
    x = np.arange(1, steps + 1)
    for i in range(k):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(_snapshots(model, images[i], steps), interpolation="nearest")
        ax.set_xticks([14 + j * 30 for j in range(len(READING_STAGES))], [f"{r}" for r in READING_STAGES], fontsize=7)
        ax.set_yticks([])
        ax.set_xlabel("rows read" if steps == 28 else "rows' worth of pixels read", fontsize=8)
        answer = int(traces[i, -1].argmax())
        decided = decided_at(torch.from_numpy(traces[i]))
        ax.set_title(f"true {labels[i]}, answer {answer}", fontsize=9)
        ax = fig.add_subplot(grid[1, i])
        for d in range(10):
            if d != answer:
                ax.plot(x, traces[i, :, d], lw=0.8, color="0.75")
        ax.plot(x, traces[i, :, answer], lw=2, color="tab:green", label=f"p({answer})")
        ax.axvline(decided, color="tab:red", ls="--", lw=1)
        ax.text(decided, 1.02, f" decided at {decided}", color="tab:red", fontsize=7, va="bottom")
        ax.set(ylim=(0, 1), xlim=(1, steps), xlabel=f"{unit} read")
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", fontsize=7, frameon=False)
        if i == 0:
            ax.set_ylabel("probability after each step")
    ax = fig.add_subplot(grid[2, :])
    ax.plot(x, 100 * accuracy, lw=2)
    final = 100 * accuracy[-1]
    within = int(np.argmax(100 * accuracy >= final - 1)) + 1  # first step within a point of the end
    ax.axvline(within, color="tab:red", ls="--", lw=1)
    late = within > 0.6 * steps
    note = f" within 1 point of the final {final:.1f}% after {within} {unit} "
    ax.text(within, 5, note, color="tab:red", fontsize=8, ha="right" if late else "left")
    ax.set(
        xlim=(1, steps),
        ylim=(0, 100),
        xlabel=f"{unit} read",
        ylabel="test accuracy (%)",
        title="If it had to answer after reading only the first part of each test image",
    )
    ax.grid(alpha=0.3)
    fig.suptitle("How the network reads: its answer after each step", fontsize=11)
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_run(
    run: Path, out: Path | None, data_dir: Path | None, download: bool, model_file: Path | None = None
) -> list[Path]:
    """Every picture of the run in folder ``run``; returns the files written (in ``out``, default ``run``).

    ``data_dir`` None: the data folder the run remembers (run.json), else ./data. The pictures of the
    model (confusion, mistakes, reading) are of ``model_file``, default the run's checkpoint.pt.
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
    model_file = model_file if model_file is not None else run_dir.checkpoint
    if model_file.exists():
        model, ckpt = checkpoint.load_model(model_file)
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
        if model.directions == 1:  # a bidirectional model has no reading trace
            from rnnmnist.images.trace import accuracy_by_step, reading

            shown = images[:READING_EXAMPLES]  # (k, 28, 28)
            traces = reading(model, shown, precision).numpy()  # (k, steps, 10)
            accuracy = accuracy_by_step(model, images, test.labels, precision).accuracy.numpy()
            written.append(
                plot_reading(model, shown.numpy(), labels[:READING_EXAMPLES], traces, accuracy, out / "reading.png")
            )
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
