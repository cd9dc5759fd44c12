"""Schedules at their ends and at the warm-up boundary."""

import itertools
import math

import pytest

from ijepa.train.schedules import build_schedules, cosine_wd, linear_momentum, warmup_cosine_lr


def test_lr_warmup_and_cosine():
    kw = dict(warmup_steps=10, total_steps=110, start_lr=0.2, ref_lr=1.0, final_lr=0.0)
    assert warmup_cosine_lr(0, **kw) == pytest.approx(0.2)
    assert warmup_cosine_lr(5, **kw) == pytest.approx(0.6)
    assert warmup_cosine_lr(10, **kw) == pytest.approx(1.0)  # boundary: peak
    assert warmup_cosine_lr(60, **kw) == pytest.approx(0.5)  # half-way down the cosine
    assert warmup_cosine_lr(110, **kw) == pytest.approx(0.0)
    assert warmup_cosine_lr(500, **kw) == pytest.approx(0.0)  # stays at final past the end
    values = [warmup_cosine_lr(s, **kw) for s in range(111)]
    assert max(values) == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values[10:]))


def test_wd_and_momentum_ends():
    assert cosine_wd(0, total_steps=100, ref_wd=0.04, final_wd=0.4) == pytest.approx(0.04)
    assert cosine_wd(100, total_steps=100, ref_wd=0.04, final_wd=0.4) == pytest.approx(0.4)
    assert cosine_wd(50, total_steps=100, ref_wd=0.04, final_wd=0.4) == pytest.approx(0.22)
    assert linear_momentum(0, total_steps=100, start=0.996, end=1.0) == pytest.approx(0.996)
    assert linear_momentum(100, total_steps=100, start=0.996, end=1.0) == pytest.approx(1.0)
    assert linear_momentum(50, total_steps=100, start=0.996, end=1.0) == pytest.approx(0.998)


def test_build_schedules_official_conventions():
    s = build_schedules(
        iterations_per_epoch=10,
        epochs=5,
        ipe_scale=1.25,
        warmup_epochs=1,
        start_lr=2e-4,
        lr=1e-3,
        final_lr=1e-6,
        weight_decay=0.04,
        final_weight_decay=0.4,
        ema=(0.996, 1.0),
    )
    assert s.total_steps == 62 and s.warmup_steps == 10  # int(5 * 1.25 * 10)
    # the first optimizer step uses schedule step 1
    assert s.lr(0) == pytest.approx(2e-4 + (1e-3 - 2e-4) / 10)
    assert s.lr(9) == pytest.approx(1e-3)
    assert s.momentum(0) == pytest.approx(0.996)
    assert s.wd(0) > 0.04 and s.wd(s.total_steps - 1) == pytest.approx(0.4)
    assert math.isclose(s.lr(s.total_steps - 1), 1e-6, rel_tol=1e-6)
    with pytest.raises(ValueError, match="iterations_per_epoch"):
        build_schedules(
            iterations_per_epoch=0,
            epochs=1,
            ipe_scale=1,
            warmup_epochs=0,
            start_lr=0,
            lr=0,
            final_lr=0,
            weight_decay=0,
            final_weight_decay=0,
            ema=(0.9, 1.0),
        )
