"""MNIST-style digits from grayscale arrays: light ink on black, fitted in 20x20, centred by mass in 28x28.

MNIST was made by size-normalising each digit to a 20x20 box (keeping the aspect
ratio, anti-aliased) and centring its centre of mass in a 28x28 field. A photo
or drawing is nothing like that: dark ink on light paper, any size, off-centre,
unevenly lit. :func:`to_mnist` undoes the differences, step by step:

1. a working copy no larger than ``WORK_SIZE`` on its longer side (area-averaged);
2. polarity: the paper is what the image's edges mostly show and the ink is the
   extreme farther from it, so dark ink on light paper is inverted to light on dark;
3. the paper level and uneven lighting: a smooth surface (quadratic; a plane or a
   constant for tiny images) is fitted to the pixels that are not ink, found by
   refitting without what stands above the surface, and subtracted;
4. noise: what is within a few noise widths of the paper (estimated robustly)
   becomes 0; the ink level becomes 1;
5. crop to the ink (isolated specks ignored); a digit that is small in a large
   image is processed again from a full-resolution crop;
6. strokes much thinner or thicker than MNIST's (about 2.9 px at 20 px) are
   thickened or thinned;
7. scale the longer side to 20 px (anti-aliased), then place the digit in a
   28x28 field with its centre of mass at MNIST's.

The result is float32 (28, 28) in [0, 1], the model's input. A 28x28 MNIST
digit passes through essentially unchanged. Arrays in, arrays out: reading
files is :mod:`rnnmnist.images.decode`'s work.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from PIL import Image, ImageFilter

WORK_SIZE = 192  # longer side of the working copy
BOX, FIELD = 20, 28
MNIST_CENTRE = 14.0  # MNIST's mean centre of mass, in pixel indices (measured on its test set)
MNIST_STROKE = 2.9  # MNIST's median stroke width in pixels at the 20-pixel scale (measured)
MIN_CONTRAST = 0.05  # ink fainter than this (on a 0-1 scale) is no ink


NO_INK = "no ink found: the image is blank"


class ImageError(Exception):
    """This input cannot be used; the message says why in one line."""


def _resize(a: np.ndarray, height: int, width: int, method: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((width, height), method), dtype=np.float32)


def _shrink(a: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``a`` so its longer side is at most ``size``."""
    h, w = a.shape
    scale = size / max(h, w)
    if scale >= 1:
        return a
    return _resize(a, max(1, round(h * scale)), max(1, round(w * scale)), Image.Resampling.BOX)


