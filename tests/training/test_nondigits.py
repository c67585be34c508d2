"""Non-digit generators: the training one (rnnmnist.training.nondigits) and the held-out judging set
(bench/heldout_nondigits.py) are seeded, make MNIST-style 28x28 images in [0, 1], and are different families."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodel import tiny_checkpoint

from rnnmnist.training import nondigits as training
from rnnmnist.training.augment import fit_to_box
from rnnmnist.training.synthetic import synthetic_digits

ROOT = Path(__file__).resolve().parents[2]


def _bench(name: str):
    """A bench/ script as a module (bench/ is not a package; its scripts import each other by name)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


@pytest.fixture(scope="module")
def held():
    return _bench("heldout_nondigits")


@pytest.fixture(scope="module")
def train_images() -> torch.Tensor:
    """(600, 28, 28) uint8 stand-ins for MNIST training digits."""
    images, _ = synthetic_digits(600, 2)
    return images


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    """(N, 2) (row, column) centres of mass in pixel indices."""
    idx = np.arange(images.shape[1])
    mass = images.sum(axis=(1, 2))
    return np.stack([(images.sum(axis=2) * idx).sum(1) / mass, (images.sum(axis=1) * idx).sum(1) / mass], axis=1)


def _extent(image: np.ndarray, level: float = 0.1) -> tuple[int, int]:
    ys, xs = np.nonzero(image > level)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


# --------------------------------------------------------------------------- the training generator


def test_training_batch_shape_range_and_mix(train_images: torch.Tensor) -> None:
    out = training.nondigit_batch(torch.Generator().manual_seed(0), 128, train_images)
    assert out.shape == (128, 28, 28) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    inked = out.amax(dim=(1, 2)) > 0.5
    assert inked.float().mean() > 0.9  # nearly all hold ink (a noise draw may come out empty)
    assert sum(training.family_counts(128).values()) == 128
    assert [sum(training.family_counts(n).values()) for n in (1, 7)] == [1, 7]
    assert training.family_counts(7)["strokes"] >= 1  # the remainder goes to the first families
    assert training.nondigit_batch(torch.Generator().manual_seed(0), 1, train_images).shape == (1, 28, 28)


def test_training_batch_is_seeded(train_images: torch.Tensor) -> None:
    a = training.nondigit_batch(torch.Generator().manual_seed(3), 64, train_images)
    b = training.nondigit_batch(torch.Generator().manual_seed(3), 64, train_images)
    c = training.nondigit_batch(torch.Generator().manual_seed(4), 64, train_images)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    floats = training.nondigit_batch(torch.Generator().manual_seed(3), 64, train_images.float() / 255)
    assert torch.allclose(floats, a, atol=1e-5)  # uint8 or float digits: the same images


def test_fit_to_box_is_mnist_normalisation() -> None:
    drawing = torch.zeros(2, 40, 40)
    drawing[0, 5:15, 2:32] = 1.0  # a wide bar, off-centre: 30 x 10
    drawing[1, 20:38, 30:36] = 1.0  # a tall one: 18 x 6
    fitted = fit_to_box(drawing).numpy()
    assert abs(max(_extent(fitted[0])) - 20) <= 1 and abs(max(_extent(fitted[1])) - 20) <= 1
    assert np.allclose(_centre_of_mass(fitted), 14.0, atol=0.75)
    stretched = fit_to_box(drawing, keep_aspect=False).numpy()
    for image in stretched:
        h, w = _extent(image, level=0.5)  # a 3x stretch softens the edges: measured at half level
        assert abs(h - 20) <= 1 and abs(w - 20) <= 1
    assert torch.equal(fit_to_box(torch.zeros(1, 40, 40)), torch.zeros(1, 28, 28))  # blank stays blank


def test_tall_thin_drawings_lie_down() -> None:
    bar = torch.zeros(1, 40, 40)
    bar[0, 5:35, 18:22] = 1.0  # would be a fair 1
    flat = training.lying_down(bar)
    assert torch.equal(flat, bar.transpose(1, 2))
    square = torch.zeros(1, 40, 40)
    square[0, 10:30, 10:30] = 1.0
    assert torch.equal(training.lying_down(square), square)


# --------------------------------------------------------------------------- the held-out set


def test_heldout_nondigits_seeded_shapes_ranges(held) -> None:
    images, names = held.nondigits(per_family=1)  # the pen is a numpy distance field: one of each is enough
    again, _ = held.nondigits(per_family=1)
    other, _ = held.nondigits(per_family=1, seed=held.SEED + 1)
    assert images.shape == (len(names), 28, 28) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert set(names) == set(held.FAMILIES)
    blank = names == "blank"
    assert (images[blank] == 0).all()
    drawn = images[~blank]
    assert (drawn.max(axis=(1, 2)) > 0.9).all()
    assert np.allclose(_centre_of_mass(drawn), 14.0, atol=1.0)  # centred by mass, as MNIST
    assert all(19 <= max(_extent(im)) <= 21 for im in drawn)  # longer side in the 20 px box


