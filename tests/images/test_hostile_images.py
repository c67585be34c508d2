"""Hostile images: every input is a digit or a one-line failure of its own, never an exception that stops a batch."""

from __future__ import annotations

import io
import json
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hostile import hostile_images, random_hostile_images
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from tinymodel import tiny_checkpoint

from rnnmnist.cli.main import cli
from rnnmnist.images.decode import Failed, prepare
from rnnmnist.images.inputs import InputImages
from rnnmnist.images.preprocess import ImageError, to_mnist
from rnnmnist.images.redraw import draw_shape

PROPERTY = settings(deadline=None, derandomize=True, database=None)


def check_outcome(outcome: object) -> None:
    """A digit the model can take, or a one-line reason."""
    if isinstance(outcome, Failed):
        assert outcome.reason and "\n" not in outcome.reason
        return
    assert isinstance(outcome, np.ndarray), outcome
    assert outcome.shape == (28, 28) and outcome.dtype == np.float32
    assert np.isfinite(outcome).all() and outcome.min() >= 0.0 and outcome.max() <= 1.0


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def page(kind: str = "7", scale: int = 3) -> np.ndarray:
    """A digit drawn dark on light paper: (28 * scale, 28 * scale) float in [0, 1]."""
    return 0.94 - 0.86 * np.kron(draw_shape(kind), np.ones((scale, scale)))


