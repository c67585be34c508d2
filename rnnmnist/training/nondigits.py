"""Non-digits to train on: what a model that can say "not a digit" learns to spread its probabilities on.

Outlier exposure trains a classifier on extra images that are none of its classes (their target
is the uniform distribution, or a reject class). What those images are decides what the model
learns to refuse, so this generator draws broadly and cheaply, a fresh batch every step:

- ``strokes``: 2-4 random quadratic Bezier curves with a Gaussian brush profile;
- ``zigzags``: 1-2 strokes of 2-5 straight segments between random corners;
- ``blobs``: 1-3 soft filled ellipses, none thin enough to pass for a 1;
- ``noise``: smoothed random noise above a random level (stains, textures, speckle);
- ``fragments``: a piece of an MNIST *training* digit: the part on one side of a random line through
  (near) its centre of mass, so about half of it;
- ``pairs``: two MNIST *training* digits side by side, touching or overlapping (numbers, not digits).

Drawings that come out tall and thin are laid on their side (a tall thin mark is a fair 1). Every
image is then normalised the way MNIST and rnnmnist's preprocessing normalise a character
(longer side of its ink to 20 px, centre of mass to the field's centre), so the only thing that
tells it apart from a digit is its shape, never its size or place.

Everything is batched torch on the device of ``train_images`` and drawn from the caller's
``torch.Generator`` (a fixed number of draws per batch, so a seeded run is repeatable and
resumes identically). No per-image Python. The held-out set that judges the rejection
(``bench/heldout_nondigits.py``) draws other shapes (letters and marks) with another renderer;
this module never sees it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.nn import functional as F

from rnnmnist.training.augment import FIELD, INK_LEVEL, dilate, erode, fit_to_box

CANVAS = 40  # strokes, blobs and noise are drawn on a 40x40 canvas, then fitted to the 20 px box
# Share of each family in a batch; the counts are fixed per batch size (a fixed number of draws).
MIX: dict[str, float] = {
    "strokes": 0.15,
    "zigzags": 0.2,
    "blobs": 0.1,
    "noise": 0.05,
    "fragments": 0.1,  # often still a fair digit (half a 3 is a 3): a few teach "pieces are not digits"
    "pairs": 0.2,
    "letters": 0.2,
}
# Letters that no digit resembles (B, D, G, I, O, Q, S, Z and their like are left out: they pass for 8, 0, 6,
# 1, 0, 9, 5, 2), typeset in Pillow's own font, then slanted, stretched and given other pens. Typeset marks
# (# * + @ % ~ < > = ^) were tried beside them: no more non-digits refused, people's digits read no better.
LETTERS = "ACEFHJKLMNPRTUVWXYaefhkmnrtuwy"
GLYPH = 32  # letters are typeset on a GLYPH x GLYPH canvas (fitted to 20 px later: more would only cost time)


def family_counts(n: int) -> dict[str, int]:
    """How many images of each family a batch of ``n`` holds (the remainder goes to the first families)."""
    counts = {name: int(n * share) for name, share in MIX.items()}
    for name in list(MIX)[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def nondigit_batch(generator: torch.Generator, n: int, train_images: torch.Tensor) -> torch.Tensor:
    """``n`` non-digit images (n, 28, 28) float32 in [0, 1], on ``train_images``' device, in random order.

    ``train_images`` (N, 28, 28) uint8 (or float in [0, 1]) are MNIST *training* digits, the
    source of fragments and pairs; ``generator`` lives on the same device and is the only
    source of randomness.
    """
    counts = family_counts(n)
    parts = [
        lying_down(strokes(generator, counts["strokes"])),
        lying_down(zigzags(generator, counts["zigzags"])),
        lying_down(blobs(generator, counts["blobs"])),
        lying_down(noise(generator, counts["noise"])),
        lying_down(fragments(generator, counts["fragments"], train_images)),
        pairs(generator, counts["pairs"], train_images),
        letters(generator, counts["letters"]),
    ]
    device = train_images.device
    images = torch.cat([fit_to_box(p.to(device)) for p in parts if p.shape[0]])  # (n, 28, 28)
    return images[torch.randperm(n, generator=generator, device=generator.device).to(device)]


def lying_down(images: torch.Tensor, ratio: float = 0.6) -> torch.Tensor:
    """Square drawings (n, S, S) whose ink is tall and narrow (width < ``ratio`` of height) turned on their side.

    Fitted to the box, a tall thin mark is a fair 1 (and a model taught to refuse it refuses 1s);
    lying down it is a dash, which no digit is.
    """
    ink = images > INK_LEVEL
    ar = torch.arange(images.shape[1], device=images.device)
    rows, cols = ink.any(dim=2), ink.any(dim=1)
    height = (rows * ar).amax(1) - torch.where(rows, ar, images.shape[1]).amin(1) + 1
    width = (cols * ar).amax(1) - torch.where(cols, ar, images.shape[2]).amin(1) + 1
    tall = (width < ratio * height).view(-1, 1, 1)
    return torch.where(tall, images.transpose(1, 2), images)


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, device=g.device)


def _grid(size: int, device: torch.device) -> torch.Tensor:
    """(size*size, 2): pixel centres (x, y) in canvas pixels."""
    c = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def strokes(g: torch.Generator, n: int, curves: int = 4, points: int = 64) -> torch.Tensor:
    """(n, 40, 40): 2-``curves`` quadratic Bezier curves each, drawn with a Gaussian brush of random width.

    Points along each curve are splatted (bilinear) into the canvas and blurred with the brush:
    a distance field per segment cost about as much as a training step.
    """
    if n == 0:
        return torch.zeros(0, CANVAS, CANVAS, device=g.device)
    ctrl = _rand(g, n, curves, 3, 2) * (CANVAS - 8) + 4  # (n, C, 3, 2): control points in pixels
    # At least two curves: one alone is too often a fair 1, 7 or 6 (and a model taught to refuse it, refuses digits).
    used = _rand(g, n, curves) < torch.tensor([1.0, 1.0, 0.5, 0.3], device=g.device)[:curves]  # (n, C)
    t = torch.linspace(0, 1, points, device=g.device).view(1, 1, points, 1)
    p0, p1, p2 = ctrl[:, :, 0:1], ctrl[:, :, 1:2], ctrl[:, :, 2:3]
    path = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).reshape(n, -1, 2) - 0.5  # (n, C*P, 2)
    weight = used.repeat_interleave(points, dim=1).float()  # (n, C*P)
    canvas = _splat(path, weight, CANVAS)
    sigma = 0.8 + _rand(g, n, 1) * 1.7  # brush sigma in canvas pixels
    inked = _gaussian_blur(canvas, sigma)
    return (inked / inked.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6) * 1.8).clamp(0, 1)


def zigzags(g: torch.Generator, n: int, lines: int = 2, corners: int = 6, points: int = 20) -> torch.Tensor:
    """(n, 40, 40): 1-``lines`` pen strokes of 2-5 straight segments between random corners (crossing or not)."""
    if n == 0:
        return torch.zeros(0, CANVAS, CANVAS, device=g.device)
    vertex = _rand(g, n, lines, corners, 2) * (CANVAS - 8) + 4  # (n, L, V, 2)
    segments = 2 + (_rand(g, n, lines, 1) * 4).long()  # (n, L, 1): 2-5 segments per stroke
    used = (torch.arange(corners - 1, device=g.device).view(1, 1, -1) < segments).float()  # (n, L, V-1)
    used[:, 1:] *= (_rand(g, n, lines - 1, 1) < 0.5).float()  # the second stroke half the time
    t = torch.linspace(0, 1, points, device=g.device).view(1, 1, 1, points, 1)
    a, b = vertex[:, :, :-1].unsqueeze(3), vertex[:, :, 1:].unsqueeze(3)  # (n, L, V-1, 1, 2)
    path = (a + (b - a) * t).reshape(n, -1, 2) - 0.5  # (n, L*(V-1)*P, 2)
    weight = used.unsqueeze(-1).expand(n, lines, corners - 1, points).reshape(n, -1)
    inked = _gaussian_blur(_splat(path, weight, CANVAS), 0.8 + _rand(g, n, 1) * 1.7)
    return (inked / inked.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6) * 1.8).clamp(0, 1)


def _splat(xy: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size, size): each point (n, K, 2) in pixel-index coordinates added to its 4 nearest pixels."""
    n = xy.shape[0]
    base = xy.floor()
    frac = xy - base
    out = torch.zeros(n, size * size, device=xy.device)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = base[..., 0] + dx, base[..., 1] + dy
            w = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1]) * weight
            inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            idx = (y.clamp(0, size - 1) * size + x.clamp(0, size - 1)).long()
            out.scatter_add_(1, idx, w * inside)
    return out.view(n, size, size)


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(n, S, S) blurred by a Gaussian of per-image ``sigma`` (n, 1), up to a constant factor (callers
    normalise the peak): two batched matmuls with the Gaussian as a matrix. Grouped convolutions took
    1.6 ms a call on the CPU (oneDNN), as long as a quarter of a training step."""
    size = images.shape[-1]
    k = torch.arange(size, device=images.device, dtype=images.dtype)
    gauss = torch.exp(-((k.view(1, -1, 1) - k.view(1, 1, -1)) ** 2) / (2 * sigma.view(-1, 1, 1) ** 2))  # (n, S, S)
    return gauss @ images @ gauss  # symmetric: rows, then columns


BLOB_CANVAS = 20  # blobs are smooth: drawn at half the canvas (a quarter of the cost), then fitted like the rest


def blobs(g: torch.Generator, n: int, count: int = 3) -> torch.Tensor:
    """(n, 20, 20): 1-``count`` soft filled ellipses (at most about 2:1) of random size and angle."""
    size = BLOB_CANVAS
    if n == 0:
        return torch.zeros(0, size, size, device=g.device)
    centre = _rand(g, n, count, 2) * (size - 8) + 4  # (n, K, 2)
    major = 1.5 + _rand(g, n, count, 1) * 4  # no thin dashes: a lone dash is a fair 1
    radii = torch.cat([major, major * (0.45 + _rand(g, n, count, 1) * 0.55)], dim=2)  # (n, K, 2)
    angle = _rand(g, n, count) * math.pi
    used = _rand(g, n, count) < torch.tensor([1.0, 0.5, 0.3], device=g.device)[:count]
    d = _grid(size, g.device).view(1, -1, 1, 2) - centre.unsqueeze(1)  # (n, HW, K, 2)
    cos, sin = torch.cos(angle).unsqueeze(1), torch.sin(angle).unsqueeze(1)  # (n, 1, K)
    u = (d[..., 0] * cos + d[..., 1] * sin) / radii[:, None, :, 0]
    v = (-d[..., 0] * sin + d[..., 1] * cos) / radii[:, None, :, 1]
    inside = torch.sigmoid((1 - (u * u + v * v).sqrt()) * 3) * used.unsqueeze(1)  # (n, HW, K)
    return inside.amax(dim=2).view(n, size, size)


def noise(g: torch.Generator, n: int) -> torch.Tensor:
    """(n, 40, 40): random noise smoothed at a random scale, kept above a random level (stains, speckle)."""
    if n == 0:
        return torch.zeros(0, CANVAS, CANVAS, device=g.device)
    coarse = _rand(g, n, 1, 10, 10)
    fine = _rand(g, n, 1, CANVAS, CANVAS)
    mix = _rand(g, n, 1, 1, 1)  # blotches (0) to speckle (1)
    field = (1 - mix) * F.interpolate(coarse, size=(CANVAS, CANVAS), mode="bilinear", align_corners=False)
    field = (field + mix * F.avg_pool2d(fine, 3, 1, 1)).squeeze(1)  # (n, 40, 40)
    level = 0.55 + _rand(g, n, 1, 1) * 0.3
    return ((field - level) * 8).clamp(0, 1)


def _pick(g: torch.Generator, n: int, train_images: torch.Tensor) -> torch.Tensor:
    """(n, 28, 28) float in [0, 1]: random training digits."""
    idx = torch.randint(0, train_images.shape[0], (n,), generator=g, device=g.device).to(train_images.device)
    picked = train_images.index_select(0, idx)
    return picked.float() / 255 if picked.dtype == torch.uint8 else picked.float()


def fragments(g: torch.Generator, n: int, train_images: torch.Tensor) -> torch.Tensor:
    """(n, 28, 28): the part of a training digit on one side of a random line near its centre of mass."""
    if n == 0:
        return torch.zeros(0, FIELD, FIELD, device=train_images.device)
    digits = _pick(g, n, train_images)
    device = digits.device
    angle = (_rand(g, n) * 2 * math.pi).to(device)
    offset = ((_rand(g, n) - 0.5) * 3).to(device)  # the line passes within 1.5 px of the centre of mass
    mass = digits.sum(dim=(1, 2)).clamp_min(1e-6)
    centre = _grid(FIELD, device).view(1, FIELD, FIELD, 2).mul(digits.unsqueeze(-1)).sum(dim=(1, 2)) / mass.view(n, 1)
    grid = _grid(FIELD, device).unsqueeze(0) - centre.unsqueeze(1)  # (n, HW, 2): about the centre of mass
    side = grid[..., 0] * torch.cos(angle).unsqueeze(1) + grid[..., 1] * torch.sin(angle).unsqueeze(1)  # (n, HW)
    keep = torch.sigmoid((side - offset.unsqueeze(1)) * 2).view(n, FIELD, FIELD)
    return digits * keep


def pairs(g: torch.Generator, n: int, train_images: torch.Tensor) -> torch.Tensor:
    """(n, 28, 48): two training digits side by side, 6 px apart to overlapping by 8, one up to 3 px higher."""
    if n == 0:
        return torch.zeros(0, FIELD, FIELD, device=train_images.device)
    first, second = _pick(g, n, train_images), _pick(g, n, train_images)
    device = first.device
    width = 48
    canvas = torch.zeros(n, FIELD, width, device=device)
    canvas[:, :, :FIELD] = first
    # The second digit's shift right, whole pixels: 20 px puts the two 20 px boxes 0 px apart (MNIST's box
    # sits 4 px in from each side), less overlaps them.
    shift = (12 + _rand(g, n) * 14).long().to(device)  # 12..25
    drop = ((_rand(g, n) - 0.5) * 6).round().long().to(device)
    cols = torch.arange(width, device=device).view(1, 1, -1) - shift.view(n, 1, 1)  # source column per column
    rows = torch.arange(FIELD, device=device).view(1, -1, 1) - drop.view(n, 1, 1)
    valid = (cols >= 0) & (cols < FIELD) & (rows >= 0) & (rows < FIELD)  # (n, 28, 48)
    flat = (rows.clamp(0, FIELD - 1) * FIELD + cols.clamp(0, FIELD - 1)).view(n, -1)
    moved = second.view(n, -1).gather(1, flat).view(n, FIELD, width) * valid
    return torch.maximum(canvas, moved)


@functools.lru_cache(maxsize=4)
def glyphs(alphabet: str = LETTERS) -> torch.Tensor:
    """(L, 32, 32) float in [0, 1]: each letter of ``alphabet`` typeset in Pillow's default font, ink centred.

    Pillow's scalable default font needs FreeType; without it there are no glyphs (L = 0) and the
    letters' share of a batch goes to strokes.
    """
    from PIL import Image, ImageDraw, ImageFont, features

    if not features.check("freetype2"):
        return torch.zeros(0, GLYPH, GLYPH)
    font = ImageFont.load_default(size=22)
    out = []
    for letter in alphabet:
        image = Image.new("L", (GLYPH, GLYPH))
        draw = ImageDraw.Draw(image)
        left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
        draw.text(((GLYPH - right - left) / 2, (GLYPH - bottom - top) / 2), letter, fill=255, font=font)
        out.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(GLYPH, GLYPH))
    return torch.stack(out).float() / 255 if out else torch.zeros(0, GLYPH, GLYPH)


def letters(g: torch.Generator, n: int, bank: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 32, 32): typeset letters (``bank``, by default :func:`glyphs`) slanted, rotated, stretched and with
    heavier or lighter pens, as hands vary; (n, 40, 40) strokes instead when there are no glyphs."""
    bank = glyphs() if bank is None else bank
    if n == 0 or bank.shape[0] == 0:
        return strokes(g, n) if n else torch.zeros(0, GLYPH, GLYPH, device=g.device)
    picked = bank.to(g.device)[torch.randint(0, bank.shape[0], (n,), generator=g, device=g.device)]
    d = _rand(g, n, 4) * 2 - 1  # (n, 4) in [-1, 1]: rotation, shear, aspect, size
    angle, shear = d[:, 0] * math.radians(20), d[:, 1] * 0.35
    sx, sy = torch.exp2(d[:, 2] * 0.4), torch.exp2(d[:, 3] * 0.2)  # stretched up to 1.3x either way
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(n, device=g.device)
    theta = torch.stack([cos / sx, (-sin + shear) / sx, zero, sin / sy, cos / sy, zero], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta, [n, 1, GLYPH, GLYPH], align_corners=False)
    bent = F.grid_sample(picked.unsqueeze(1), grid, align_corners=False).squeeze(1)  # (n, 64, 64)
    pen = _rand(g, n, 1, 1)  # heavier pens for some, lighter for others
    heavier, lighter = dilate(bent), erode(bent)
    return torch.where(pen < 0.35, heavier, torch.where(pen > 0.8, lighter, bent)).clamp(0, 1)


