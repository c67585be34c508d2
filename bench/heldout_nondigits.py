"""The held-out judging sets for "not a digit": never trained on, never imported by rnnmnist.

Three kinds of images, all 28x28 float32 in [0, 1], white ink on black, the way MNIST (and
rnnmnist's preprocessing) presents a character: fitted into a 20x20 box keeping its aspect
ratio, anti-aliased, its centre of mass placed at the field's centre.

- :func:`nondigits`: hand-drawn-looking shapes that are not digits: letters that do not look like
  digits (A E F H K M N R W X Y), check marks, crosses, plus signs, stars, arrows, smileys, hashes,
  squiggles, scribbles, a single dot and a blank page.
- :func:`two_digit_numbers`: two MNIST *test* digits side by side (a number such as "42"), sized
  together into one box as a person's number would be.
- :func:`other_writers`: MNIST test digits as other writers and scanners give them: binarised,
  stretched to fill the box, binarised and stretched, a thick pen, a thin pen, small scans.

How the non-digits are drawn differs on purpose from the training generator
(``rnnmnist.training.nondigits``): shapes here are polylines of letter and symbol skeletons (the
training generator draws none), jittered vertex by vertex and wobbled along their length, rendered
with a round pen as an anti-aliased distance field at 4x resolution in numpy, then resized with
PIL's Lanczos filter. The training generator draws Bezier strokes, blobs, noise and pieces of
MNIST *training* digits with Gaussian brush profiles in torch. Judging on this set is therefore
judging on shapes and rendering the model never saw.

    python bench/heldout_nondigits.py --save-sheet /tmp/nd/sheet.png   # look at them
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

SEED = 23  # the set's one seed: every model is judged on the same images
SUPER = 4  # the pen is drawn at this many times the final resolution
BOX, FIELD, CENTRE = 20, 28, 14.0  # MNIST: longer side 20 px, centre of mass at (14, 14) in pixel indices

Polyline = np.ndarray  # (K, 2) points (x, y) in unit coordinates, y down
Shape = list[Polyline]


# --------------------------------------------------------------------------- shape skeletons


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, k: int = 24) -> Polyline:
    """Points on an elliptic arc from angle ``start`` to ``end`` (degrees, 0 = right, 90 = down)."""
    t = np.radians(np.linspace(start, end, k))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _line(*points: tuple[float, float]) -> Polyline:
    return np.array(points, dtype=np.float64)


LETTERS: dict[str, Callable[[np.random.Generator], Shape]] = {
    "A": lambda r: [_line((0.1, 1), (0.5, 0), (0.9, 1)), _line((0.28, 0.6), (0.72, 0.6))],
    "E": lambda r: [_line((0.8, 0), (0.2, 0), (0.2, 1), (0.8, 1)), _line((0.2, 0.5), (0.65, 0.5))],
    "F": lambda r: [_line((0.8, 0), (0.2, 0), (0.2, 1)), _line((0.2, 0.5), (0.65, 0.5))],
    "H": lambda r: [_line((0.2, 0), (0.2, 1)), _line((0.8, 0), (0.8, 1)), _line((0.2, 0.5), (0.8, 0.5))],
    "K": lambda r: [_line((0.2, 0), (0.2, 1)), _line((0.8, 0), (0.2, 0.55)), _line((0.38, 0.42), (0.85, 1))],
    "M": lambda r: [_line((0.1, 1), (0.15, 0), (0.5, 0.65), (0.85, 0), (0.9, 1))],
    "N": lambda r: [_line((0.2, 1), (0.2, 0), (0.8, 1), (0.8, 0))],
    "R": lambda r: [
        _line((0.2, 1), (0.2, 0)),
        np.concatenate([_line((0.2, 0)), _arc(0.45, 0.25, 0.3, 0.25, -90, 90), _line((0.2, 0.5))]),
        _line((0.4, 0.5), (0.85, 1)),
    ],
    "W": lambda r: [_line((0.0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1.0, 0))],
    "X": lambda r: [_line((0.15, 0), (0.85, 1)), _line((0.85, 0), (0.15, 1))],
    "Y": lambda r: [_line((0.15, 0), (0.5, 0.5), (0.85, 0)), _line((0.5, 0.5), (0.5, 1))],
}


def _check(r: np.random.Generator) -> Shape:
    return [_line((0.0, 0.55), (0.35, 1.0), (1.0, 0.0 + r.uniform(0, 0.2)))]


def _cross(r: np.random.Generator) -> Shape:  # a ballot cross: two strokes, the second often hooked
    second = _line((0.9, 0.1), (0.1, 0.9))
    if r.uniform() < 0.5:
        second = np.concatenate([second, _line((0.05, 0.75))])
    return [_line((0.1, 0.1), (0.9, 0.9)), second]


def _plus(r: np.random.Generator) -> Shape:
    return [_line((0.5, 0.05), (0.5, 0.95)), _line((0.05, 0.5), (0.95, 0.5))]


def _star(r: np.random.Generator) -> Shape:
    if r.uniform() < 0.5:  # a pentagram in one stroke
        t = np.radians(-90 + 144 * np.arange(6))
        return [np.stack([0.5 + 0.5 * np.cos(t), 0.5 + 0.5 * np.sin(t)], axis=1)]
    spokes = int(r.integers(3, 5))  # an asterisk of 3-4 crossing strokes
    shape = []
    for i in range(spokes):
        a = math.pi * i / spokes + r.uniform(-0.15, 0.15)
        dx, dy = 0.5 * math.cos(a), 0.5 * math.sin(a)
        shape.append(_line((0.5 - dx, 0.5 - dy), (0.5 + dx, 0.5 + dy)))
    return shape


def _arrow(r: np.random.Generator) -> Shape:
    shaft, head = _line((0.0, 0.5), (1.0, 0.5)), _line((0.7, 0.25), (1.0, 0.5), (0.7, 0.75))
    a = math.radians(float(r.choice([0, 45, 90, 135, 180, 225, 270, 315])))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return [(p - 0.5) @ rot.T + 0.5 for p in (shaft, head)]


def _smiley(r: np.random.Generator) -> Shape:
    face = _arc(0.5, 0.5, 0.5, 0.5, 0, 360, 40)
    eyes = [_line((0.33, 0.35), (0.34, 0.37)), _line((0.66, 0.35), (0.67, 0.37))]
    mouth = _arc(0.5, 0.55, 0.25, 0.2, 20, 160, 12)
    return [face, *eyes, mouth]


def _hash(r: np.random.Generator) -> Shape:
    return [
        _line((0.35, 0.0), (0.3, 1.0)),
        _line((0.7, 0.0), (0.65, 1.0)),
        _line((0.05, 0.33), (0.95, 0.33)),
        _line((0.05, 0.67), (0.95, 0.67)),
    ]


def _squiggle(r: np.random.Generator) -> Shape:
    x = np.linspace(0, 1, 60)
    if r.uniform() < 0.5:  # a wave
        y = 0.5 + 0.2 * np.sin(2 * math.pi * r.uniform(2, 4) * x + r.uniform(0, 6.3))
        return [np.stack([x, y], axis=1)]
    t = np.linspace(0, 2 * math.pi * r.uniform(3, 5), 120)  # a loopy spring written left to right
    x = np.linspace(0, 1, len(t))
    return [np.stack([0.1 * np.cos(t) + x * 0.9, 0.5 + 0.25 * np.sin(t)], axis=1)]


def _scribble(r: np.random.Generator) -> Shape:
    k = int(r.integers(8, 16))  # a fast back-and-forth: random points, one stroke
    return [r.uniform(0, 1, size=(k, 2))]


def _dot(r: np.random.Generator) -> Shape:
    return [_line((0.5, 0.5))]  # one touch of the pen


MARKS: dict[str, Callable[[np.random.Generator], Shape]] = {
    "check": _check,
    "cross": _cross,
    "plus": _plus,
    "star": _star,
    "arrow": _arrow,
    "smiley": _smiley,
    "hash": _hash,
    "squiggle": _squiggle,
    "scribble": _scribble,
    "dot": _dot,
}
FAMILIES = [*LETTERS, *MARKS, "blank"]


# --------------------------------------------------------------------------- the hand and the pen


def _resample(line: Polyline, step: float) -> Polyline:
    """Points every ``step`` along the polyline (its corners kept approximately)."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    if s[-1] < step:
        return line
    t = np.linspace(0, s[-1], max(2, int(s[-1] / step) + 1))
    return np.stack([np.interp(t, s, line[:, 0]), np.interp(t, s, line[:, 1])], axis=1)


