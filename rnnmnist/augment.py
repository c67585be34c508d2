"""Training-time augmentation, batched on the training device: small random affine warps.

Each image gets its own shift (up to 2 px), rotation (up to 10 degrees) and scale
(up to 10%), applied with one affine_grid/grid_sample over the whole batch. The
draws come from torch's RNG on the device, which resumable checkpoints store.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

MAX_SHIFT = 2.0  # pixels
MAX_ROTATION = 10.0  # degrees
MAX_SCALE = 0.10  # fraction


def random_affine(images: torch.Tensor) -> torch.Tensor:
    """Randomly shifted, rotated and scaled copies of ``images`` (B, 28, 28) float in [0, 1]."""
    b, h, w = images.shape
    draws = torch.rand(b, 4, device=images.device) * 2 - 1  # (B, 4) uniform in [-1, 1]
    angle = draws[:, 0] * math.radians(MAX_ROTATION)
    scale = 1 + draws[:, 1] * MAX_SCALE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps output to input coordinates in [-1, 1]; a shift of s px is 2s/size there.
    theta = torch.stack(
        [
            torch.stack([cos, -sin, draws[:, 2] * 2 * MAX_SHIFT / w], dim=1),
            torch.stack([sin, cos, draws[:, 3] * 2 * MAX_SHIFT / h], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, (b, 1, h, w), align_corners=False)  # (B, 28, 28, 2)
    return F.grid_sample(images.unsqueeze(1), grid, align_corners=False, padding_mode="zeros").squeeze(1)
