"""Is it one digit? The decision beside every answer of ``predict`` and ``serve``, and its calibration.

A classifier always names one of its ten classes; a letter, a doodle or a number of two digits
gets a digit too. The decision says whether the image is a single digit, with the first reason
that says it is not, checked in this order:

1. ``no ink``: fewer than ``min_ink_pixels`` pixels brighter than ``ink_level``;
2. ``more than one character``: a second separate (8-connected) ink blob holding at least
   ``blob_share`` of the ink (a number, a letter and a digit, a digit and a stain);
3. ``not like any digit``: the model's digit score under the threshold.

The score is the *energy*, the logsumexp of the logits: a model trained with outlier exposure keeps
it high on digits and low on everything else, and it separated non-digits from digits better than
the largest probability did. The threshold is calibrated at the end of training so that a share
(``keep``, 98.5%) of the validation split's digits passes, as written and with other writers' looks
(binarised, stretched, heavier and lighter pens, small scans: digits from any hand should pass, not
MNIST's alone), and is stored in the checkpoint as plain numbers. A checkpoint without one (written
before rnnmnist 0.4, or by a run without a validation split) is judged by the :data:`FALLBACK`: the
same image checks, then the largest probability under 0.80. It refuses fewer non-digits (documented
in docs/predicting.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

NO_INK = "no ink"
SEVERAL = "more than one character"
UNLIKE = "not like any digit"
REASONS = (NO_INK, SEVERAL, UNLIKE)
SCORES = ("energy", "msp")
KEEP = 0.985  # share of validation digits the calibrated threshold keeps
CHECKPOINT_KEY = "digit_check"


@dataclass(frozen=True)
class DigitCheck:
    """How a model decides "one digit or not": the image checks' settings and the score's threshold."""

    score: str  # "energy" (logsumexp of the logits) or "msp" (the largest probability)
    threshold: float  # a score below it: "not like any digit"
    keep: float  # the share of validation digits that passed when it was calibrated (0: not calibrated)
    calibrated_on: int = 0  # images it was calibrated on: the validation split twice, with looks (0: the fallback)
    ink_level: float = 0.2  # a pixel brighter than this is ink (0.3 broke thin pens into several blobs)
    min_ink_pixels: int = 4
    blob_share: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_stored(cls, value: Any) -> DigitCheck:
        """A stored check, every field checked; ValueError names what is wrong."""
        if not isinstance(value, dict):
            raise ValueError("not a table")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, value)) - names)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}")
        missing = [name for name in ("score", "threshold", "keep") if name not in value]
        if missing:
            raise ValueError(f"missing key {missing[0]!r}")
        if value["score"] not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}")
        checked = {"score": value["score"]}
        for key, v in value.items():
            if key != "score":
                checked[key] = _stored_number(key, v, integer=key in ("min_ink_pixels", "calibrated_on"))
        check = cls(**checked)
        if not (0 <= check.keep <= 1 and 0 <= check.ink_level < 1 and 0 < check.blob_share <= 1):
            raise ValueError("keep, ink_level or blob_share is out of range")
        if not (0 <= check.min_ink_pixels <= 784 and 0 <= check.calibrated_on <= 10**9):
            raise ValueError("min_ink_pixels or calibrated_on is out of range")
        if check.score == "msp" and not 0 <= check.threshold <= 1:
            raise ValueError("the threshold of a probability must be within 0-1")
        return check


def _stored_number(key: str, value: Any, integer: bool) -> float | int:
    """``value`` as a finite float (an int for ``integer`` fields); ValueError names ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} is not a number")
    if integer:
        if not isinstance(value, int):
            raise ValueError(f"{key} is not a whole number")
        return value
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{key} is not a finite number") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} is not a finite number")
    return number


# What the default model's own calibration gave for the largest probability (0.80): a checkpoint without a
# stored threshold is judged by it. Measured on the held-out sets of docs/predicting.md: weaker than energy.
FALLBACK = DigitCheck(score="msp", threshold=0.80, keep=0.0)


def _grow(labels: torch.Tensor) -> torch.Tensor:
    """Each pixel's largest label among itself and its 8 neighbours, (N, H, W): a separable 3x3 max
    (max_pool2d with stride 1 took 4 times as long on the CPU)."""
    rows = labels.clone()
    torch.maximum(rows[..., 1:], labels[..., :-1], out=rows[..., 1:])
    torch.maximum(rows[..., :-1], labels[..., 1:], out=rows[..., :-1])
    out = rows.clone()
    torch.maximum(out[..., 1:, :], rows[..., :-1, :], out=out[..., 1:, :])
    torch.maximum(out[..., :-1, :], rows[..., 1:, :], out=out[..., :-1, :])
    return out


BLOB_CHUNK = 256  # images labelled together: a long winding stroke slows its own chunk, not a whole folder