def test_heldout_numbers_and_other_writers(held) -> None:
    digits = synthetic_digits(50, 3)[0].numpy().astype(np.float32) / 255
    numbers = held.two_digit_numbers(digits, n=12)
    assert numbers.shape == (12, 28, 28) and numbers.min() >= 0 and numbers.max() <= 1
    assert np.array_equal(numbers, held.two_digit_numbers(digits, n=12))
    h, w = _extent(numbers[0])
    assert w > h  # a number is wider than tall
    writers = held.other_writers(digits[:10])
    assert set(writers) == {"binarised", "stretched", "binarised+stretched", "thick pen", "thin pen", "small scan"}
    for name, images in writers.items():
        assert images.shape == (10, 28, 28), name
        assert images.min() >= 0 and images.max() <= 1, name
    assert set(np.unique(writers["binarised"])) <= {0.0, 1.0}
    assert (writers["thick pen"] >= digits[:10]).all()


# --------------------------------------------------------------------------- the two are different families


def test_training_and_heldout_are_different_families(held) -> None:
    """Training typesets letters in Pillow's font and draws strokes, zigzags, blobs and noise with a Gaussian
    brush; the held-out set draws letters and marks by hand (jittered polylines, a round pen)."""
    assert not set(training.MIX) & set(held.FAMILIES)
    assert set(training.MIX) == {"strokes", "zigzags", "blobs", "noise", "fragments", "pairs", "letters"}
    assert {"A", "X", "check", "star", "smiley", "hash", "dot", "blank"} <= set(held.FAMILIES)
    # No training letter is a digit's look-alike: B, D, G, I, O, Q, S and Z pass for 8, 0, 6, 1, 0, 9, 5, 2.
    assert not set(training.LETTERS) & set("BDGIOQSZbdgiloqsz0123456789&{}()[]!?$/|")


def test_rnnmnist_never_imports_the_heldout_set() -> None:
    sources = [p for p in (ROOT / "rnnmnist").rglob("*.py")]
    assert sources
    imports = ("import heldout", "heldout_nondigits import", 'import_module("heldout')
    assert not [p for p in sources if any(i in p.read_text(encoding="utf-8") for i in imports)]
    code = "import sys, rnnmnist.training.nondigits; assert 'heldout_nondigits' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --------------------------------------------------------------------------- typeset letters, the pool


def test_letters_are_typeset_and_bent() -> None:
    bank = training.glyphs()
    assert bank.shape == (len(training.LETTERS), training.GLYPH, training.GLYPH)  # Pillow has FreeType here
    assert bool((bank.amax(dim=(1, 2)) > 0.9).all())  # every letter holds ink
    made = training.letters(torch.Generator().manual_seed(0), 16)
    assert made.shape == (16, training.GLYPH, training.GLYPH) and made.min() >= 0 and made.max() <= 1
    again = training.letters(torch.Generator().manual_seed(0), 16)
    assert torch.equal(made, again)


def test_without_freetype_letters_become_strokes() -> None:
    """Where Pillow lacks FreeType there are no glyphs; the letters' share is drawn as strokes then."""
    assert training.glyphs("").shape == (0, training.GLYPH, training.GLYPH)
    made = training.letters(torch.Generator().manual_seed(1), 5, bank=training.glyphs(""))
    assert made.shape == (5, training.CANVAS, training.CANVAS) and float(made.amax()) > 0.5


def test_pool_is_a_function_of_the_step(train_images: torch.Tensor) -> None:
    """A resumed run draws the same non-digits: step k's depend on the seed and k alone."""
    walked = training.OutlierPool(train_images, 8, seed=5)
    seen = [walked.take(step) for step in range(training.POOL_STEPS + 3)]
    fresh = training.OutlierPool(train_images, 8, seed=5)
    assert torch.equal(fresh.take(training.POOL_STEPS + 2), seen[-1])
    assert torch.equal(fresh.take(1), seen[1])
    assert not torch.equal(seen[0], seen[1])
    assert torch.equal(seen[training.POOL_STEPS], seen[0])  # a pool is used REUSE times (augmented anew each)
    assert not torch.equal(fresh.take(training.POOL_STEPS * training.REUSE), seen[0])
    assert not torch.equal(training.OutlierPool(train_images, 8, seed=6).take(0), seen[0])
    # Two ranks' slices are the one process's batch.
    halves = [training.OutlierPool(train_images, 8, seed=5, world=(r, 2)).take(3) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), seen[3])


@pytest.mark.slow
def test_bench_quick_runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint = tiny_checkpoint(tiny_data, tmp_path_factory)
    done = subprocess.run(
        [sys.executable, "bench/nondigits.py", "--quick", str(checkpoint)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"| {checkpoint} | stored |" in done.stdout and f"| {checkpoint} | fallback |" in done.stdout
    assert f"| {checkpoint} | checks+energy (here) |" in done.stdout
