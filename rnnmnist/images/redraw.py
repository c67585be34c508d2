"""Realistic "people's images" of digits, redrawn from 28x28 digits, for tests and measurements.

A digit is redrawn the way people hand one to a classifier: dark ink on light
paper, on a canvas of 64-400 px, at any position and size, with thin or thick
strokes, uneven lighting, blur and noise, saved as L/RGB/RGBA PNG or JPEG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass
class Style:
    canvas: tuple[int, int]  # (width, height)
    height_fraction: float  # digit height / canvas height
    position: tuple[float, float]  # where the digit sits, 0-1 of the free space
    thickness: int  # max/min filter size at canvas scale: > 0 thicker, < 0 thinner
    ink: float  # ink gray level (dark)
    paper: float  # paper gray level (light)
    gradient: float  # lighting falls off by this much across the page
    angle: float  # direction of the lighting gradient
    blur: float  # Gaussian blur radius in canvas pixels
    noise: float  # Gaussian noise std
    mode: str  # "L", "RGB", "RGBA"
    fmt: str  # "PNG" or "JPEG"


def random_style(rng: np.random.Generator) -> Style:
    w, h = (int(v) for v in rng.integers(64, 401, size=2))
    return Style(
        canvas=(w, h),
        height_fraction=float(rng.uniform(0.3, 0.9)),
        position=(float(rng.uniform()), float(rng.uniform())),
        thickness=int(rng.choice([-1, 0, 0, 1, 2, 3])),
        ink=float(rng.uniform(0.0, 0.35)),
        paper=float(rng.uniform(0.7, 1.0)),
        gradient=float(rng.uniform(0.0, 0.4)),
        angle=float(rng.uniform(0, 2 * np.pi)),
        blur=float(rng.choice([0.0, 0.0, 0.7, 1.5, 2.5])),
        noise=float(rng.choice([0.0, 0.02, 0.05])),
        mode=str(rng.choice(["L", "RGB", "RGBA"])),
        fmt=str(rng.choice(["PNG", "JPEG"])),
    )


def _digit_mask(digit: np.ndarray, style: Style) -> tuple[np.ndarray, tuple[int, int]]:
    """The digit's ink coverage (0-1) scaled onto the canvas, and its top-left position."""
    ys, xs = np.nonzero(digit > 0)
    crop = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    cw, ch = style.canvas
    scale = min(style.height_fraction * ch / crop.shape[0], (cw - 2) / crop.shape[1])
    height = max(8, round(crop.shape[0] * scale))
    width = max(4, round(crop.shape[1] * scale))
    scaled = Image.fromarray(crop / max(1.0, float(crop.max()))).resize((width, height), Image.Resampling.BICUBIC)
    k = 1 + 2 * abs(style.thickness) * max(1, height // 80)
    if style.thickness > 0:
        scaled = scaled.filter(ImageFilter.MaxFilter(k))
    elif style.thickness < 0 and height >= 80:
        scaled = scaled.filter(ImageFilter.MinFilter(3))
    top = int(style.position[1] * (ch - height))
    left = int(style.position[0] * (cw - width))
    return np.clip(np.asarray(scaled, dtype=np.float32), 0, 1), (top, left)


def redraw(digit: np.ndarray, style: Style, seed: int = 0) -> bytes:
    """Encoded image bytes of ``digit`` ((28, 28), light on dark, any range) drawn in ``style``."""
    rng = np.random.default_rng(seed)
    cw, ch = style.canvas
    coverage = np.zeros((ch, cw), dtype=np.float32)
    mask, (top, left) = _digit_mask(digit, style)
    coverage[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    along = (np.cos(style.angle) * xx / cw + np.sin(style.angle) * yy / ch + 1) / 2  # 0-1 across the page
    light = 1.0 - style.gradient * along
    gray = (style.paper * (1 - coverage) + style.ink * coverage) * light
    image = Image.fromarray(np.clip(gray * 255, 0, 255).astype(np.uint8))
    if style.blur:
        image = image.filter(ImageFilter.GaussianBlur(style.blur))
    gray = np.asarray(image, dtype=np.float32) / 255 + rng.normal(0, style.noise, (ch, cw))
    gray8 = np.clip(gray * 255, 0, 255).astype(np.uint8)
    if style.mode == "L":
        out = Image.fromarray(gray8)
    elif style.mode == "RGB":  # blue-black pen on slightly warm paper
        tint = np.stack([gray8 * 1.0, gray8 * 0.97, gray8 * 0.9 + 25 * coverage], axis=-1)
        out = Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8))
    else:  # ink on a transparent sheet: colour is the ink, alpha says where it is
        alpha = np.clip(coverage * 255, 0, 255).astype(np.uint8)
        ink8 = np.full_like(gray8, int(style.ink * 255))
        out = Image.fromarray(np.stack([ink8, ink8, ink8, alpha], axis=-1))
    buffer = io.BytesIO()
    if style.fmt == "JPEG":  # no alpha in JPEG: the sheet is photographed on white
        if out.mode == "RGBA":
            out = Image.alpha_composite(Image.new("RGBA", out.size, (255, 255, 255, 255)), out).convert("RGB")
        out.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    else:
        out.save(buffer, "PNG")
    return buffer.getvalue()


def draw_shape(kind: str, size: int = 28) -> np.ndarray:
    """A simple digit-like 28x28 shape (light on black) for tests that have no MNIST: 0, 1 or 7."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    if kind == "0":
        draw.ellipse((8, 4, 20, 24), outline=255, width=3)
    elif kind == "1":
        draw.line((14, 4, 14, 24), fill=255, width=3)
    elif kind == "7":
        draw.line((7, 5, 21, 5), fill=255, width=3)
        draw.line((21, 5, 12, 24), fill=255, width=3)
    else:
        raise ValueError(kind)
    return np.asarray(image.filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float32) / 255
