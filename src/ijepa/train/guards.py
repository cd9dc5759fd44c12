"""What stops a run, and how it says why: the time limit, non-finite values, error translation.

- :class:`TimeLimit`: ``optimization.time_limit_min``, the same decision on every rank;
- :func:`check_finite`: a non-finite loss or non-finite weights end the run with
  :class:`TrainingDiverged`, naming the step and the last good checkpoint;
- :func:`translated_errors`: a failed collective becomes a :class:`~ijepa.dist.DistributedError`
  naming the unresponsive ranks, a dead data-loader worker a
  :class:`~ijepa.train.batches.DataLoaderError`; both say what the loop was doing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ijepa.dist import DistContext, is_comm_error
from ijepa.models import JEPAModels
from ijepa.train.batches import DataLoaderError
from ijepa.train.metrics import Totals

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class Phase:
    """What the loop is doing, for error messages about failed collectives and workers."""

    where: str = "start-up"


@contextlib.contextmanager
def translated_errors(ctx: DistContext) -> Iterator[Phase]:
    """Run a training inside; errors leave it explained, and the process group is left at the end.

    Yields:
        The :class:`Phase` the caller keeps up to date.
    """
    phase = Phase()
    comm_failed = finished = False
    try:
        yield phase
        finished = True
    except Exception as err:
        if ctx.distributed and is_comm_error(err):
            comm_failed = True
            raise ctx.failure(err, phase.where) from err
        if isinstance(err, RuntimeError) and "DataLoader worker" in str(err):
            # raised by torch's SIGCHLD handler wherever the main process happens to be
            raise DataLoaderError(
                f"a data-loader worker died during {phase.where} "
                f"({str(err).splitlines()[0].strip()}). If it ran out of memory, lower "
                "data.num_workers or data.batch_size; data.num_workers=0 shows the underlying error"
            ) from err
        raise
    finally:
        ctx.close(after_failure=comm_failed, finished=finished)


class TimeLimit:
    """``optimization.time_limit_min``: whether to stop after a step, the same on every rank.

    One process checks its clock after every step. Several processes check only at log steps
    and follow rank 0's clock (one small broadcast), so they all stop at the same step.

    Args:
        ctx: the process group.
        started: ``time.perf_counter()`` when the run started.
        minutes: the limit, or None for none.
        log_every: the run's ``logging.log_every``.
    """

    def __init__(
        self, ctx: DistContext, started: float, minutes: float | None, log_every: int
    ) -> None:
        self.ctx = ctx
        self.started = started
        self.minutes = minutes
        self.deadline = None if minutes is None else started + 60.0 * minutes
        self.log_every = log_every

    def reached(self, done: int) -> bool:
        """Whether the deadline has passed after step ``done`` (steps run so far)."""
        if self.deadline is None:
            return False
        if not self.ctx.distributed:
            return time.perf_counter() >= self.deadline
        if done % self.log_every != 0:
            return False
        return bool(self.ctx.broadcast_object(time.perf_counter() >= self.deadline))

    def report_stop(self, done: int, end: int) -> None:
        """Log that the run stopped at step ``done`` of ``end`` for the time limit."""
        logger.warning(
            "stopped at step %d of %d: optimization.time_limit_min=%g reached (%.2f min since "
            "start); checkpoint written, run the same command again to resume",
            done,
            end,
            self.minutes,
            (time.perf_counter() - self.started) / 60.0,
        )


def nonfinite_weights(models: JEPAModels) -> torch.Tensor:
    """Number of parameter tensors holding a NaN or Inf (this rank's shards under FSDP).

    A device tensor (no host sync). Checked before every checkpoint: a finite loss does not
    prove finite weights (an overflowing update makes them Inf after the loss was computed).
    """
    flags = []
    for module in (models.encoder, models.predictor, models.target_encoder):
        for p in module.parameters():
            local = p.detach()
            local = local.to_local() if hasattr(local, "to_local") else local  # FSDP DTensor
            flags.append(torch.isfinite(local).all().logical_not())
    return torch.stack(flags).sum()


def check_finite(totals: Totals, done: int, last_good: Path | None) -> None:
    """Stop on a non-finite loss or non-finite weights (the same decision on every rank).

    Raises:
        TrainingDiverged: naming the first bad step and the last good checkpoint.
    """
    kept = last_good or "none (no checkpoint written yet)"
    if totals.first_nonfinite_step is not None:
        raise TrainingDiverged(
            f"loss became non-finite at step {totals.first_nonfinite_step}; stopping. The last "
            f"good checkpoint is {kept}. "
            "Set optimization.nan_policy=skip to skip such steps instead."
        )
    if totals.nonfinite_weights > 0:
        raise TrainingDiverged(
            f"the weights became non-finite (NaN/Inf) by step {done} although the "
            "loss was finite (an overflowing update: is the learning rate far too "
            "high?); stopping without writing a checkpoint. The last good checkpoint "
            f"is {kept}."
        )
