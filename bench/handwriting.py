"""A held-out check with real handwriting that is not MNIST: UCI optdigits, as people would hand it in.

scikit-learn ships `load_digits` inside its wheel (no download): 1,797 digits written by 13
people on NIST forms (the test part of UCI's "Optical Recognition of Handwritten Digits"), each a
32x32 bitmap reduced to 8x8 blocks counting the ink pixels (0-16). Nothing of it is MNIST, and
rnnmnist never trains on it.

Each digit becomes an image the way a low-resolution scan looks once enlarged: a PNG of 64-200 px,
dark ink on light paper (paper and ink levels vary), the 8x8 counts enlarged with bicubic
interpolation (thick, blurred strokes), placed with a margin at a random spot, with a little
sensor noise; a third are saved as RGB. The images are then read back from the files the way
`rnnmnist predict` reads them (rnnmnist's preprocessing) and, for scale, naively (grey values
resized to 28x28).

The set is split in two halves: `dev` (the first 900 digits), which the augmentation choices
were compared on, and `test` (the other 897), which is only reported. Standalone:

    python bench/handwriting.py runs/a/checkpoint.pt runs/b/checkpoint.pt [--part test] [--json]
    python bench/handwriting.py --save-images DIR     # look at the images
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 14  # the images' styles; fixed so every model is measured on the same files
DEV_SIZE = 900
PARTS = ("dev", "test", "all")
CONFIDENT = 0.9  # the calibration threshold reported in the README


def optdigits(part: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The digits ((N, 8, 8) float32 in [0, 1], ink high) and labels (N,) of one part of the set."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the handwriting check needs scikit-learn: pip install -e '.[dev]'") from None
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    chosen = {"dev": slice(0, DEV_SIZE), "test": slice(DEV_SIZE, None), "all": slice(None)}[part]
    return images[chosen], labels[chosen]


def render(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """PNG bytes of an (8, 8) ink map in [0, 1], scanned and enlarged: dark on light, 64-200 px."""
    from PIL import Image

    side = int(rng.integers(64, 201))
    box = max(16, round(side * rng.uniform(0.45, 0.8)))  # the digit's 32x32 field, enlarged
    ink_map = Image.fromarray(digit).resize((box, box), Image.Resampling.BICUBIC)
    coverage = np.zeros((side, side), dtype=np.float32)
    top, left = (int(v) for v in rng.integers(0, side - box + 1, size=2))
    coverage[top : top + box, left : left + box] = np.clip(np.asarray(ink_map, dtype=np.float32), 0, 1)
    paper, ink = rng.uniform(0.8, 1.0), rng.uniform(0.0, 0.35)
    gray = paper - (paper - ink) * coverage + rng.normal(0, rng.uniform(0.0, 0.02), coverage.shape)
    im = Image.fromarray((np.clip(gray, 0, 1) * 255).round().astype(np.uint8))
    if rng.uniform() < 1 / 3:
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_images(folder: Path, part: str = "test", limit: int | None = None) -> np.ndarray:
    """Write the part's digits as PNG files (NNNNN-LABEL.png) into ``folder``; return the labels."""
    digits, labels = optdigits(part)
    digits, labels = digits[:limit], labels[:limit]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for i, (digit, label) in enumerate(zip(digits, labels)):
        (folder / f"{i:05d}-{label}.png").write_bytes(render(digit, rng))
    return labels


@dataclass
class HandwritingInputs:
    """One part of the set, ready for any model: both ways of making 28x28 inputs."""

    preprocessed: np.ndarray  # (N, 28, 28) float32: rnnmnist's preprocessing (as `predict`)
    naive: np.ndarray  # (N, 28, 28) float32: grey values resized to 28x28
    labels: np.ndarray  # (N,)


