"""``ijepa.train.budget.calibrate``: wall and CPU seconds per step from real steps."""

from __future__ import annotations

import time

import torch

from ijepa.config import apply_overrides
from ijepa.recipes import TINY_OVERRIDES, preset
from ijepa.train import budget


def test_calibrate_measures_wall_and_cpu_time_per_step() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = apply_overrides(preset("demo"), [*TINY_OVERRIDES, "data.batch_size=16"])
        wall0, cpu0 = time.perf_counter(), time.process_time()
        cal = budget.calibrate(cfg, 8, limit_min=5.0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        torch.set_num_threads(before)
    assert cal.steps == 8 and 0.0 < cal.seconds <= wall
    assert 0.0 < cal.step_s * (cal.steps - budget.WARMUP_STEPS) < wall
    # one thread: a step cannot use more CPU than wall time (small slack for other threads)
    assert 0.0 < cal.cpu_step_s <= 1.2 * cal.step_s
    assert cal.cpu_step_s * (cal.steps - budget.WARMUP_STEPS) < cpu


def test_calibration_keeps_a_records_work_out_of_the_step_time(monkeypatch) -> None:
    """A record's own work (the collapse probe, writing) is timed as ``log_s``, not inside
    ``step_s``: with it inside, a 1-step record made the demo plan ~14 % fewer steps than fit."""
    from ijepa.train import metrics

    pause = 0.15
    check = metrics.CollapseWatch.check

    def slow_check(self, rec, images):  # type: ignore[no-untyped-def]
        time.sleep(pause)  # a probe this slow: it must land in log_s
        return check(self, rec, images)

    monkeypatch.setattr(metrics.CollapseWatch, "check", slow_check)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = apply_overrides(preset("demo"), [*TINY_OVERRIDES, "data.batch_size=16"])
        cal = budget.calibrate(cfg, 8, limit_min=5.0)
    finally:
        torch.set_num_threads(before)
    assert cal.log_s >= 0.9 * pause
    # the tiny model's step is a few ms: the pause in step_s would make it at least 0.15 s
    assert cal.step_s < 0.5 * pause
