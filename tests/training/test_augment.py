"""Augmentation: each transformation does what it says, off is identity, seeded, and it trains."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rnnmnist.cli.main import cli
from rnnmnist.config import DEFAULTS
from rnnmnist.training import checkpoint
from rnnmnist.training.augment import Augmentation, apply, augment, random_affine
from rnnmnist.training.synthetic import tiny_train_args

EVERYTHING = Augmentation(
    shift=2, rotate=10, scale=0.1, shear=0.2, perspective=0.1, elastic=1.5,
    thicker=2, thinner=0.5, blur=1.0, contrast=1.0, ink=0.3, noise=0.05,
)  # fmt: skip


@pytest.fixture
def digits() -> torch.Tensor:
    """(32, 28, 28) float in [0, 1]: strokes of MNIST-like width (3 px) with soft edges."""
    x = torch.zeros(32, 28, 28)
    x[:, 6:22, 12:15] = 1.0  # a vertical bar
    x[:, 6:9, 9:19] = 1.0  # and a top bar: a "T"
    x[:, 6:22, 11] = 0.5
    x[:, 6:22, 15] = 0.5
    return x


def ink_pixels(x: torch.Tensor) -> torch.Tensor:
    return (x > 0.5).sum(dim=(1, 2))  # (B,)


def test_every_augmentation_keeps_shape_dtype_and_range_and_draws_per_image(digits: torch.Tensor) -> None:
    torch.manual_seed(0)
    out = apply(digits, EVERYTHING)
    assert out.shape == digits.shape and out.dtype == digits.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()
    assert not torch.equal(out, digits)
    assert not torch.equal(out[0], out[1])  # each image its own draw


def test_augmentation_off_is_the_identity_and_each_transformation_does_something(digits: torch.Tensor) -> None:
    assert apply(digits, Augmentation()) is digits
    for f in dataclasses.fields(Augmentation):  # each transformation with its own strength at 0
        others = dataclasses.replace(EVERYTHING, **{f.name: 0.0})
        torch.manual_seed(0)
        with_it = apply(digits, EVERYTHING)
        torch.manual_seed(0)
        assert not torch.equal(with_it, apply(digits, others)), f.name  # every one of them does something


def test_augmentation_is_seeded(digits: torch.Tensor) -> None:
    torch.manual_seed(3)
    a = apply(digits, EVERYTHING)
    torch.manual_seed(3)
    b = apply(digits, EVERYTHING)
    c = apply(digits, EVERYTHING)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)


def test_thicker_adds_ink_thinner_removes_it(digits: torch.Tensor) -> None:
    before = ink_pixels(digits)
    torch.manual_seed(0)
    thick = ink_pixels(apply(digits, Augmentation(thicker=2)))
    thinned = apply(digits, Augmentation(thinner=1))
    thin = ink_pixels(thinned)
    assert (thick >= before).all() and thick.float().mean() > 1.5 * before.float().mean()
    assert (thin <= before).all() and thin.float().mean() < 0.9 * before.float().mean()
    assert (thinned.sum(dim=(1, 2)) < digits.sum(dim=(1, 2))).all()  # every image loses ink


def test_blur_spreads_ink_and_keeps_its_mass(digits: torch.Tensor) -> None:
    torch.manual_seed(0)
    out = apply(digits, Augmentation(blur=1.5))
    assert torch.allclose(out.sum(dim=(1, 2)), digits.sum(dim=(1, 2)), rtol=1e-4)  # far from the border
    assert ((out > 0.01).sum(dim=(1, 2)) >= (digits > 0.01).sum(dim=(1, 2))).all()
    assert (out.amax(dim=(1, 2)) <= 1).all()


def test_geometry_moves_ink_but_keeps_it(digits: torch.Tensor) -> None:
    for aug in (Augmentation(shear=0.3), Augmentation(perspective=0.2), Augmentation(elastic=2)):
        torch.manual_seed(0)
        out = apply(digits, aug)
        assert not torch.equal(out, digits), aug
        mass = out.sum(dim=(1, 2)) / digits.sum(dim=(1, 2))
        assert ((mass > 0.6) & (mass < 1.5)).all(), aug


def test_ink_contrast_and_noise_change_grey_levels_within_range(digits: torch.Tensor) -> None:
    torch.manual_seed(0)
    faint = apply(digits, Augmentation(ink=0.5))
    peak = faint.amax(dim=(1, 2))
    assert ((peak >= 0.5) & (peak <= 1)).all() and peak.min() < 0.9
    contrasted = apply(digits, Augmentation(contrast=1.0))
    assert torch.equal(contrasted == 0, digits == 0) and torch.equal(contrasted == 1, digits == 1)
    assert not torch.equal(contrasted, digits)  # only the soft edges (0.5) move
    noisy = apply(digits, Augmentation(noise=0.1))
    assert (noisy[:, :4, :4] > 0).any() and noisy.min() >= 0 and noisy.max() <= 1


def test_augment_takes_its_strengths_from_the_config_fields(digits: torch.Tensor) -> None:
    cfg = dataclasses.replace(DEFAULTS, **{f"aug_{f.name}": 0.0 for f in dataclasses.fields(Augmentation)})
    assert torch.equal(augment(digits, cfg), digits)
    torch.manual_seed(0)
    a = augment(digits, DEFAULTS)
    torch.manual_seed(0)
    assert torch.equal(a, apply(digits, Augmentation.from_config(DEFAULTS)))


def test_a_strength_out_of_range_is_a_usage_error(tiny_data: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_data), "--aug-blur", "9", "--print-config"])
    assert result.exit_code == 2
    assert "aug_blur must be a number >= 0 and <= 1.5" in result.stderr
    assert "Traceback" not in result.output


def test_a_tiny_run_with_every_augmentation_trains_reproducibly(tiny_data: Path, tmp_path: Path) -> None:
    flags = [f"--aug-{f.name}={getattr(EVERYTHING, f.name)}" for f in dataclasses.fields(Augmentation)]
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = CliRunner().invoke(cli, [*tiny_train_args(tiny_data, out, "--json", "--augment", *flags)])
        assert result.exit_code == 0, result.output
        assert 0 <= json.loads(result.stdout)["test_accuracy"] <= 1
        runs.append(checkpoint.load(out / "checkpoint.pt"))
    assert runs[0].config.aug_thicker == 2.0 and runs[0].config.augment
    for key, value in runs[0].model_state.items():  # the same seed: the same augmented batches, bit for bit
        assert torch.equal(value, runs[1].model_state[key]), key


def test_dilation_and_erosion_are_3x3_max_and_min_filters() -> None:
    from torch.nn import functional as F

    from rnnmnist.training.augment import dilate, erode

    x = torch.randn(4, 28, 28)  # signed: the border must ignore outside pixels, not treat them as 0
    assert torch.equal(dilate(x), F.max_pool2d(x.unsqueeze(1), 3, 1, 1).squeeze(1))
    assert torch.equal(erode(x), -F.max_pool2d(-x.unsqueeze(1), 3, 1, 1).squeeze(1))


def test_warp_is_grid_sample_on_torchs_affine_grid(digits: torch.Tensor) -> None:
    from torch.nn import functional as F

    from rnnmnist.training.augment import _matrix, warp

    aug = Augmentation(shift=2, rotate=10, scale=0.1, shear=0.2)
    torch.manual_seed(3)
    ours = warp(digits, aug)
    torch.manual_seed(3)
    theta = _matrix(len(digits), 28, 28, aug, digits.device)[:, :2]  # (B, 2, 3): no perspective row
    grid = F.affine_grid(theta, [len(digits), 1, 28, 28], align_corners=False)
    reference = F.grid_sample(digits.unsqueeze(1), grid, align_corners=False).squeeze(1).clamp(0, 1)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_aug_fraction_augments_that_share_of_each_batch_and_leaves_the_rest(digits: torch.Tensor) -> None:
    half = dataclasses.replace(DEFAULTS, aug_fraction=0.5)
    torch.manual_seed(0)
    out = augment(digits, half)
    assert torch.equal(out[16:], digits[16:])  # the second half as it was
    assert all(not torch.equal(out[i], digits[i]) for i in range(16))
    torch.manual_seed(0)
    assert torch.equal(out[:16], apply(digits[:16], Augmentation.from_config(DEFAULTS)))
    assert torch.equal(augment(digits, dataclasses.replace(DEFAULTS, aug_fraction=0.0)), digits)
    assert augment(digits[:1], dataclasses.replace(DEFAULTS, aug_fraction=0.4)).shape == (1, 28, 28)  # rounds to 0


def test_random_affine_is_small_and_seeded() -> None:
    images = torch.zeros(64, 28, 28)
    images[:, 8:20, 12:16] = 1.0
    torch.manual_seed(0)
    a = random_affine(images)
    torch.manual_seed(0)
    b = random_affine(images)
    assert torch.equal(a, b)
    assert a.shape == images.shape
    assert not torch.equal(a, images)
    mass = a.sum(dim=(1, 2)) / images.sum(dim=(1, 2))
    assert ((mass > 0.75) & (mass < 1.3)).all()  # scaled by at most 10% per side: mass by at most ~21%