def prepare(part: str = "test", limit: int | None = None) -> HandwritingInputs:
    """Render the part to PNG files and read them back both ways."""
    from PIL import Image

    from rnnmnist.images.decode import Failed, open_image, to_gray
    from rnnmnist.images.inputs import InputImages

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        labels = write_images(folder, part, limit)
        with InputImages([str(folder)]) as images:
            loaded = images.results()
        failed = [(name, d) for name, d in loaded if isinstance(d, Failed)]
        if failed:
            raise SystemExit(f"preprocessing failed on {failed[0][0]}: {failed[0][1].reason}")
        naive = [
            np.asarray(Image.fromarray(to_gray(open_image(p))).resize((28, 28)), dtype=np.float32)
            for p in sorted(folder.iterdir())
        ]
    return HandwritingInputs(np.stack([d for _, d in loaded]), np.stack(naive), labels)


def calibration(probs: np.ndarray, labels: np.ndarray, threshold: float = CONFIDENT) -> dict[str, float | None]:
    """How many predictions are above ``threshold`` confidence, and how often those are right."""
    confident = probs.max(axis=1) > threshold
    right = probs.argmax(axis=1) == labels
    return {
        "share_confident": float(confident.mean()),
        "accuracy_confident": float(right[confident].mean()) if confident.any() else None,
        "accuracy_rest": float(right[~confident].mean()) if (~confident).any() else None,
    }


def measure(model, precision: str, inputs: HandwritingInputs) -> dict[str, float | None]:
    """Accuracy with rnnmnist's preprocessing and with naive resizing, and calibration above 0.9."""
    import torch

    from rnnmnist.images.predict import probabilities

    ours = probabilities(model, torch.from_numpy(inputs.preprocessed), precision).numpy()
    naive = probabilities(model, torch.from_numpy(inputs.naive), precision).numpy()
    result: dict[str, float | None] = {
        "n": len(inputs.labels),
        "accuracy_preprocessed": float((ours.argmax(1) == inputs.labels).mean()),
        "accuracy_naive": float((naive.argmax(1) == inputs.labels).mean()),
    }
    result.update(calibration(ours, inputs.labels))
    return result


def mnist_test(model, precision: str, data_dir: Path) -> dict[str, float | None]:
    """Accuracy and calibration above 0.9 on the 10,000 MNIST test images."""
    from rnnmnist.images.predict import probabilities
    from rnnmnist.training.data import load_split, scale

    test = load_split(data_dir, "test", 0, download=False)
    probs = probabilities(model, scale(test.images), precision).numpy()
    labels = test.labels.numpy()
    return {"mnist_accuracy": float((probs.argmax(1) == labels).mean()), **calibration(probs, labels)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", type=Path)
    p.add_argument("--part", default="test", help=f"comma-separated: {', '.join(PARTS)} [default: test]")
    p.add_argument("--data-dir", type=Path, help="also measure the MNIST test set (and its calibration)")
    p.add_argument("--save-images", type=Path, help="write the (first) part's PNGs into this folder")
    p.add_argument("--json", action="store_true", help="one JSON object per checkpoint and part")
    a = p.parse_args()
    parts = [part.strip() for part in a.part.split(",")]
    if any(part not in PARTS for part in parts):
        p.error(f"--part: choose from {', '.join(PARTS)}")
    if a.save_images:
        write_images(a.save_images, parts[0])
    if not a.checkpoints:
        return
    from rnnmnist.training.checkpoint import load_model

    inputs = {part: prepare(part) for part in parts}
    for path in a.checkpoints:
        model, ckpt = load_model(path)
        row: dict = {"checkpoint": str(path)}
        if a.data_dir:
            mnist = mnist_test(model, ckpt.config.precision, a.data_dir)
            row |= {k if k.startswith("mnist") else f"mnist_{k}": v for k, v in mnist.items()}
        for part in parts:
            row[part] = measure(model, ckpt.config.precision, inputs[part])
        if a.json:
            print(json.dumps(row))
            continue
        text = "; ".join(
            f"handwriting {part} ({r['n']}): {r['accuracy_preprocessed']:.2%} preprocessed, "
            f"{r['accuracy_naive']:.2%} naive"
            for part, r in ((part, row[part]) for part in parts)
        )
        print(f"{path}: {text}" + (f"; MNIST test {row['mnist_accuracy']:.2%}" if a.data_dir else ""))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
