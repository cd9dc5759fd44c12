"""The pretraining loop: one short :func:`train` over the rooms of :mod:`ijepa.train`.

One process or many (``torchrun``): every rank builds the same networks from the same seed, takes
its slice of each global batch and of its masks (both pure functions of the seed and the step, so
the global batch does not depend on the world size), and trains a DDP- or FSDP-wrapped copy (see
:mod:`ijepa.train.parallel`). Only rank 0 writes metrics and checkpoints; metrics are averaged over
ranks at log steps only (one all-gather). Checkpoints are full state dicts, loadable on any world
size with the same global batch.

The rooms: :mod:`~ijepa.train.setup` (checks, data, models, resume, wrapping),
:mod:`~ijepa.train.build` (batches), :mod:`~ijepa.train.step` (one step, no I/O),
:mod:`~ijepa.train.metrics` (accumulator, records, metrics log), :mod:`~ijepa.train.checkpointer`
(saves and their failure policy), :mod:`~ijepa.train.guards` (time limit, non-finite values,
error translation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ijepa.config import Config, validate
from ijepa.diagnostics import collapse_message, collapse_summary
from ijepa.dist import DistContext, dist_info_from_env, resolve_device
from ijepa.models import JEPAModels
from ijepa.train.guards import TimeLimit, check_finite, nonfinite_weights, translated_errors
from ijepa.train.metrics import (
    CollapseWatch,
    MetricsLog,
    StepMeter,
    progress_postfix,
    run_trackers,
)
from ijepa.train.setup import check_parallel_settings, start_run

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind.

    Under FSDP ``models`` are sharded in place (their parameters are DTensors).
    """

    run_dir: Path
    step: int
    models: JEPAModels
    model_args: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0
    checkpoint_failures: int = 0
    """Checkpoint writes that failed and were retried (``logging.checkpoint_failure=retry``)."""
    time_limit_reached: bool = False
    """The run stopped before its last step for ``optimization.time_limit_min``."""


def train(cfg: Config, *, on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Pretrain I-JEPA as configured; resumes automatically from the run folder's ``latest``.

    Runs as one process, or as one rank of a ``torchrun`` job (the process group is joined here
    and left at the end).

    Args:
        cfg: the run configuration (validated here).
        on_log: called with each metrics record (on the main process).

    Raises:
        ConfigError: bad settings, or configs that differ across ranks.
        CheckpointError: the checkpoint to resume from is corrupt or does not fit (every rank).
        TrainingDiverged: a non-finite loss (every rank).
        DistributedError: a collective failed or timed out; names the unresponsive ranks.
    """
    started = time.perf_counter()
    validate(cfg)
    info = dist_info_from_env()
    check_parallel_settings(cfg, info)
    device = resolve_device(cfg.meta.device, info.local_rank)
    ctx = DistContext.start(info, device, cfg.meta.dist_timeout_s)
    run_dir, log_every = Path(cfg.logging.folder), cfg.logging.log_every
    with translated_errors(ctx) as phase:
        run = start_run(cfg, ctx, phase)  # data, networks, resume, optimizer, checkpointer
        start, end, ipe = run.resume.step, run.end_step, run.batches.iterations_per_epoch
        ckpt, meter = run.checkpointer, StepMeter(device, ctx.world_size)
        watch = CollapseWatch(run.parallel.models.target_encoder, ctx)
        clock = TimeLimit(ctx, started, cfg.optimization.time_limit_min, log_every)
        trackers = run_trackers(cfg, ctx, start)  # TensorBoard / W&B, on the main process
        log = MetricsLog(run_dir / "metrics.jsonl", ctx, start, on_log, trackers)
        show = cfg.logging.progress and ctx.is_main
        bar = tqdm(total=end, initial=start, disable=not show, desc="pretrain", unit="step")
        done, timed_out = start, False
        with log, bar:
            for step in range(start, end):
                phase.where = f"training step {step}"
                batch = run.batches.get(step)
                out = run.step(step, batch)
                meter.add(step, batch, out)
                bar.update(1)
                done = step + 1
                # a run stopped by the time limit checkpoints its last step, like a finished one
                timed_out = done < end and clock.reached(done)
                save = ckpt.due(done) or timed_out
                recorded = False
                if save or (done % log_every == 0 and not out.skipped):
                    phase.where = f"averaging metrics at step {done}"
                    weights = nonfinite_weights(run.parallel.models) if save else None
                    totals = meter.gather(ctx, weights)  # the loop's only host sync
                    check_finite(totals, done, ckpt.last_good)
                    if totals.steps > 0:  # none when every step since the last was skipped
                        rec = meter.record(
                            totals, done=done, epoch=step // ipe, **run.sched.at(step)
                        )
                        alarms = watch.check(rec, batch.images)
                        log.write(rec, alarms)
                        bar.set_postfix(progress_postfix(rec, alarms))
                        recorded = True
                if save:
                    phase.where = f"writing the checkpoint of step {done}"
                    final = done == end or timed_out
                    ckpt.save(done, lr=run.sched.lr(step), loss=log.last_loss, final=final)
                if recorded:  # the next record times its steps, not this record's work
                    meter.start_clock()
                if timed_out:
                    clock.report_stop(done, end)
                    break
    if ctx.is_main and log.history:
        verdict = collapse_summary(log.history)
        say = logger.warning if verdict["collapsed"] else logger.info
        say("%s", collapse_message(verdict))
    if meter.skipped:
        logger.warning("%d step(s) were skipped for a non-finite loss", meter.skipped)
    if ckpt.failures:
        logger.warning("%d checkpoint write(s) failed and were retried", ckpt.failures)
    return TrainResult(
        run_dir=run_dir,
        step=done,
        models=run.parallel.models,
        model_args=run.model_args,
        history=log.history,
        skipped_steps=meter.skipped,
        checkpoint_failures=ckpt.failures,
        time_limit_reached=timed_out,
    )