def _hand(shape: Shape, r: np.random.Generator) -> Shape:
    """The skeleton as a person draws it: slanted, stretched, corners misplaced, lines wobbling."""
    a = math.radians(r.uniform(-12, 12))
    shear, aspect = r.uniform(-0.25, 0.25), r.uniform(0.75, 1.3)
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array([[aspect, shear], [0, 1]])
    out = []
    for line in shape:
        pts = line + r.normal(0, 0.025, size=line.shape)  # each vertex a little off
        pts = _resample(pts, 0.02)
        s = np.linspace(0, 1, len(pts))[:, None]
        wobble = 0.015 * np.sin(2 * math.pi * (r.uniform(0.5, 2, size=2) * s + r.uniform(0, 1, size=2)))
        out.append((pts + wobble - 0.5) @ m.T + 0.5)
    return out


def _pen(shape: Shape, radius: float, size: int) -> np.ndarray:
    """A round pen of ``radius`` (unit coords) along every polyline: an anti-aliased (size, size) canvas.

    The shape is scaled so its extent spans the canvas with a margin; each pixel's ink is how far
    inside the pen's disk its nearest stroke passes, ramped over one pixel.
    """
    pts = np.concatenate(shape)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = max(float((hi - lo).max()), 0.3)  # a dot stays a dot, not a line blown up to the canvas
    scale = (size - 2 * (radius * size + 2)) / extent  # pixels per unit, leaving the pen room
    centre = (lo + hi) / 2
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)  # (P, 2) pixel centres
    dist = np.full(grid.shape[0], np.inf)
    for line in shape:
        p = (line - centre) * scale + size / 2  # (K, 2) in pixels
        a, b = (p[:-1], p[1:]) if len(p) > 1 else (p, p)
        ab = b - a  # (S, 2)
        t = ((grid[:, None, :] - a[None]) * ab[None]).sum(-1) / np.maximum((ab**2).sum(-1), 1e-9)[None]
        nearest = a[None] + np.clip(t, 0, 1)[..., None] * ab[None]  # (P, S, 2)
        dist = np.minimum(dist, np.linalg.norm(grid[:, None, :] - nearest, axis=-1).min(axis=1))
    r_px = max(radius * scale * extent, 1.2)  # the pen in pixels, relative to the shape's size
    return np.clip(r_px - dist + 0.5, 0, 1).reshape(size, size).astype(np.float32)