POOL_STEPS = 32  # steps' worth of non-digits made at once: a batch of 32 alone cost 2.5 ms, 40% of a step
REUSE = 4  # each pool serves this many rounds of POOL_STEPS steps: a non-digit is seen 4 times, augmented anew


class OutlierPool:
    """The non-digits each training step adds (outlier exposure), made :data:`POOL_STEPS` steps at a time and
    used :data:`REUSE` times (the augmentation makes each use look different).

    The pool for a step depends on the seed and which pool it is alone, never on what ran before,
    so a resumed run draws the very same non-digits with nothing to save, and the global RNG that
    augmentation and dropout use is not touched. In a distributed run each rank takes its slice of
    the step's non-digits, as it takes its slice of the digits: the whole batch is one process's.
    """

    def __init__(self, train_images: torch.Tensor, per_step: int, seed: int, world: tuple[int, int] = (0, 1)) -> None:
        self.train_images, self.per_step, self.seed = train_images, per_step, seed
        rank, size = world
        local = per_step // size
        self._slice = slice(rank * local, (rank + 1) * local)  # this rank's share of a step's non-digits
        self._index, self._pool = -1, torch.zeros(0)

    def take(self, step: int) -> torch.Tensor:
        """This rank's non-digits (n, 28, 28) of step ``step`` (counted from 0), on the images' device."""
        index, at = divmod(step, POOL_STEPS * REUSE)
        at %= POOL_STEPS
        if index != self._index:
            self._pool = nondigit_batch(self._generator(index), self.per_step * POOL_STEPS, self.train_images)
            self._index = index
        return self._pool[at * self.per_step : (at + 1) * self.per_step][self._slice]

    def _generator(self, index: int) -> torch.Generator:
        seed = np.random.SeedSequence([self.seed, index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(seed) >> 1)  # a CPU generator; the images follow the data's device
