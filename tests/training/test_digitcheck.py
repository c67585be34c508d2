"""The "one digit or not" decision: image checks, scores, calibration, how checkpoints store it, and how
training makes it (outlier exposure, other writers' looks, the threshold calibrated at the end)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from clitools import invoke_ok

from rnnmnist import config
from rnnmnist.training import checkpoint
from rnnmnist.training.augment import WRITER_LOOKS, writers
from rnnmnist.training.digitcheck import (
    FALLBACK,
    NO_INK,
    SEVERAL,
    UNLIKE,
    DigitCheck,
    calibrate,
    decide,
    image_reasons,
    ink_blobs,
)
from rnnmnist.training.synthetic import tiny_train_args


def _strokes() -> torch.Tensor:
    """(4, 28, 28): blank, one stroke (a 1), two strokes far apart ("11"), a stroke and a speck of dust."""
    x = torch.zeros(4, 28, 28)
    x[1, 4:24, 12:15] = 1.0
    x[2, 4:24, 5:8] = 1.0
    x[2, 4:24, 20:23] = 1.0
    x[3, 4:24, 12:15] = 1.0
    x[3, 2, 2] = 1.0  # one pixel: well under a fifth of the ink
    return x


def test_image_checks_in_order() -> None:
    x = _strokes()
    assert image_reasons(x, FALLBACK) == [NO_INK, None, SEVERAL, None]
    assert ink_blobs(x, 0.2).tolist() == [[0, 0], [60, 0], [60, 60], [60, 1]]
    diagonal = torch.zeros(1, 28, 28)
    diagonal[0, range(4, 24), range(4, 24)] = 1.0  # touching only at corners: one 8-connected blob
    assert image_reasons(diagonal, FALLBACK) == [None]
    assert image_reasons(torch.zeros(0, 28, 28), FALLBACK) == []


def test_decide_scores_after_the_checks() -> None:
    x = _strokes()
    confident = torch.full((4, 10), -10.0)
    confident[:, 1] = 10.0
    flat = torch.zeros(4, 10)  # every class equally likely: energy log(10), largest probability 0.1
    assert [r for r, _ in decide(x, confident, FALLBACK)] == [NO_INK, None, SEVERAL, None]
    assert [r for r, _ in decide(x, flat, FALLBACK)] == [NO_INK, UNLIKE, SEVERAL, UNLIKE]
    energy = DigitCheck(score="energy", threshold=3.0, keep=0.98)
    reasons = decide(x, flat, energy)
    assert [r for r, _ in reasons] == [NO_INK, UNLIKE, SEVERAL, UNLIKE]
    assert reasons[1][1] == pytest.approx(torch.log(torch.tensor(10.0)).item())
    nan = torch.full((4, 10), float("nan"))
    assert [r for r, _ in decide(x, nan, energy)] == [NO_INK, UNLIKE, SEVERAL, UNLIKE]  # NaN is no digit


def test_calibration_keeps_the_share_asked() -> None:
    energy = torch.linspace(0, 10, 1000)
    check = calibrate(energy, keep=0.9)
    assert check.score == "energy" and check.calibrated_on == 1000
    assert check.keep == pytest.approx(0.9, abs=0.002)
    assert int((energy >= check.threshold).sum()) == pytest.approx(900, abs=2)
    assert calibrate(energy, keep=1.0).threshold == -1e9
    assert calibrate(torch.zeros(0)).keep == 1.0


@pytest.mark.parametrize(
    "stored",
    [
        "energy",
        {"score": "logits", "threshold": 1.0, "keep": 0.98},
        {"score": "energy", "threshold": float("nan"), "keep": 0.98},
        {"score": "energy", "threshold": True, "keep": 0.98},
        {"score": "energy", "threshold": 1.0, "keep": 2.0},
        {"score": "energy", "threshold": 1.0, "keep": 0.98, "blob_share": 0},
        {"score": "energy", "threshold": 1.0, "keep": 0.98, "colour": 1},
        {"score": "energy", "keep": 0.98},
        {"score": "energy"},
        {"score": "energy", "threshold": 1.0, "keep": 0.98, "min_ink_pixels": 10**400},
        {"score": "energy", "threshold": 10**400, "keep": 0.98},
        {"score": "energy", "threshold": 1.0, "keep": 0.98, "min_ink_pixels": 3.5},
        {"score": "energy", "threshold": 1.0, "keep": 0.98, "calibrated_on": 10**40},
        {"score": "msp", "threshold": 5.0, "keep": 0.98},
    ],
)
def test_a_damaged_stored_check_is_refused(stored: object) -> None:
    with pytest.raises(ValueError):  # checkpoint.load turns it into one line: damaged checkpoint, digit_check: ...
        DigitCheck.from_stored(stored)


def test_a_stored_check_round_trips() -> None:
    check = DigitCheck(score="energy", threshold=4.25, keep=0.98, calibrated_on=5000)
    assert DigitCheck.from_stored(check.to_dict()) == check


# --------------------------------------------------------------------------- what training does


def test_writer_looks_keep_shape_and_range() -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 28, 28) * (torch.rand(40, 28, 28) > 0.7)
    torch.manual_seed(1)
    out = writers(x.clone(), 0.5)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    changed = (out != x).flatten(1).any(dim=1)
    assert changed[: 40 // 2 // WRITER_LOOKS * WRITER_LOOKS].all() and not changed[20:].any()
    binarised = out[:4]
    assert set(binarised.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(writers(x.clone(), 0.0), x)
    inplace = x.clone()
    torch.manual_seed(1)
    assert writers(inplace, 0.5) is inplace and torch.equal(inplace, out)  # in place, the same draws


def test_training_stores_a_calibrated_check(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    invoke_ok(*tiny_train_args(tiny_data, out, "--precision", "fp32", "--eval-every", "10"))
    for name in ("checkpoint.pt", "best.pt"):
        ckpt = checkpoint.load(out / name)
        check = ckpt.digit_check
        assert check is not None and check.score == "energy" and check.calibrated_on == 2 * 100, name  # + looks
        assert 0.98 <= check.keep <= 1
        assert ckpt.extra["digit_check"] == check.to_dict()
    assert ckpt.config.outliers == 25 // 8 > 0  # a short run's batch of 25: an eighth are non-digits


def test_without_a_validation_split_the_fallback_decides(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    invoke_ok(*tiny_train_args(tiny_data, out, "--precision", "fp32", "--val-size", "0"))
    ckpt = checkpoint.load(out / "checkpoint.pt")
    assert "digit_check" not in ckpt.extra and ckpt.digit_check == FALLBACK


def test_digits_only_fields_follow_the_data_set() -> None:
    fashion = config.build(("flags", {"dataset": "fashion-mnist"}))
    assert fashion.outliers == 0 and fashion.aug_writers == 0.0
    asked = config.build(("flags", {"dataset": "fashion-mnist", "outlier_share": 0.125}))
    assert asked.outliers == 32 and asked.aug_writers == 0.0  # what a source sets, stays
    assert config.build(("flags", {"dataset": "qmnist"})).outliers == config.DEFAULTS.outliers
    from rnnmnist.training.datasets import SPECS, is_digits

    assert tuple(name for name in SPECS if is_digits(name)) == config.DIGIT_DATASETS


def test_checkpoints_from_before_read_as_trained() -> None:
    stored = {k: v for k, v in config.DEFAULTS.to_dict().items() if k not in ("outlier_share", "aug_writers")}
    cfg, notes = config.from_stored(stored)
    assert cfg.outliers == 0 and cfg.aug_writers == 0.0 and not notes


def test_an_older_runs_config_file_reruns_as_it_trained(tmp_path: Path) -> None:
    """A 0.3.0 run's config.toml has no outlier_share or aug_writers: rerunning it trains without them."""
    text = config.to_toml(config.DEFAULTS)
    old = "\n".join(line for line in text.splitlines() if not line.startswith(("outlier_share", "aug_writers")))
    (tmp_path / "config.toml").write_text(old + "\n")
    rerun = config.build(("config.toml", config.read_toml(tmp_path / "config.toml")))
    assert rerun.outlier_share == 0.0 and rerun.aug_writers == 0.0
    (tmp_path / "mine.toml").write_text("lr = 0.01\n")  # a file a person wrote gets today's defaults
    assert config.build(("mine.toml", config.read_toml(tmp_path / "mine.toml"))).outlier_share == 0.25


def test_blobs_are_counted_the_same_in_chunks() -> None:
    from rnnmnist.training import digitcheck

    x = _strokes().repeat(100, 1, 1)  # 400 images: two chunks
    whole = digitcheck._ink_blobs(x, 0.2)
    assert torch.equal(digitcheck.ink_blobs(x, 0.2), whole)
    assert whole[:4].tolist() == [[0, 0], [60, 0], [60, 60], [60, 1]]


def test_the_table_words_every_reason() -> None:
    """The torch-free table cannot import the reasons; it must still know each one's words."""
    from rnnmnist.cli.render_predict import SHORT_REASONS
    from rnnmnist.training.digitcheck import REASONS

    assert set(SHORT_REASONS) == set(REASONS)
