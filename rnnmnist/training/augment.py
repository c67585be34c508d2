"""Training-time augmentation aimed at how people's digits differ from MNIST's, batched on the device.

MNIST digits are written with one kind of pen, scanned cleanly and normalised the
same way. People's digits (and what rnnmnist's preprocessing makes of them) come
with thicker or thinner strokes, blur from low-resolution scans, other slants and
proportions, wobblier lines and other grey levels. Each transformation below
imitates one of those differences, with a per-image random strength up to its
config field (``aug_*``; 0 turns it off):

- geometry, all in one ``grid_sample``: shift, rotation, scaling, shear,
  perspective and an elastic (smooth random) displacement field;
- stroke thickness: grey-scale dilation (3x3 max-pooling, fractional steps by
  blending) makes strokes up to ``aug_thicker`` pooling steps heavier, erosion
  (min-pooling) up to ``aug_thinner`` of a step lighter;
- blur: a separable Gaussian of per-image width;
- contrast: grey levels raised to a per-image power (soft or hard stroke edges);
- ink: the stroke's peak intensity scaled down;
- noise: a little Gaussian noise.

Other writers and scanners (``aug_writers``, a share of each batch, in five equal parts): ink
binarised at a random level, the digit stretched to fill its 20 px box (some data sets do
that), a pen up to 1.5 px heavier, a pen half a pixel lighter, a scan 10-16 px across enlarged.
A model trained without them read binarised and stretched digits at 90% and a thin pen at 86%.

Everything is drawn from torch's global RNG on the images' device (the state
resumable checkpoints store), a fixed number of draws per batch, so a seeded run
and a resumed one augment identically. No per-image Python.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch.nn import functional as F

ELASTIC_GRID = 4  # control points per side of the elastic field: smooth, stroke-scale wobbles
BLUR_RADIUS = 3  # pixels each side of the Gaussian kernel (enough for sigma <= 1.5)
FIELD, BOX, CENTRE = 28, 20, 14.0  # MNIST: 28x28 field, ink fitted to 20 px, centre of mass at (14, 14)
INK_LEVEL = 0.1  # what counts as ink when finding a drawing's extent


@dataclass(frozen=True)
class Augmentation:
    """Strengths of each transformation (0: off); the ``aug_*`` fields of the config."""

    shift: float = 0.0  # pixels
    rotate: float = 0.0  # degrees
    scale: float = 0.0  # fraction
    shear: float = 0.0  # tan of the shear angle
    perspective: float = 0.0  # how far a corner may move, as a fraction of the image
    elastic: float = 0.0  # pixels of displacement
    thicker: float = 0.0  # 3x3 dilation steps
    thinner: float = 0.0  # fraction of one 3x3 erosion step
    blur: float = 0.0  # Gaussian sigma in pixels
    contrast: float = 0.0  # log2 of the largest gamma
    ink: float = 0.0  # largest fraction the ink's intensity drops by
    noise: float = 0.0  # largest noise standard deviation

    @classmethod
    def from_config(cls, cfg: Any) -> Augmentation:
        """The strengths of ``cfg`` (anything with ``aug_<name>`` attributes)."""
        return cls(**{f.name: getattr(cfg, "aug_" + f.name) for f in fields(cls)})


def augment(images: torch.Tensor, cfg: Any) -> torch.Tensor:
    """A batch (B, 28, 28) float in [0, 1] with its first ``aug_fraction`` augmented by the ``aug_*`` strengths.

    Batches are drawn in random order, so the first images are a random share; the
    number augmented is fixed, which keeps the random draws per batch fixed too.
    """
    aug = _strengths(cfg)
    n = round(images.shape[0] * cfg.aug_fraction)
    if n == images.shape[0]:
        return apply(images, aug)
    if n == 0:
        return images
    return torch.cat([apply(images[:n], aug), images[n:]])  # (B, 28, 28)


@functools.lru_cache(maxsize=8)
def _strengths(cfg: Any) -> Augmentation:
    """``Augmentation.from_config``, once per (frozen, hashable) config rather than once per batch."""
    return Augmentation.from_config(cfg)


def apply(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """``images`` (B, H, W) float in [0, 1] transformed by ``aug``; the same shape, still in [0, 1]."""
    x = warp(images, aug)
    x = thickness(x, aug.thinner, aug.thicker)
    x = blur(x, aug.blur)
    x = contrast(x, aug.contrast)
    x = ink(x, aug.ink)
    return noise(x, aug.noise)


def _uniform(b: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.rand(b, n, device=device) * 2 - 1  # (b, n) in [-1, 1]


def warp(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """One resampling for every geometric change: affine, shear, perspective, elastic."""
    if not any((aug.shift, aug.rotate, aug.scale, aug.shear, aug.perspective, aug.elastic)):
        return images
    b, h, w = images.shape
    device = images.device
    m = _matrix(b, h, w, aug, device)  # (B, 3, 3)
    rows = 3 if aug.perspective else 2  # the homogeneous row matters only for a perspective division
    # Each output pixel's centre mapped into the input as one plain matmul, (B*rows, 3) @ (3, HW):
    # F.affine_grid took 2.5 times as long on the CPU, a batched matmul 3.5 times.
    mapped = (m[:, :rows].reshape(b * rows, 3) @ _pixel_centres(h, w, device)).view(b, rows, h, w)
    grid = mapped[:, :2] / mapped[:, 2:] if aug.perspective else mapped  # (B, 2, H, W): x, y
    if aug.elastic:
        field = _uniform(b * 2, ELASTIC_GRID * ELASTIC_GRID, device).reshape(b, 2, ELASTIC_GRID, ELASTIC_GRID)
        field = _upsample(h, device) @ field @ _upsample(w, device).T  # (B, 2, H, W): smooth
        scale = torch.tensor([2 / w, 2 / h], device=device).view(1, 2, 1, 1) * aug.elastic
        grid = grid + field * scale
    grid = grid.permute(0, 2, 3, 1)  # (B, H, W, 2), a view: grid_sample reads it as fast as a copy
    out = F.grid_sample(images.unsqueeze(1), grid, align_corners=False, padding_mode="zeros")
    return out.squeeze(1).clamp_(0, 1)  # (B, H, W); a guard: elastic fields' bicubic overshoot, rounding


def _matrix(b: int, h: int, w: int, aug: Augmentation, device: torch.device) -> torch.Tensor:
    """(B, 3, 3): maps output coordinates to input ones, in grid_sample's [-1, 1] units, homogeneous.

    Rotation and scaling, then shear, then shift and perspective tilt; each drawn only when on,
    in that order. Built entry by entry and stacked once: small ops dominate at this size.
    """
    one, zero = torch.ones(b, device=device), torch.zeros(b, device=device)
    m00, m01, m10, m11 = one, zero, zero, one  # the linear part, row by row
    if aug.rotate or aug.scale:
        d = _uniform(b, 2, device)
        angle = d[:, 0] * math.radians(aug.rotate)
        inv_scale = 1 / (1 + d[:, 1] * aug.scale)
        cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
        m00, m01, m10, m11 = cos, -sin, sin, cos
    if aug.shear:  # [[1, s0], [s1, 1]] @ the linear part
        s = _uniform(b, 2, device) * aug.shear
        s0, s1 = s[:, 0], s[:, 1]
        m00, m01, m10, m11 = m00 + s0 * m10, m01 + s0 * m11, s1 * m00 + m10, s1 * m01 + m11
    tx = ty = px = py = zero
    if aug.shift:
        t = _uniform(b, 2, device) * aug.shift
        tx, ty = t[:, 0] * (2 / w), t[:, 1] * (2 / h)  # a shift of s px is 2s/size in [-1, 1] units
    if aug.perspective:
        p = _uniform(b, 2, device) * aug.perspective
        px, py = p[:, 0], p[:, 1]
    return torch.stack([m00, m01, tx, m10, m11, ty, px, py, one], dim=1).view(b, 3, 3)


@functools.lru_cache(maxsize=8)
def _pixel_centres(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(3, H*W): the homogeneous coordinates (x, y, 1) of the pixel centres (align_corners=False)."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)]).reshape(3, h * w)


def _upsample(size: int, device: torch.device) -> torch.Tensor:
    """(size, ELASTIC_GRID): bicubic interpolation from the control points as a matrix (bicubic is separable,
    and two small matmuls are much faster than F.interpolate on the CPU)."""
    eye = torch.eye(ELASTIC_GRID, device=device).view(ELASTIC_GRID, 1, ELASTIC_GRID, 1)
    return F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=True).view(ELASTIC_GRID, size).T


def dilate(x: torch.Tensor) -> torch.Tensor:
    """3x3 grey-scale dilation of (B, H, W), pixels outside ignored: what max_pool2d(x, 3, 1, 1) computes
    (max-pooling with stride 1 is very slow on the CPU), as a separable max of shifted slices, in place
    into two copies (no padded copy)."""
    rows = x.clone()  # (B, H, W): the max of each pixel and its left and right neighbours
    torch.maximum(rows[..., 1:], x[..., :-1], out=rows[..., 1:])
    torch.maximum(rows[..., :-1], x[..., 1:], out=rows[..., :-1])
    out = rows.clone()  # then of the rows above and below
    torch.maximum(out[..., 1:, :], rows[..., :-1, :], out=out[..., 1:, :])
    torch.maximum(out[..., :-1, :], rows[..., 1:, :], out=out[..., :-1, :])
    return out


def erode(x: torch.Tensor) -> torch.Tensor:
    """3x3 grey-scale erosion (a min filter) of (B, H, W); pixels outside ignored."""
    return -dilate(-x)


def thickness(images: torch.Tensor, thinner: float, thicker: float) -> torch.Tensor:
    """Strokes a random amount heavier (up to ``thicker`` dilations) or lighter (``thinner`` of an erosion).

    The amount is uniform in [-thinner, thicker]; a fractional amount blends the two nearest whole steps.
    """
    if not (thinner or thicker):
        return images
    b = images.shape[0]
    amount = torch.rand(b, 1, device=images.device) * (thicker + thinner) - thinner  # (B, 1)
    if not thinner and thicker <= 1:  # the default: one dilation step, blended (the general case, cheaper)
        heavier = dilate(images)
        return torch.lerp(images, heavier, amount.view(b, 1, 1), out=heavier)  # in place: one buffer fewer
    if not thicker and thinner <= 1:  # a lighter pen alone (other writers' looks): the same, eroding
        lighter = erode(images)
        return torch.lerp(images, lighter, -amount.view(b, 1, 1), out=lighter)
    levels = [erode(images)] if thinner else []
    levels.append(images)
    for _ in range(math.ceil(thicker)):
        levels.append(dilate(levels[-1]))
    stack = torch.stack(levels, dim=1)  # (B, L, H, W): level i is i - origin steps thicker
    origin = 1 if thinner else 0
    # Hat-function weights: level i gets 1 - |position - i|, clipped at 0 (linear blending of neighbours).
    position = amount + origin
    index = torch.arange(len(levels), device=images.device, dtype=images.dtype)
    weights = (1 - (position - index).abs()).clamp_min(0)  # (B, L)
    return (stack * weights.view(b, -1, 1, 1)).sum(dim=1)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur, sigma uniform in [0, ``sigma``] per image."""
    if not sigma:
        return images
    b = images.shape[0]
    s = torch.rand(b, 1, device=images.device) * sigma + 1e-3  # (B, 1)
    k = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-(k**2) / (2 * s**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    x = images.unsqueeze(0)  # (1, B, H, W): one channel per image, grouped convolution
    x = F.conv2d(x, kernel.view(b, 1, 1, -1), padding=(0, BLUR_RADIUS), groups=b)
    x = F.conv2d(x, kernel.view(b, 1, -1, 1), padding=(BLUR_RADIUS, 0), groups=b)
    return x.squeeze(0)


def contrast(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Grey levels to a power in [2^-strength, 2^strength]: softer or harder stroke edges."""
    if not strength:
        return images
    gamma = torch.exp2(_uniform(images.shape[0], 1, images.device) * strength).view(-1, 1, 1)
    return images.clamp_min(0).pow(gamma)


def ink(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Fainter ink: each image scaled by a factor in [1 - ``strength``, 1]."""
    if not strength:
        return images
    return images * (1 - torch.rand(images.shape[0], 1, 1, device=images.device) * strength)


def noise(images: torch.Tensor, std: float) -> torch.Tensor:
    """Gaussian noise of per-image standard deviation up to ``std``, clipped to [0, 1]."""
    if not std:
        return images
    sd = torch.rand(images.shape[0], 1, 1, device=images.device) * std
    return (images + torch.randn_like(images) * sd).clamp(0, 1)


def fit_to_box(images: torch.Tensor, keep_aspect: bool = True) -> torch.Tensor:
    """(n, 28, 28) from (n, H, W) drawings: the ink's longer side scaled to 20 px, centre of mass at (14, 14).

    One ``grid_sample`` per batch: the scale comes from each image's ink extent, the placement from
    its centre of mass (which scales with the image). Images without ink stay blank. Without
    ``keep_aspect`` both sides become 20 px: the digit stretched to fill its box, as some scanners
    and data sets do.
    """
    n, h, w = images.shape
    device = images.device
    ink = images > INK_LEVEL
    rows, cols = ink.any(dim=2), ink.any(dim=1)  # (n, H), (n, W)
    ar_h, ar_w = torch.arange(h, device=device), torch.arange(w, device=device)
    height = (rows * ar_h).amax(1) - torch.where(rows, ar_h, h).amin(1) + 1
    width = (cols * ar_w).amax(1) - torch.where(cols, ar_w, w).amin(1) + 1
    extent = torch.maximum(height, width).clamp_min(1).float()  # (n,) input pixels
    scale_y = scale_x = BOX / extent  # output pixels per input pixel
    if not keep_aspect:
        scale_y, scale_x = BOX / height.clamp_min(1).float(), BOX / width.clamp_min(1).float()
    mass = images.sum(dim=(1, 2)).clamp_min(1e-6)
    cy = (images.sum(dim=2) * (ar_h + 0.5)).sum(1) / mass  # (n,) centre of mass, input pixel coordinates
    cx = (images.sum(dim=1) * (ar_w + 0.5)).sum(1) / mass
    out = torch.arange(FIELD, device=device, dtype=torch.float32) + 0.5 - (CENTRE + 0.5)  # output offsets
    src_x = cx.view(n, 1, 1) + out.view(1, 1, FIELD) / scale_x.view(n, 1, 1)  # (n, 1, 28) input x
    src_y = cy.view(n, 1, 1) + out.view(1, FIELD, 1) / scale_y.view(n, 1, 1)  # (n, 28, 1) input y
    grid = torch.stack(
        [(src_x * 2 / w - 1).expand(n, FIELD, FIELD), (src_y * 2 / h - 1).expand(n, FIELD, FIELD)], dim=-1
    )  # (n, 28, 28, 2)
    # Shrinking by more than 2 would alias: average-pool first so bilinear sampling sees smooth ink.
    source = images.unsqueeze(1)
    if float(torch.minimum(scale_x, scale_y).min()) < 0.5 and min(h, w) >= 4:
        source = F.avg_pool2d(source, 2)
    fitted = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(1)
    peak = fitted.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, fitted / peak.clamp_min(1e-6), fitted).clamp(0, 1)


def stretch(images: torch.Tensor) -> torch.Tensor:
    """(n, 28, 28) digits stretched to fill the 20x20 box (each side 20 px), centred, as some data sets store them.

    The ink's bounding box is mapped onto the box by one ``grid_sample`` (built as in :func:`warp`):
    for digits already normalised like MNIST's (longer side 20 px) this only ever enlarges.
    """
    n, h, w = images.shape
    ink = images > INK_LEVEL
    rows, cols = ink.any(dim=2), ink.any(dim=1)  # (n, H), (n, W)
    ys = torch.arange(h, device=images.device, dtype=images.dtype)
    xs = torch.arange(w, device=images.device, dtype=images.dtype)
    top, bottom = torch.where(rows, ys, h).amin(1), (rows * ys).amax(1)  # (n,) first and last inked row
    left, right = torch.where(cols, xs, w).amin(1), (cols * xs).amax(1)
    scale_y = ((bottom - top + 1) / BOX).clamp(min=1 / BOX)  # input pixels per output pixel
    scale_x = ((right - left + 1) / BOX).clamp(min=1 / BOX)
    shift_y, shift_x = (top + bottom + 1) / h - 1, (left + right + 1) / w - 1  # box centres, in [-1, 1] units
    zero = torch.zeros_like(scale_x)
    m = torch.stack([scale_x, zero, shift_x, zero, scale_y, shift_y], dim=1)  # (n, 6): two rows of (x, y, 1)
    grid = (m.view(n * 2, 3) @ _pixel_centres(h, w, images.device)).view(n, 2, h, w).permute(0, 2, 3, 1)
    out = F.grid_sample(images.unsqueeze(1), grid, align_corners=False, padding_mode="zeros")
    return out.squeeze(1).clamp_(0, 1)  # (n, 28, 28)


WRITER_LOOKS = 5  # binarised, stretched, heavier pen, lighter pen, small scan


def writers(images: torch.Tensor, share: float) -> torch.Tensor:
    """``images`` (B, 28, 28) in [0, 1], their first ``share`` given other writers' and scanners' looks in place.

    Five equal parts: binarised at a level in [0.3, 0.6], stretched to fill the box, a pen up to 1 px
    heavier, a pen up to half a pixel lighter, a scan 10-16 px across enlarged (one size per batch).
    Batches come in random order, so the first images are a random share; the counts are fixed, and
    so are the random draws. Returns ``images``.
    """
    q = int(images.shape[0] * share / WRITER_LOOKS)
    if q == 0:
        return images
    device = images.device
    part = [images[i * q : (i + 1) * q] for i in range(WRITER_LOOKS)]  # views: each look is written in place
    level = 0.3 + torch.rand(q, 1, 1, device=device) * 0.3
    part[0].copy_(part[0] > level)
    part[1].copy_(stretch(part[1]))
    part[2].copy_(thickness(part[2], 0.0, 1.0))
    part[3].copy_(thickness(part[3], 0.5, 0.0))
    side = 10 + int(torch.randint(0, 7, (1,), device=device))
    small = F.interpolate(part[4].unsqueeze(1), size=(side, side), mode="area")  # (q, 1, s, s)
    enlarged = F.interpolate(small, size=images.shape[1:], mode="bilinear", align_corners=False)  # (q, 1, 28, 28)
    part[4].copy_(enlarged.squeeze(1).clamp_(0, 1))
    return images


def random_affine(images: torch.Tensor) -> torch.Tensor:
    """Randomly shifted (2 px), rotated (10 degrees) and scaled (10%) copies of ``images`` (B, 28, 28)."""
    return warp(images, Augmentation(shift=2.0, rotate=10.0, scale=0.10))
