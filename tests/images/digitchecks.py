"""Checkpoints with a stored "one digit or not" check, made from a tiny checkpoint for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from rnnmnist.training.digitcheck import DigitCheck


def with_keys(source: Path | str, out: Path, drop: tuple[str, ...] = (), **changes: object) -> str:
    """A copy of checkpoint ``source`` with top-level keys set (its config's data set by ``dataset=``) and the
    keys in ``drop`` removed."""
    payload = torch.load(source, weights_only=True)
    for key in drop:
        payload.pop(key, None)
    if "dataset" in changes:
        payload["config"]["dataset"] = changes.pop("dataset")
    payload.update(changes)
    torch.save(payload, out)
    return str(out)


def with_threshold(source: Path | str, out: Path, threshold: float) -> str:
    """A copy of ``source`` whose stored energy threshold is ``threshold`` (-1e9: every image the image
    checks pass is a digit; 1e9: none is)."""
    check = DigitCheck(score="energy", threshold=threshold, keep=0.98, calibrated_on=100)
    return with_keys(source, out, digit_check=check.to_dict())


def without_check(source: Path | str, out: Path) -> str:
    """A copy of ``source`` as a checkpoint from before 0.4.0: no stored check (predict uses the fallback)."""
    return with_keys(source, out, drop=("digit_check",))
