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
