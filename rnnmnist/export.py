"""Exporting a checkpoint's model for use outside rnnmnist, verified against PyTorch.

Contract of an exported model: input ``images``, float32 (N, 28, 28), pixels
scaled to [0, 1] (light digit on black, as MNIST); output ``logits``, float32
(N, 10) (apply softmax for probabilities). The sequence layout (rows, pixels,
the stored permutation) happens inside, so a caller only decodes and scales.
Exported models compute in fp32.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnmnist.errors import NOT_FINITE_OUTPUTS, CheckpointError, DataError, RnnmnistError, one_line
from rnnmnist.extras import require
from rnnmnist.files import atomic_path, target
from rnnmnist.training import checkpoint
from rnnmnist.training.data import load_split, scale

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}
TOLERANCE = 1e-4  # max |logit difference| accepted between the export and PyTorch (fp32 both)
CHECK_IMAGES = 256
ONNX_COMMAND = "rnnmnist export --format onnx"  # what needs the onnx extra


@dataclass
class ExportReport:
    path: Path
    format: str
    checked: int  # images the export was run on
    inputs: str  # "test images" or "random images"
    max_abs_diff: float
    same_predictions: bool


def _quietly() -> contextlib.ExitStack:
    """torch's exporters print progress and deprecation notes; the CLI reports for them."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _to_onnx(model: torch.nn.Module, example: torch.Tensor, tmp: str) -> None:
    require(ONNX_COMMAND, "onnx", "onnx", "onnxscript")

    with _quietly():
        torch.onnx.export(
            model,
            (example,),
            tmp,
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"images": {0: "batch"}},
            external_data=False,
        )


def _run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    require(ONNX_COMMAND, "onnx", "onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


def _to_torchscript(model: torch.nn.Module, example: torch.Tensor, tmp: str) -> None:
    with _quietly():
        torch.jit.trace(model, example).save(tmp)


def _run_torchscript(path: Path, images: torch.Tensor) -> torch.Tensor:
    with _quietly():
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(images)


def _check_images(data_dir: Path, download: bool) -> tuple[torch.Tensor, str]:
    try:
        test = load_split(data_dir, "test", 0, download)
        return scale(test.images[:CHECK_IMAGES]), "test images"
    except DataError:
        return torch.rand(64, 28, 28, generator=torch.Generator().manual_seed(0)), "random images"


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` names the file ``b`` (resolved: links, ``..``, another spelling)."""
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def export(source: Path, fmt: str, out: Path | None, data_dir: Path, download: bool) -> ExportReport:
    """Write ``source``'s model in ``fmt`` (default path: beside it) and check it reproduces PyTorch."""
    if fmt not in FORMATS:
        raise RnnmnistError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")
    path = out if out is not None else source.with_suffix(SUFFIXES[fmt])
    if _same_file(path, source):
        raise RnnmnistError(f"refusing to write the export over its input {source}; choose another --out")
    target(path)  # refused before any work: not a regular file, or a run's own file
    model, _ = checkpoint.load_model(source)  # fp32, eval mode, on the CPU
    if path.parent and not path.parent.is_dir():
        raise RnnmnistError(f"cannot write {path}: folder {path.parent} does not exist")
    images, kind = _check_images(data_dir, download)
    with torch.inference_mode():
        expected = model(images)
    if not bool(torch.isfinite(expected).all()):
        raise CheckpointError(f"{source}: {NOT_FINITE_OUTPUTS}; nothing was written")
    # Checked before it replaces anything: a model that computes something else is never left for
    # someone to use, and a previous file of that name stays as it was.
    with atomic_path(path) as tmp:
        _write(model, fmt, tmp, path)
        got = (_run_onnx if fmt == "onnx" else _run_torchscript)(Path(tmp), images)
        diff = float((got - expected).abs().max())
        same = bool((got.argmax(1) == expected.argmax(1)).all())
        if not diff <= TOLERANCE or not same:  # "not <=": a NaN difference fails too
            raise RnnmnistError(
                f"the {fmt} export of {source} does not reproduce PyTorch (max logit difference {diff:.2e} > "
                f"{TOLERANCE:.0e}); nothing was written"
            )
    return ExportReport(path, fmt, len(images), kind, diff, same)


def _write(model: torch.nn.Module, fmt: str, tmp: str, path: Path) -> None:
    example = torch.rand(2, 28, 28)
    try:
        (_to_onnx if fmt == "onnx" else _to_torchscript)(model, example, tmp)
    except RnnmnistError:
        raise
    except OSError as e:
        raise RnnmnistError(f"cannot write {path}: {e.strerror or e}") from None
    except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as e:
        # The exporters (dynamo, onnxscript, jit) fail in these types, torch.onnx's own errors included.
        raise RnnmnistError(f"exporting to {fmt} failed: {one_line(e)}") from None
