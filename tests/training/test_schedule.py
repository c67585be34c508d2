from __future__ import annotations

import itertools

import pytest
import torch

from rnnmnist.config import Config
from rnnmnist.training.schedule import cosine, lr_and_beta1


@pytest.mark.parametrize(("total", "warmup"), [(781, 0.25), (100, 0.3), (37, 0.5)])
def test_onecycle_matches_torchs_onecycle_lr(total: int, warmup: float) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=total, pct_start=warmup)
    cfg = Config(lr=0.01, schedule="onecycle", warmup=warmup)
    for step in range(total):
        lr, beta1 = lr_and_beta1(cfg, step, total)
        assert lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        assert beta1 == pytest.approx(opt.param_groups[0]["betas"][0], rel=1e-9)
        opt.step()
        sched.step()


def test_the_constant_schedule_keeps_the_learning_rate() -> None:
    assert lr_and_beta1(Config(lr=0.001, schedule="constant"), 500, 781) == (0.001, None)


def test_cosine_warms_up_then_decays_to_zero() -> None:
    total, peak = 100, 0.01
    lrs = [cosine(s, total, peak, 0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[9] == pytest.approx(peak)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] < 0.01 * peak