def _light_ink(a: np.ndarray) -> np.ndarray:
    """``a`` with the ink lighter than the paper: inverted if the ink is dark.

    The paper is what the image's edges mostly show; the ink is the extreme
    farther from it.
    """
    band = max(1, min(a.shape) // 30)
    frame = np.concatenate([a[:band].ravel(), a[-band:].ravel(), a[:, :band].ravel(), a[:, -band:].ravel()])
    paper = float(np.median(frame))
    low, high = np.percentile(a[::2, ::2], [0.5, 99.5])
    return 1.0 - a if paper - low > high - paper else a


def _background(a: np.ndarray) -> tuple[np.ndarray, float]:
    """The paper under light ink ``a`` and how much the paper varies around it (noise, texture).

    The paper is a smooth surface (quadratic, or a plane or constant for tiny
    images) fitted to the pixels that are not ink, found by refitting without
    what stands above it.
    """
    h, w = a.shape
    step = max(1, round(math.sqrt(h * w / 1500)))  # ~1,500 pixels decide the fit
    y = (np.arange(0, h, step) + 0.5) / h - 0.5
    x = (np.arange(0, w, step) + 0.5) / w - 0.5
    degree = 2 if min(h, w) >= 48 else 1 if min(h, w) >= 16 else 0
    design = _surface_terms(y[:, None], x[None, :], degree)  # (n, terms)
    values = a[::step, ::step].ravel()
    paper = values <= np.median(values)  # ink is lighter and the minority: start from the darker half
    for _ in range(6):
        used = design[paper]
        coef = np.linalg.solve(used.T @ used + 1e-9 * np.eye(used.shape[1]), used.T @ values[paper])
        resid = values - design @ coef
        spread = 1.4826 * float(np.median(np.abs(resid[paper] - np.median(resid[paper])))) + 0.005
        new_paper = resid < 2.5 * spread  # ink stands above the paper; drop it and refit
        if new_paper.sum() < 2 * design.shape[1] or (new_paper == paper).all():
            break
        paper = new_paper
    c = np.zeros(6)
    c[: len(coef)] = coef
    yy = (np.arange(h) + 0.5) / h - 0.5
    xx = (np.arange(w) + 0.5) / w - 0.5
    column = (c[0] + c[1] * yy + c[3] * yy * yy).astype(np.float32)
    row = (c[2] * xx + c[4] * xx * xx).astype(np.float32)
    surface = column[:, None] + row[None, :]
    if c[5]:
        surface += np.outer(np.float32(c[5]) * yy.astype(np.float32), xx.astype(np.float32))
    return surface, spread


def _surface_terms(y: np.ndarray, x: np.ndarray, degree: int) -> np.ndarray:
    """Columns 1, y, x, y^2, x^2, yx (up to ``degree``) over the grid of ``y`` (column) and ``x`` (row)."""
    y, x = np.broadcast_arrays(y, x)
    basis = [np.ones_like(y)]
    if degree >= 1:
        basis += [y, x]
    if degree >= 2:
        basis += [y * y, x * x, y * x]
    return np.stack([b.ravel() for b in basis], axis=1)


def _sum3(a: np.ndarray) -> np.ndarray:
    """Sums over each pixel's 3x3 neighbourhood (zeros outside), in two separable passes."""
    p = np.pad(a, 1)
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def _box3(a: np.ndarray) -> np.ndarray:
    return _sum3(a) / 9.0


def _noise(a: np.ndarray) -> float:
    """Pixel noise (std), from differences of neighbours: flat paper and ink dominate them, edges do not."""
    if a.shape[1] == 1:  # a single column: its neighbours are above and below
        a = a.T
    diffs = np.abs(np.diff(a[::2], axis=1)).ravel()
    return float(np.median(diffs)) / (0.6745 * np.sqrt(2.0)) if diffs.size else 0.0


def _ink(a: np.ndarray) -> np.ndarray:
    """Light-on-dark ink in [0, 1] with paper, lighting and noise at 0; ImageError if there is none."""
    a = _light_ink(a)
    surface, spread = _background(a)
    r = a - surface
    noise = max(_noise(a), spread)
    # Is there ink? Judged on 3x3 means: noise there is a third as large, so a 3-sigma margin is safe.
    peak = float(_box3(r).max())
    if peak < max(MIN_CONTRAST, 3 * noise):
        raise ImageError(NO_INK)
    level = float(np.percentile(r[r > peak / 2], 99))  # the ink's own level, not a noise spike's
    floor = max(3 * noise, 0.01 * level)
    if level <= floor:  # a lone pixel barely above the noise: nothing to scale to 1
        raise ImageError(NO_INK)
    return np.clip((r - floor) / (level - floor), 0.0, 1.0).astype(np.float32)


def _extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive, of the True pixels; ImageError if there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ImageError(NO_INK)
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _bbox(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive, of the ink with its soft edges.

    Found from clear ink (isolated or faint pixels are specks), then widened to
    the faint edge pixels right around it.
    """
    core = ink > 0.25
    core &= _sum3(core.astype(np.uint8)) > 1  # the pixel and at least one neighbour
    if not core.any():
        core = ink > 0
    top, bottom, left, right = _extent(core)
    h, w = ink.shape
    top, left, bottom, right = max(0, top - 2), max(0, left - 2), min(h, bottom + 2), min(w, right + 2)
    t, b, lft, rgt = _extent(ink[top:bottom, left:right] > 0)
    return top + t, top + b, left + lft, left + rgt


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 * area / boundary length of the (lightly smoothed) ink above half level."""
    mask = _box3(ink) > 0.5  # smoothing first: ragged, noisy edges would count as boundary
    area = int(mask.sum())
    if area == 0:
        return 0.0
    p = np.pad(mask, 1)
    interior = mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return 2.0 * area / max(1, area - int(interior.sum()))


def _even_strokes(ink: np.ndarray) -> np.ndarray:
    """Thicken strokes that would be hairlines at 20 px, thin ones that would be blobs."""
    target = MNIST_STROKE * max(ink.shape) / BOX
    width = _stroke_width(ink)
    if 0 < width < 0.6 * target:
        k = 1 + 2 * round((0.8 * target - width) / 2)  # a max filter of size k widens a stroke by k - 1
        ink = np.pad(ink, k)  # room to grow
        return np.asarray(Image.fromarray(ink).filter(ImageFilter.MaxFilter(k)), dtype=np.float32)
    if width > 2.0 * target:
        k = 1 + 2 * round(min(width - target, width / 2) / 2)
        thinner = np.asarray(Image.fromarray(ink).filter(ImageFilter.MinFilter(k)), dtype=np.float32)
        return thinner if (thinner > 0).any() else ink
    return ink


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Scale so the longer side is 20 px, keeping the aspect ratio, anti-aliased; peak ink back to 1."""
    h, w = ink.shape
    scale = BOX / max(h, w)
    out = _resize(ink, max(1, round(h * scale)), max(1, round(w * scale)), Image.Resampling.LANCZOS)
    out = np.clip(out, 0.0, None)
    if out.max() <= 0:  # ink too faint or thin to survive the scaling
        raise ImageError(NO_INK)
    return out / out.max()


def _centre(box: np.ndarray) -> np.ndarray:
    """Place ``box`` in a 28x28 field with its centre of mass at MNIST's."""
    h, w = box.shape
    cy, cx = _centre_of_mass(box)
    top = int(np.clip(round(MNIST_CENTRE - cy), 0, FIELD - h))
    left = int(np.clip(round(MNIST_CENTRE - cx), 0, FIELD - w))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + h, left : left + w] = box
    return field


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    mass = a.sum()
    return (
        float((a.sum(axis=1) * np.arange(a.shape[0])).sum() / mass),
        float((a.sum(axis=0) * np.arange(a.shape[1])).sum() / mass),
    )


def _already_mnist(gray: np.ndarray) -> bool:
    """A 28x28 light digit on black, 20 px on its longer side, centred by mass: nothing to do."""
    if gray.shape != (FIELD, FIELD) or gray.max() <= MIN_CONTRAST:
        return False
    frame = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if frame.max() > 0.05:
        return False
    top, bottom, left, right = _extent(gray > 0.05)
    cy, cx = _centre_of_mass(gray)
    return (
        max(bottom - top, right - left) in (BOX - 1, BOX, BOX + 1)
        and max(abs(cy - MNIST_CENTRE), abs(cx - MNIST_CENTRE)) <= 1
    )


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """The 28x28 MNIST-style digit (float32 in [0, 1]) in a grayscale image (H, W) in [0, 1].

    Any size from 1x1 up; values outside [0, 1] are clipped. ImageError if there is no
    ink, or a pixel is NaN (no value to give it).
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(f"expected a grayscale image with pixels, got an array of shape {gray.shape}")
    if np.isnan(gray).any():
        raise ImageError("the image holds NaN (not-a-number) pixels")
    return _to_mnist(np.clip(gray, 0.0, 1.0), refine=True)


def _to_mnist(gray: np.ndarray, refine: bool) -> np.ndarray:
    if _already_mnist(gray):
        return gray.astype(np.float32)
    work = _shrink(gray, WORK_SIZE)
    ink = _ink(work)
    top, bottom, left, right = _bbox(ink)
    scale = gray.shape[0] / work.shape[0]
    extent = max(bottom - top, right - left)
    if refine and extent < 2 * BOX and scale > 1.5:
        # A small digit in a large image: start again from a full-resolution crop, with paper around it.
        margin = extent * 0.75
        crop = gray[
            max(0, math.floor((top - margin) * scale)) : math.ceil((bottom + margin) * scale),
            max(0, math.floor((left - margin) * scale)) : math.ceil((right + margin) * scale),
        ]
        with contextlib.suppress(ImageError):  # if the crop is too faint to read, the first look stands
            return _to_mnist(crop, refine=False)
    digit = _even_strokes(ink[top:bottom, left:right])
    top, bottom, left, right = _bbox(digit)
    return _centre(_fit_box(digit[top:bottom, left:right]))
