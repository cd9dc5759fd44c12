"""Training for a wall-clock budget: measure a step on this machine, then plan the schedules.

The LR, weight-decay and EMA schedules span the run's total step count, so a run that must fit
in N minutes has to know its step count up front; stopping a longer schedule at the time limit
leaves the learning rate high and the EMA far from 1. :func:`calibrate` times a few real steps of
the same config in a throwaway folder (step time, the extra time of a metrics record, start-up,
a checkpoint); :func:`plan_steps` turns a budget into a step count; :func:`budget_config`
returns the config whose schedules span exactly that many steps (the warm-up keeps its fraction
of the schedule) with a hard stop at the budget should the machine slow down.

Used by ``ijepa demo`` (so that the demo finishes in its minutes on any machine, with a complete
schedule) and by ``benchmarks/quality.py``.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ijepa.config import Config, ConfigError, apply_overrides, validate

__all__ = ["PLAN_MARGIN", "WARMUP_STEPS", "BudgetError", "Calibration", "budget_config",
           "calibrate", "plan_steps", "probe_config"]  # fmt: skip

#: Part of the remaining budget planned for steps; the rest absorbs machine-load swings.
PLAN_MARGIN = 0.97
#: Calibration steps treated as warm-up (not timed).
WARMUP_STEPS = 2


class BudgetError(ConfigError):
    """The budget cannot fit the run on this machine (the message says what to change)."""


@dataclass
class Calibration:
    """Costs measured by a short throwaway run of the same config (seconds)."""

    step_s: float
    """Median wall time of a training step after the warm-up steps."""
    log_s: float
    """Extra time of a metrics record (collapse probe, bookkeeping)."""
    startup_s: float
    """From the ``train`` call to the first step (data, models)."""
    checkpoint_s: float
    """Writing a checkpoint (and returning)."""
    seconds: float
    """The calibration's own wall time."""
    steps: int
    cpu_step_s: float = 0.0
    """Process CPU seconds per step: ``step_s`` times the CPU-to-wall ratio of the timed steps
    (for budgets in CPU time, which stay fair when other jobs share the machine)."""


def probe_config(cfg: Config, folder: str, steps: int, limit_min: float) -> Config:
    """``cfg`` as a throwaway run of ``steps`` steps in ``folder``, a record after every step."""
    return apply_overrides(
        cfg,
        [
            f"logging.folder={folder}",
            f"optimization.max_steps={steps}",
            f"optimization.time_limit_min={limit_min}",
            "logging.log_every=1",
            "logging.checkpoint_every=0",
            "logging.keep_every=0",
            "logging.progress=false",
            'logging.trackers=""',
        ],
    )


def calibrate(cfg: Config, steps: int, limit_min: float) -> Calibration:
    """Time ``steps`` real training steps of ``cfg`` in a throwaway folder (in this process)."""
    from ijepa.train.loop import train  # the loop imports this package's modules

    stamps: list[tuple[float, float]] = []  # (time of the record, the record's img_per_s)
    cpu: list[float] = []  # process CPU time at each record
    with tempfile.TemporaryDirectory(prefix="ijepa-calibration-") as folder:
        probe = probe_config(cfg, folder, steps, limit_min)
        t0 = time.perf_counter()

        def on_log(rec: dict) -> None:
            stamps.append((time.perf_counter(), rec["img_per_s"]))
            cpu.append(time.process_time())

        train(probe, on_log=on_log)
        t1 = time.perf_counter()
    timed = stamps[WARMUP_STEPS:]
    if len(timed) < 2:
        raise BudgetError(
            f"calibration timed only {len(stamps)} step(s) in {limit_min * 60:.0f} s: the budget "
            "is too short for this config on this machine; give more minutes"
        )
    step_s = statistics.median(cfg.data.batch_size / ips for _, ips in timed)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(timed)]
    wall = timed[-1][0] - timed[0][0]
    cpu_share = (cpu[-1] - cpu[WARMUP_STEPS]) / wall if wall > 0 else 1.0
    return Calibration(
        step_s=step_s,
        log_s=max(0.0, statistics.median(gaps) - step_s),
        startup_s=max(0.0, stamps[0][0] - t0 - step_s),
        checkpoint_s=max(0.0, t1 - stamps[-1][0]),
        seconds=t1 - t0,
        steps=len(stamps),
        cpu_step_s=step_s * cpu_share,
    )


def plan_steps(cal: Calibration, seconds: float, *, log_every: int, ipe: int) -> int:
    """How many steps fit in ``seconds``: start-up, steps, records, a checkpoint per epoch."""
    per_step = cal.step_s + cal.log_s / log_every + cal.checkpoint_s / ipe
    usable = PLAN_MARGIN * seconds - cal.startup_s - cal.checkpoint_s
    return max(0, math.floor(usable / per_step))


def budget_config(
    cfg: Config, steps: int, ipe: int, *, folder: str | Path, limit_min: float | None
) -> Config:
    """``cfg`` with schedules spanning exactly ``steps`` steps and a hard wall-clock stop.

    ``epochs`` (an int) becomes the number of started epochs and ``ipe_scale`` scales it down to
    ``steps``; the warm-up keeps the config's fraction of the schedule.
    """
    o = cfg.optimization
    epochs = max(1, math.ceil(steps / ipe))
    ipe_scale = (steps + 0.5) / (epochs * ipe)  # int(epochs * ipe_scale * ipe) == steps
    warmup = (o.warmup / o.epochs) * steps / ipe
    out = apply_overrides(
        cfg,
        [
            f"logging.folder={folder}",
            f"optimization.epochs={epochs}",
            f"optimization.ipe_scale={ipe_scale!r}",
            f"optimization.warmup={warmup!r}",
            f"optimization.time_limit_min={'' if limit_min is None else repr(limit_min)}",
            "optimization.max_steps=",
        ],
    )
    validate(out)
    return out