def gray8(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a * 255, 0, 255).astype(np.uint8))


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def exif(*entries: tuple[int, int, int, bytes]) -> bytes:
    """EXIF bytes holding the given (tag, type, count, 4-byte value) entries as they are, valid or not."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", *e[:3]) + e[3] for e in entries)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(16)


ROTATED_90 = (0x0112, 3, 1, b"\x06\x00\x00\x00")  # orientation 6: turn 90 degrees clockwise to show
EXPECTED = to_mnist(page())  # what the upright "7" page gives


# --- the reproductions of issue 13, item 5


@pytest.mark.parametrize(
    "bad_tag",
    [(0x0132, 11, 1, b"\xf1 \xa6\xdb"), (0xA005, 1, 2, b"\x86Z\xdf\x9c"), (0x8769, 9, 1, b"\xd7\x0f%\xe0")],
    ids=["datetime-as-float", "interop-pointer-as-bytes", "exif-pointer-negative"],
)
def test_jpeg_with_a_malformed_exif_tag_is_still_turned_upright(bad_tag: tuple[int, int, int, bytes]) -> None:
    # Pillow's ImageOps.exif_transpose raised on these (re-encoding the EXIF), outside the per-input handling.
    stored = gray8(page()).transpose(Image.Transpose.ROTATE_90)  # the camera stored it sideways
    digit = prepare(encode(stored, "JPEG", quality=95, exif=exif(ROTATED_90, bad_tag)))
    check_outcome(digit)
    assert not isinstance(digit, Failed)
    assert similarity(digit, EXPECTED) > 0.9


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])  # Pillow reads such a JPEG as having no EXIF at all
def test_unreadable_exif_fails_alone_in_one_line(fmt: str) -> None:
    data = encode(gray8(page()).convert("RGB"), fmt, exif=b"Exif\x00\x00" + bytes(range(7, 40)))
    assert prepare(data) == Failed(
        "damaged EXIF metadata (not a TIFF file (header b'\\x07\\x08\\t\\n\\x0b\\x0c\\r\\x0e' not valid))"
    )


def test_float_tiff_with_nan_and_inf() -> None:
    only_inf = page().astype(np.float32)
    only_inf[0, :3] = np.inf  # paper brighter than bright: 1
    only_inf[only_inf < 0.2] = -np.inf  # ink darker than dark: 0
    with_nan = only_inf.copy()
    with_nan[2, 5] = np.nan
    digit = prepare(encode(Image.fromarray(only_inf, "F"), "TIFF"))
    assert not isinstance(digit, Failed) and similarity(digit, EXPECTED) > 0.95
    nan = Failed("the image holds NaN (not-a-number) pixels")
    assert prepare(encode(Image.fromarray(with_nan, "F"), "TIFF")) == nan
    assert prepare(encode(Image.fromarray(np.full((9, 7), np.nan, np.float32), "F"), "TIFF")) == nan
    assert prepare(encode(Image.fromarray(np.full((1, 1), np.nan, np.float32), "F"), "TIFF")) == nan


def mode_pages() -> list[tuple[str, str]]:
    return [
        ("LAB", "TIFF"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("YCbCr", "TIFF"),
        ("I;16", "PNG"),
        ("I;16B", "TIFF"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("1", "BMP"),
        ("LA", "PNG"),
        ("PA", "TIFF"),
        ("P", "GIF"),
        ("HSV", "WEBP"),
    ]


def in_mode(a: np.ndarray, mode: str) -> Image.Image:
    """The page ``a`` (float in [0, 1]) as an image of ``mode``, its lightness kept."""
    if mode == "F":
        return Image.fromarray(a.astype(np.float32), "F")
    if mode in ("I;16", "I;16B", "I"):
        values = np.round(a * 65535).astype(np.uint16)
        if mode == "I":
            return Image.fromarray(values.astype(np.int32), "I")
        return Image.frombytes(
            mode, (a.shape[1], a.shape[0]), values.astype("<u2" if mode == "I;16" else ">u2").tobytes()
        )
    if mode == "LAB":
        return Image.merge(
            "LAB",
            [gray8(a), Image.new("L", (a.shape[1], a.shape[0]), 128), Image.new("L", (a.shape[1], a.shape[0]), 128)],
        )
    if mode == "1":
        return gray8(a).point(lambda v: 255 if v > 128 else 0).convert("1")
    return gray8(a).convert("RGB").convert(mode) if mode in ("CMYK", "YCbCr", "HSV") else gray8(a).convert(mode)


@pytest.mark.parametrize(("mode", "fmt"), mode_pages(), ids=lambda v: v)
def test_a_page_in_any_mode_gives_its_digit(mode: str, fmt: str) -> None:
    digit = prepare(encode(in_mode(page(), mode), fmt))
    assert not isinstance(digit, Failed), digit
    assert similarity(digit, EXPECTED) > 0.9


def test_palette_with_transparency_is_ink_on_white() -> None:
    palette = gray8(page()).point(lambda v: 240 if v > 128 else 20).convert("P")  # two colours
    paper = palette.getpixel((0, 0))  # the paper's palette index: transparent, then composited on white
    digit = prepare(encode(palette, "PNG", transparency=paper))
    assert not isinstance(digit, Failed)
    assert similarity(digit, prepare(encode(palette, "PNG"))) > 0.98


def test_one_pixel_wide_or_high_images() -> None:
    column = np.full((40, 1), 0.95, np.float32)
    column[6:34] = 0.1  # a stroke the height of the image, 1 pixel wide: a "1"
    for a in (column, column.T):
        digit = prepare(encode(gray8(a), "PNG"))
        check_outcome(digit)
        assert not isinstance(digit, Failed), digit
        ys, xs = np.nonzero(digit > 0.5)
        tall = a.shape[0] > a.shape[1]
        assert (
            (ys.max() - ys.min() > 4 * (xs.max() - xs.min()))
            if tall
            else (xs.max() - xs.min() > 4 * (ys.max() - ys.min()))
        )
    for value in (0, 255):
        assert prepare(encode(Image.new("L", (1, 1), value), "PNG")) == Failed("no ink found: the image is blank")
        assert prepare(encode(Image.new("RGB", (1, 1), (value, 0, value)), "JPEG")) == Failed(
            "no ink found: the image is blank"
        )


def test_pixels_at_extremes_of_their_range() -> None:
    wide = np.full((30, 30), 2**31 - 1, np.int32)
    wide[5:25, 14:17] = -(2**31)  # an int32 TIFF with the extremes: clipped to the 0-1 scale
    digit = prepare(encode(Image.fromarray(wide, "I"), "TIFF"))
    check_outcome(digit)
    assert not isinstance(digit, Failed)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF"])
def test_a_file_cut_at_every_offset(fmt: str) -> None:
    small = gray8(page(scale=1)).convert("RGB").resize((24, 24))
    data = encode(small, fmt, exif=exif(ROTATED_90)) if fmt in ("JPEG", "WEBP", "PNG") else encode(small, fmt)
    outcomes = [prepare(data[:n]) for n in range(len(data) + 1)]
    for outcome in outcomes:
        check_outcome(outcome)
    assert not isinstance(outcomes[-1], Failed)  # the whole file is a digit
    assert not any(isinstance(o, Failed) and o.reason.startswith("could not prepare") for o in outcomes)


# --- the same boundary in worker processes and through the command


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70 hostile files (more than enough for worker processes) and a good page."""
    folder = tmp_path_factory.mktemp("hostile")
    for i, (suffix, data) in enumerate(random_hostile_images(70, seed=1)):
        (folder / f"{i:03d}{suffix}").write_bytes(data)
    (folder / "good.png").write_bytes(encode(gray8(page()), "PNG"))
    return folder


