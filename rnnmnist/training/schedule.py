"""Learning-rate schedules as pure functions of the step, so a resumed run needs only the step."""

from __future__ import annotations

import math

from rnnmnist.config import Config

# torch.optim.lr_scheduler.OneCycleLR's defaults, which the recipe was tuned with.
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
MOMENTUM_HIGH, MOMENTUM_LOW = 0.95, 0.85


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def onecycle(step: int, total: int, peak: float, warmup: float) -> tuple[float, float]:
    """(lr, Adam beta1) at 0-based ``step``, identical to torch's OneCycleLR (cos, cycled momentum)."""
    initial = peak / ONECYCLE_DIV
    final = initial / ONECYCLE_FINAL_DIV
    up_end = warmup * total - 1
    if step <= up_end:
        pct = step / up_end if up_end > 0 else 1.0
        return _cos(initial, peak, pct), _cos(MOMENTUM_HIGH, MOMENTUM_LOW, pct)
    down = (total - 1) - up_end
    pct = (step - up_end) / down if down > 0 else 1.0
    return _cos(peak, final, pct), _cos(MOMENTUM_LOW, MOMENTUM_HIGH, pct)


def cosine(step: int, total: int, peak: float, warmup: float) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup`` of the steps, then cosine decay to 0."""
    warm = math.floor(warmup * total)
    if step < warm:
        return peak * (step + 1) / warm
    span = total - warm
    return _cos(peak, 0.0, (step - warm) / span) if span > 0 else peak


def lr_and_beta1(cfg: Config, step: int, total: int) -> tuple[float, float | None]:
    """Learning rate and (for onecycle only) Adam's beta1 at 0-based ``step`` of ``total``."""
    if cfg.schedule == "onecycle":
        return onecycle(step, total, cfg.lr, cfg.warmup)
    if cfg.schedule == "cosine":
        return cosine(step, total, cfg.lr, cfg.warmup), None
    return cfg.lr, None