def ink_blobs(images: torch.Tensor, level: float) -> torch.Tensor:
    """(N, 2): the pixel counts of the largest and the second largest 8-connected ink blob of each image.

    ``images`` (N, H, W) in [0, 1]; a pixel above ``level`` is ink. Each ink pixel starts with its own
    label and takes its neighbours' largest until nothing changes, batched (no per-image Python), in
    chunks of :data:`BLOB_CHUNK` images (a chunk runs until its slowest image is done).
    """
    if images.shape[0] <= BLOB_CHUNK:
        return _ink_blobs(images, level)
    return torch.cat([_ink_blobs(chunk, level) for chunk in images.split(BLOB_CHUNK)])  # (N, 2)


def _ink_blobs(images: torch.Tensor, level: float) -> torch.Tensor:
    n, h, w = images.shape
    mask = images > level  # (N, H, W)
    labels = torch.arange(1, h * w + 1, dtype=torch.int32).view(1, h, w) * mask
    for _ in range(h * w):  # stops after the longest path through a blob, far fewer in practice
        grown = _grow(labels) * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    key = (torch.arange(n).view(n, 1, 1) * (h * w + 1) + labels.long()).view(-1)[mask.view(-1)]
    counts = torch.zeros(n * (h * w + 1), dtype=torch.long).index_add_(0, key, torch.ones_like(key))
    return counts.view(n, h * w + 1).topk(2, dim=1).values  # (N, 2)


def image_reasons(images: torch.Tensor, check: DigitCheck) -> list[str | None]:
    """Per image (N, 28, 28) in [0, 1]: ``no ink``, ``more than one character``, or None (the checks pass)."""
    if images.shape[0] == 0:
        return []
    images = images.detach().float().cpu()
    ink = (images > check.ink_level).sum(dim=(1, 2))  # (N,)
    second = ink_blobs(images, check.ink_level)[:, 1]  # (N,)
    reasons: list[str | None] = []
    for pixels, other in zip(ink.tolist(), second.tolist()):
        if pixels < max(1, check.min_ink_pixels):
            reasons.append(NO_INK)
        elif other >= check.blob_share * pixels:
            reasons.append(SEVERAL)
        else:
            reasons.append(None)
    return reasons


def scores(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """(N,) higher is more digit-like: the energy (logsumexp) or the largest probability of logits (N, C)."""
    logits = logits.detach().float()
    if kind == "energy":
        return torch.logsumexp(logits, dim=1)
    return torch.softmax(logits, dim=1).amax(dim=1)


def decide(images: torch.Tensor, logits: torch.Tensor, check: DigitCheck) -> list[tuple[str | None, float]]:
    """Per image: (None when it is one digit, else the first reason it is not; its digit score)."""
    values = scores(logits, check.score).cpu().tolist()
    out = []
    for reason, value in zip(image_reasons(images, check), values):
        if reason is None and not value >= check.threshold:  # NaN is not a digit either
            reason = UNLIKE
        out.append((reason, value))
    return out


def calibrate(energy: torch.Tensor, keep: float = KEEP) -> DigitCheck:
    """The energy threshold that ``keep`` of validation digits with energies ``energy`` (N,) reach or pass.

    The image checks are left out: they refuse 0.4% of MNIST's validation digits, and running them on
    every calibration image took as long as the rest of the calibration.
    """
    n = int(energy.numel())
    if n == 0:
        return DigitCheck(score="energy", threshold=-1e9, keep=1.0, calibrated_on=0)
    values = energy.detach().double().cpu()
    threshold = float(torch.quantile(values, 1 - keep)) if keep < 1 else -1e9
    kept = int((values >= threshold).sum()) / n
    return DigitCheck(score="energy", threshold=threshold, keep=round(kept, 6), calibrated_on=n)


@torch.inference_mode()
def calibrated(model: torch.nn.Module, digits: torch.Tensor, precision: str, keep: float, seed: int) -> DigitCheck:
    """The check of ``model``, its threshold keeping ``keep`` of validation ``digits`` (N, 28, 28) in [0, 1] on
    the model's device, half as written and half with other writers' and scanners' looks (the training
    augmentation's, drawn from ``seed``): a threshold for digits from any hand, not MNIST's alone."""
    from rnnmnist.training.augment import writers
    from rnnmnist.training.device import autocast

    devices = [digits.device] if digits.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the same looks every time; the caller's RNGs stay as they were
        torch.manual_seed(seed)
        looks = writers(digits.clone(), 1.0)  # (N, 28, 28)
    both = torch.cat([digits, looks])  # (2N, 28, 28)
    was_training = model.training
    model.eval()
    energy = []
    for start in range(0, both.shape[0], 1000):
        with autocast(both.device, precision):
            energy.append(scores(model(both[start : start + 1000]).float(), "energy"))  # (b,)
    model.train(was_training)
    return calibrate(torch.cat(energy), keep)


def stored_check(extra: dict[str, Any]) -> DigitCheck | None:
    """The check a checkpoint's extra keys hold, None when it has none; ValueError when it is damaged."""
    if CHECKPOINT_KEY not in extra:
        return None
    return DigitCheck.from_stored(extra[CHECKPOINT_KEY])