def to_field(ink: np.ndarray) -> np.ndarray:
    """MNIST's normalisation of an ink canvas: crop, longer side to 20 px (Lanczos), centre by mass in 28x28."""
    from PIL import Image

    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    ys, xs = np.nonzero(ink > 0.02)
    if len(ys) == 0:
        return field
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    s = BOX / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    box = np.clip(np.asarray(Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)), 0, None)
    box = box / max(float(box.max()), 1e-6)
    mass = box.sum()
    cy = (box.sum(axis=1) * np.arange(box.shape[0])).sum() / mass
    cx = (box.sum(axis=0) * np.arange(box.shape[1])).sum() / mass
    top = int(np.clip(round(CENTRE - cy), 0, FIELD - box.shape[0]))
    left = int(np.clip(round(CENTRE - cx), 0, FIELD - box.shape[1]))
    field[top : top + box.shape[0], left : left + box.shape[1]] = box
    return np.clip(field, 0, 1)


def draw(family: str, r: np.random.Generator) -> np.ndarray:
    """One 28x28 image of ``family``, hand-drawn with a pen of random thickness."""
    if family == "blank":
        return np.zeros((FIELD, FIELD), dtype=np.float32)
    skeleton = (LETTERS.get(family) or MARKS[family])(r)
    radius = r.uniform(0.035, 0.1) if family != "dot" else r.uniform(0.02, 0.05)
    return to_field(_pen(_hand(skeleton, r), radius, BOX * SUPER))


