"""Hostile image files for tests: odd modes, 1-pixel sides, NaN/inf pixels, bad EXIF/ICC blobs, truncation, noise.

One builder, two sources of choices: hypothesis (:func:`hostile_images`, for
property tests that shrink) and a seeded ``random.Random`` (:func:`random_hostile_images`,
for a fixed batch handed to a subprocess).
"""

from __future__ import annotations

import io
import math
import random
import struct
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image, ImageDraw

MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I", "I;16", "I;16B", "F", "LAB", "YCbCr", "HSV"]
FORMATS = ["PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF"]
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}
MAGIC = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe1",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"BM",
    b"GIF89a",
]
FLOATS = [math.nan, math.inf, -math.inf, 0.0, 1.0, 0.5, -1.0, 255.0, 1e30, -1e30, 5e-324]
SIDES = [1, 1, 2, 3, 5, 8, 28, 40, 64]


class Draws:
    """The choices a builder makes; subclasses take them from hypothesis or from a seeded Random."""

    def choice(self, options: Sequence[Any]) -> Any:
        raise NotImplementedError

    def integer(self, low: int, high: int) -> int:
        raise NotImplementedError

    def blob(self, max_size: int) -> bytes:
        raise NotImplementedError


class HypothesisDraws(Draws):
    def __init__(self, draw: Callable[[st.SearchStrategy], Any]) -> None:
        self.draw = draw

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def blob(self, max_size: int) -> bytes:
        return self.draw(st.binary(max_size=max_size))


class RandomDraws(Draws):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, options: Sequence[Any]) -> Any:
        return self.rng.choice(list(options))

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def blob(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))


def _savable() -> dict[str, list[str]]:
    """The formats Pillow saves each mode in (tried on a 2x2 image)."""
    out: dict[str, list[str]] = {}
    for mode in MODES:
        out[mode] = []
        for fmt in FORMATS:
            try:
                Image.new(mode, (2, 2)).save(io.BytesIO(), fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            out[mode].append(fmt)
    return out


SAVABLE = _savable()


def _pixels(d: Draws, mode: str, width: int, height: int) -> Image.Image:
    """An image of ``mode``: a stroke on paper, noise, a constant, or extreme values."""
    content = d.choice(["stroke", "noise", "constant", "extremes"])
    rng = np.random.default_rng(d.integer(0, 2**16))
    if mode == "F":
        if content == "extremes":
            a = rng.choice(np.array(FLOATS, dtype=np.float32), size=(height, width))
        else:
            a = rng.random((height, width), dtype=np.float32)
            a[rng.random((height, width)) < 0.1] = d.choice(FLOATS)
        return Image.fromarray(a.astype(np.float32), "F")
    if mode in ("I", "I;16", "I;16B"):
        top = 2**31 - 1 if mode == "I" else 65535
        low = -(2**31) if mode == "I" else 0
        a = rng.integers(low, top, size=(height, width), endpoint=True, dtype=np.int64)
        if content != "noise":
            a = np.full((height, width), d.choice([low, 0, 255, top]), dtype=np.int64)
        if mode == "I":
            return Image.fromarray(a.astype(np.int32), "I")
        return Image.frombytes(mode, (width, height), a.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    gray = Image.new("L", (width, height), d.choice([0, 128, 240, 255]))
    if content == "stroke":
        draw = ImageDraw.Draw(gray)
        draw.line((0, 0, width - 1, height - 1), fill=d.choice([0, 20, 255]), width=max(1, min(width, height) // 6))
    elif content == "noise":
        gray = Image.fromarray(rng.integers(0, 256, size=(height, width), dtype=np.uint8))
    elif content == "extremes":
        gray = Image.fromarray((rng.random((height, width)) < 0.5).astype(np.uint8) * 255)
    if mode in ("LAB", "HSV", "YCbCr", "CMYK"):
        return gray.convert("RGB").convert(mode) if mode != "LAB" else Image.merge("LAB", [gray, gray, gray])
    im = gray.convert(mode if mode not in ("PA",) else "P")
    if mode == "PA":
        im = im.convert("PA")
    return im


def _exif_blob(d: Draws) -> bytes:
    """EXIF bytes: random, or a valid header with an orientation tag and one more tag of any type and count."""
    if d.choice([True, False]):
        return d.choice([b"", b"Exif\x00\x00"]) + d.blob(40)
    orientation = struct.pack("<HHI", 0x0112, d.choice([3, 3, 4, 7, 11]), d.choice([1, 2, 2**31 - 1])) + struct.pack(
        "<I", d.integer(0, 9)
    )
    other = struct.pack(
        "<HHI",
        d.choice([0x0110, 0x0132, 0x8769, 0x8825, 0x927C, 0xA005]),
        d.integer(0, 13),
        d.choice([0, 1, 7, 2**31 - 1]),
    ) + d.blob(4).ljust(4, b"\x00")
    ifd = struct.pack("<H", 2) + orientation + other + struct.pack("<I", 0)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + d.blob(16)


def _save(im: Image.Image, fmt: str, extras: dict[str, Any]) -> bytes:
    """``im`` saved as ``fmt``, with ``extras`` (exif, icc_profile, transparency) if Pillow accepts them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kwargs in (extras, {}):
            buffer = io.BytesIO()
            try:
                im.save(buffer, fmt, **kwargs)
            except Exception:
                continue
            return buffer.getvalue()
    raise AssertionError(f"Pillow cannot save {im.mode} as {fmt}, even plainly")


def hostile_image(d: Draws) -> tuple[str, bytes]:
    """(file suffix, file bytes) of one hostile image."""
    kind = d.choice(["image", "image", "image", "truncated", "flipped", "noise"])
    if kind == "noise":
        return d.choice(list(SUFFIX.values())), d.choice(MAGIC) + d.blob(300)
    mode = d.choice([m for m in MODES if SAVABLE[m]])
    fmt = d.choice(SAVABLE[mode])
    width, height = d.choice(SIDES), d.choice(SIDES)
    im = _pixels(d, mode, width, height)
    extras: dict[str, Any] = {}
    if d.choice([True, False]):
        extras["exif"] = _exif_blob(d)
    if d.choice([False, False, True]):
        extras["icc_profile"] = d.blob(200)
    if mode == "P" and d.choice([True, False]):
        extras["transparency"] = d.integer(0, 255)
    data = _save(im, fmt, extras)
    if kind == "truncated":
        data = data[: d.integer(0, len(data))]
    elif kind == "flipped":
        at = d.integer(0, len(data) - 1)
        data = data[:at] + d.blob(8) + data[at + 8 :]
    return SUFFIX[fmt], data


@st.composite
def hostile_images(draw: Callable[[st.SearchStrategy], Any]) -> tuple[str, bytes]:
    return hostile_image(HypothesisDraws(draw))


def random_hostile_images(n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [hostile_image(RandomDraws(rng)) for _ in range(n)]
