"""MNIST-style preprocessing of people's images, on inputs the tests draw themselves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rnnmnist.images.decode import Failed, load_digit, open_image, to_gray
from rnnmnist.images.inputs import InputImages
from rnnmnist.images.preprocess import ImageError, to_mnist
from rnnmnist.images.redraw import Style, draw_shape, random_style, redraw


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def mnist_style(shape: np.ndarray) -> np.ndarray:
    """A drawn shape made MNIST-like (20x20 box, centred by mass): the reference to compare with."""
    return to_mnist(shape)


def check_mnist_like(digit: np.ndarray) -> None:
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() >= 0.0 and digit.max() == pytest.approx(1.0)
    ys, xs = np.nonzero(digit > 0.05)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (18, 19, 20, 21, 22)
    mass = digit.sum()
    cy = (digit.sum(axis=1) * np.arange(28)).sum() / mass
    cx = (digit.sum(axis=0) * np.arange(28)).sum() / mass
    assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0


STYLES = [
    Style((64, 64), 0.8, (0.5, 0.5), 0, 0.1, 0.95, 0.0, 0.0, 0.0, 0.0, "L", "PNG"),  # clean, small canvas
    Style((400, 300), 0.5, (0.1, 0.9), 2, 0.2, 0.85, 0.35, 1.0, 1.5, 0.03, "RGB", "JPEG"),  # thick, lit, blurred
    Style((250, 400), 0.3, (0.9, 0.1), -1, 0.3, 0.75, 0.4, 4.0, 0.7, 0.05, "L", "JPEG"),  # thin, dim, noisy
    Style((120, 90), 0.9, (0.0, 0.0), 1, 0.0, 1.0, 0.2, 2.0, 2.5, 0.02, "RGBA", "PNG"),  # transparent sheet
    Style((333, 77), 0.6, (0.3, 0.5), 0, 0.25, 0.8, 0.3, 0.6, 0.0, 0.05, "RGB", "PNG"),  # wide strip
    Style((90, 380), 0.2, (0.5, 0.7), 0, 0.15, 0.9, 0.1, 5.0, 0.0, 0.02, "L", "PNG"),  # small in tall
]


@pytest.mark.parametrize("kind", ["0", "1", "7"])
@pytest.mark.parametrize("style", STYLES, ids=lambda s: f"{s.canvas[0]}x{s.canvas[1]}-{s.mode}-{s.fmt}")
def test_redrawn_shapes_are_recovered(kind: str, style: Style) -> None:
    shape = draw_shape(kind)
    digit = load_digit(redraw(shape, style, seed=1))
    check_mnist_like(digit)
    assert similarity(digit, mnist_style(shape)) > 0.6


def test_random_styles_recover_shapes() -> None:
    rng = np.random.default_rng(0)
    scores = []
    for i in range(60):
        shape = draw_shape("017"[i % 3])
        digit = load_digit(redraw(shape, random_style(rng), seed=i))
        check_mnist_like(digit)
        scores.append(similarity(digit, mnist_style(shape)))
    assert np.median(scores) > 0.85
    assert min(scores) > 0.5


def test_inverted_input_matches_dark_on_light() -> None:
    shape = draw_shape("7")
    light = Image.fromarray(((1 - np.kron(shape, np.ones((6, 6)))) * 230 + 10).astype(np.uint8))
    dark = Image.fromarray((np.kron(shape, np.ones((6, 6))) * 230 + 10).astype(np.uint8))
    a, b = to_mnist(to_gray(light)), to_mnist(to_gray(dark))
    assert similarity(a, b) > 0.99


def test_tiny_input_is_scaled_up() -> None:
    shape = draw_shape("0")
    small = np.asarray(Image.fromarray(shape).resize((10, 10), Image.Resampling.BOX))
    digit = to_mnist(1.0 - small)  # dark on light, 10x10
    check_mnist_like(digit)
    assert similarity(digit, mnist_style(shape)) > 0.7


def test_mnist_style_input_passes_through() -> None:
    for kind in "017":
        digit = mnist_style(draw_shape(kind))
        again = to_mnist(digit)
        assert np.abs(again - digit).mean() < 0.01
        assert similarity(again, digit) > 0.99


def test_lighting_gradient_is_not_ink() -> None:
    yy, xx = np.mgrid[0:200, 0:300]
    page = (0.95 - 0.5 * xx / 300 - 0.2 * yy / 200).astype(np.float32)
    with pytest.raises(ImageError, match="no ink found"):
        to_mnist(page)
    with pytest.raises(ImageError, match="no ink found"):
        to_mnist(np.full((50, 50), 0.8, dtype=np.float32))
    noisy = np.clip(0.8 + np.random.default_rng(0).normal(0, 0.03, (120, 120)), 0, 1).astype(np.float32)
    with pytest.raises(ImageError, match="no ink found"):
        to_mnist(noisy)
    shape = draw_shape("1")
    page[50:150, 100:200] -= 0.5 * np.kron(shape, np.ones((4, 4)))[6:106, :100]  # now with a stroke
    check_mnist_like(to_mnist(page))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_sixteen_bit_and_palette_images() -> None:
    shape = np.kron(draw_shape("7"), np.ones((4, 4)))
    sixteen = Image.fromarray(((1 - shape) * 65535).astype(np.uint16))
    palette = Image.fromarray(((1 - shape) * 255).astype(np.uint8)).convert("P")
    for data in (_png(sixteen), _png(palette)):
        assert similarity(load_digit(data), mnist_style(draw_shape("7"))) > 0.85


def test_bad_inputs_fail_in_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(redraw(draw_shape("0"), STYLES[0])[:300])
    blank = tmp_path / "blank.png"
    Image.new("L", (80, 80), 240).save(blank)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 6_000)).save(bomb)  # tiny file, 60 megapixels
    assert bomb.stat().st_size < 200_000
    cases = {
        tmp_path / "missing.png": "no such file",
        text: "not an image Pillow can read",
        truncated: "damaged image",
        blank: "no ink found",
        bomb: "over the 50 MP limit",
        tmp_path: "is a directory",
    }
    for path, message in cases.items():
        with pytest.raises(ImageError, match=message) as e:
            load_digit(path)
        assert "\n" not in str(e.value)


def test_oversized_image_is_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("L", (9_000, 9_000), 255).save(buffer, "PNG")
    with pytest.raises(ImageError, match="9000x9000 \\(81 MP\\), over the 50 MP limit"):
        open_image(buffer.getvalue())


def test_many_images_in_parallel_match_one_by_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for i in range(70):  # enough to use worker processes
        (tmp_path / f"{i:03d}.png").write_bytes(redraw(draw_shape("017"[i % 3]), random_style(rng), seed=i))
    inputs = [str(tmp_path), str(tmp_path / "missing.png")]
    with InputImages(inputs, workers=2) as images:
        assert images.pool is not None
        parallel = images.results()
    with InputImages(inputs, workers=1) as images:
        assert images.pool is None
        serial = images.results()
    assert len(parallel) == 71
    assert parallel[-1] == serial[-1] == (str(tmp_path / "missing.png"), Failed("no such file"))
    for (name_a, a), (name_b, b) in zip(parallel[:-1], serial[:-1]):
        assert name_a == name_b
        assert np.array_equal(a, b)


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF", "WEBP"])
def test_other_formats_pillow_reads(fmt: str) -> None:
    page = Image.fromarray(((1 - np.kron(draw_shape("7"), np.ones((5, 5)))) * 235 + 10).astype(np.uint8)).convert("RGB")
    buffer = io.BytesIO()
    page.save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert similarity(load_digit(buffer.getvalue()), mnist_style(draw_shape("7"))) > 0.9