def test_workers_give_what_one_process_gives(hostile_folder: Path) -> None:
    with InputImages([str(hostile_folder)], workers=2) as images:
        assert images.pool is not None
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # held only while they start
        parallel = images.results()
    with InputImages([str(hostile_folder)], workers=1) as images:
        assert images.pool is None
        serial = images.results()
    assert len(parallel) == len(serial) == 71
    for (name_a, a), (name_b, b) in zip(parallel, serial):
        assert name_a == name_b
        check_outcome(a)
        if isinstance(a, Failed):
            assert a == b
        else:
            assert np.array_equal(a, b)
    assert any(not isinstance(a, Failed) for _, a in parallel)  # some hostile ones are still readable digits


def test_predict_batch_of_the_reproductions(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    model = tiny_checkpoint(tiny_data, tmp_path_factory)
    files = {
        "exif-float-tag.jpg": encode(gray8(page()), "JPEG", exif=exif(ROTATED_90, (0x0132, 11, 1, b"\xf1 \xa6\xdb"))),
        "exif-garbage.webp": encode(gray8(page()).convert("RGB"), "WEBP", exif=b"Exif\x00\x00" + bytes(range(40))),
        "nan.tif": encode(Image.fromarray(np.full((9, 9), np.nan, np.float32), "F"), "TIFF"),
        "lab.tif": encode(in_mode(page(), "LAB"), "TIFF"),
        "column.png": encode(gray8(np.r_[np.full(5, 0.9), np.full(30, 0.1), np.full(5, 0.9)][:, None]), "PNG"),
        "dot.png": encode(Image.new("L", (1, 1), 0), "PNG"),
        "good.png": encode(gray8(page()), "PNG"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = CliRunner().invoke(cli, ["predict", str(model), str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    rows = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(rows) == sorted(files)
    predicted = {name for name, r in rows.items() if "prediction" in r}
    assert predicted == {"exif-float-tag.jpg", "lab.tif", "column.png", "good.png", "dot.png"}
    assert rows["nan.tif"]["error"] == "the image holds NaN (not-a-number) pixels"
    assert rows["exif-garbage.webp"]["error"].startswith("damaged EXIF metadata")
    assert rows["dot.png"]["is_digit"] is False and rows["dot.png"]["reason"] == "no ink"  # blank: not a digit


# --- properties: the class of failure, not only the instances


@settings(PROPERTY, max_examples=120)
@given(hostile_images())
def test_any_hostile_image_is_a_digit_or_a_one_line_failure(image: tuple[str, bytes]) -> None:
    outcome = prepare(image[1])
    check_outcome(outcome)
    event(outcome.reason.split(" (")[0] if isinstance(outcome, Failed) else "a digit")  # --hypothesis-show-statistics


special = st.sampled_from([0.0, 1.0, 0.5, 0.05, 0.95, 1e-8, -0.5, 1.5, np.inf, -np.inf])
pixels = st.one_of(st.floats(0, 1, width=32), special)
gray_arrays = st.one_of(
    arrays(np.float32, st.tuples(st.integers(1, 48), st.integers(1, 48)), elements=pixels),
    arrays(np.float32, st.tuples(st.integers(1, 48), st.integers(1, 48)), elements=special),  # few values, edges
)


@pytest.mark.filterwarnings("error")  # numpy's warnings are bugs here: the boundary would hide them
@settings(PROPERTY, max_examples=150)
@given(gray_arrays)
def test_to_mnist_on_any_array_gives_a_digit_or_says_no_ink(gray: np.ndarray) -> None:
    try:
        digit = to_mnist(gray)
    except ImageError as e:
        assert str(e) == "no ink found: the image is blank"
        return
    check_outcome(digit)