def nondigits(per_family: int = 40, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) float32 non-digits and (N,) their family names; ``per_family`` of each (blank: 5)."""
    r = np.random.default_rng(seed)
    images, names = [], []
    for family in FAMILIES:
        for _ in range(per_family if family != "blank" else min(per_family, 5)):
            images.append(draw(family, r))
            names.append(family)
    return np.stack(images), np.array(names)


# --------------------------------------------------------------------------- numbers and other writers


def _crop(digit: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(digit > 0.05)
    return digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def two_digit_numbers(test_images: np.ndarray, n: int = 500, seed: int = SEED) -> np.ndarray:
    """(n, 28, 28): two MNIST test digits (``test_images``, (N, 28, 28) in [0, 1]) written as one number.

    Each pair is cropped, put side by side with a gap of 0-4 px (sometimes touching, a little up or
    down), upsampled 4x and normalised together like one character (longer side 20 px).
    """
    from PIL import Image

    r = np.random.default_rng(seed + 1)
    out = []
    for _ in range(n):
        a, b = (_crop(test_images[i]) for i in r.integers(0, len(test_images), size=2))
        gap, drop = int(r.integers(-1, 5)), int(r.integers(-2, 3))
        h = max(a.shape[0], b.shape[0]) + abs(drop)
        canvas = np.zeros((h, a.shape[1] + b.shape[1] + max(gap, 0) + 1), dtype=np.float32)
        canvas[: a.shape[0], : a.shape[1]] = a
        left = a.shape[1] + gap
        top = max(drop, 0)
        region = canvas[top : top + b.shape[0], left : left + b.shape[1]]
        np.maximum(region, b[: region.shape[0], : region.shape[1]], out=region)
        big = Image.fromarray(canvas).resize(
            (canvas.shape[1] * SUPER, canvas.shape[0] * SUPER), Image.Resampling.BICUBIC
        )
        out.append(to_field(np.clip(np.asarray(big), 0, 1)))
    return np.stack(out)


def _dilate(x: np.ndarray, k: int) -> np.ndarray:
    """Grey dilation with a k x k square (k = 2 or 3) of (N, H, W), via shifted maxima."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    offsets = range(0, 3) if k == 3 else range(1, 3)
    h, w = x.shape[1:]
    return np.max([p[:, i : i + h, j : j + w] for i in offsets for j in offsets], axis=0)


def _stretch(digit: np.ndarray) -> np.ndarray:
    """The digit resized to fill the 20x20 box (aspect ratio not kept), centred by mass."""
    from PIL import Image

    crop = _crop(digit)
    box = np.clip(np.asarray(Image.fromarray(crop).resize((BOX, BOX), Image.Resampling.BILINEAR)), 0, 1)
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    mass = box.sum()
    cy = (box.sum(axis=1) * np.arange(BOX)).sum() / mass
    cx = (box.sum(axis=0) * np.arange(BOX)).sum() / mass
    top, left = (int(np.clip(round(CENTRE - c), 0, FIELD - BOX)) for c in (cy, cx))
    field[top : top + BOX, left : left + BOX] = box
    return field


def _small_scan(digit: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(digit).resize((side, side), Image.Resampling.BOX)
    return np.clip(np.asarray(im.resize((FIELD, FIELD), Image.Resampling.BILINEAR)), 0, 1)


def other_writers(test_images: np.ndarray) -> dict[str, np.ndarray]:
    """MNIST test digits (N, 28, 28) in [0, 1] as other writers and scanners give them; each (N, 28, 28)."""
    x = test_images.astype(np.float32)
    binary = (x > 0.5).astype(np.float32)
    stretched = np.stack([_stretch(d) for d in x])
    thin = -_dilate(-x, 2)  # a 2x2 erosion: half a pixel off each side of every stroke
    thin = thin / np.maximum(thin.max(axis=(1, 2), keepdims=True), 1e-6)
    return {
        "binarised": binary,
        "stretched": stretched,
        "binarised+stretched": (stretched > 0.5).astype(np.float32),
        "thick pen": _dilate(x, 3),
        "thin pen": thin,
        "small scan": np.stack([_small_scan(d, 12) for d in x]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--save-sheet", type=Path, required=True, help="a PNG contact sheet of the non-digits")
    a = p.parse_args()
    from PIL import Image

    images, _ = nondigits(per_family=8)
    cols = 16
    rows = math.ceil(len(images) / cols)
    sheet = np.zeros((rows * 30, cols * 30), dtype=np.float32)
    for i, im in enumerate(images):
        sheet[(i // cols) * 30 + 1 : (i // cols) * 30 + 29, (i % cols) * 30 + 1 : (i % cols) * 30 + 29] = im
    Image.fromarray((sheet * 255).astype(np.uint8)).resize((cols * 60, rows * 60), Image.Resampling.NEAREST).save(
        a.save_sheet
    )


if __name__ == "__main__":
    main()
