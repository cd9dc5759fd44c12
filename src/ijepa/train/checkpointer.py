"""The training run's checkpoints: when to save, what a checkpoint holds, and what a failed write does.

:class:`Checkpointer` saves every ``logging.checkpoint_every`` steps (default: once per epoch), at
the last step, and when the time limit stops a run; keeps numbered copies every
``logging.keep_every`` steps; applies ``logging.checkpoint_failure`` (``stop``: end the run
naming the last good checkpoint; ``retry``: keep training and try again at the next checkpoint
step, except at the last one); and remembers the last good checkpoint for error messages.
File I/O goes through :mod:`ijepa.checkpoint` (atomic writes), or, for ``meta.parallel=fsdp``,
:mod:`ijepa.sharded_checkpoint`: every rank writes its own shards into one folder per checkpoint
(torch's distributed checkpoint), nothing is gathered to rank 0, and ``RUN/jepa-latest.dcp``
links to the newest complete one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ijepa import checkpoint as ckpt_file
from ijepa import sharded_checkpoint as sharded
from ijepa.config import Config
from ijepa.dist import DistContext
from ijepa.train.parallel import ParallelModels

logger = logging.getLogger(__name__)


def _failure_message(
    err: ckpt_file.CheckpointError, done: int, last_good: Path | None, saved_at: int, retry: bool
) -> str:
    """The one-line error a stopped run prints when its checkpoint write failed."""
    if last_good is not None:
        kept = f"the last good checkpoint, {last_good} (step {saved_at}), is intact"
    else:
        kept = "no checkpoint was written before"
    hint = (
        "this was the run's last checkpoint, so there is no later step to retry at"
        if retry
        else "set logging.checkpoint_failure=retry to keep training and retry at the next "
        "checkpoint step"
    )
    return (
        f"{err}; training stopped at step {done} and {kept}. Free space or fix the folder's "
        f"permissions, then run the same command again to resume ({hint})"
    )


class Checkpointer:
    """Periodic and final checkpoints of a run, the retry policy and the last good checkpoint.

    Every rank calls :meth:`save` at the same steps (under FSDP gathering the state is a
    collective); rank 0 writes, and all ranks agree on the outcome.

    Args:
        cfg: the run config (``logging``, ``data.batch_size``; saved whole in the checkpoint).
        ctx: the process group.
        parallel: the (possibly wrapped) networks.
        optimizer: their optimizer.
        model_args: the architecture facts (see :func:`ijepa.train.build.model_args_from_config`).
        normalization: the images' per-channel ``mean`` and ``std``.
        iterations_per_epoch: steps per epoch (the default period and the ``epoch`` field).
        end_step: the run's last step.
        last_good: the checkpoint the run resumed from, if any.
        saved_at: its step (the run's first step).
    """

    def __init__(
        self,
        cfg: Config,
        ctx: DistContext,
        parallel: ParallelModels,
        optimizer: torch.optim.Optimizer,
        model_args: dict[str, Any],
        normalization: dict[str, list[float]],
        *,
        iterations_per_epoch: int,
        end_step: int,
        last_good: Path | None,
        saved_at: int,
    ) -> None:
        self.cfg, self.ctx, self.parallel, self.optimizer = cfg, ctx, parallel, optimizer
        self.model_args = model_args
        self.normalization = normalization
        self.ipe = iterations_per_epoch
        self.end_step = end_step
        self.every = cfg.logging.checkpoint_every or iterations_per_epoch
        self.run_dir = Path(cfg.logging.folder)
        self.tag = cfg.logging.write_tag
        self.last_good = last_good
        self.saved_at = saved_at
        """The step of :attr:`last_good`."""
        self.failures = 0
        """Writes that failed and were retried (``logging.checkpoint_failure=retry``)."""
        self.sharded = cfg.meta.parallel == "fsdp"
        """Sharded checkpoints (one folder, every rank writes its shards) instead of one file."""

    def due(self, done: int) -> bool:
        """Whether a checkpoint is due after ``done`` steps (periodic, or the last step)."""
        return done % self.every == 0 or done == self.end_step

    def save(self, done: int, *, lr: float, loss: float, final: bool) -> None:
        """Save the state after ``done`` steps, applying ``logging.checkpoint_failure``.

        Args:
            done: steps run so far.
            lr: the learning rate of the last step.
            loss: the last logged loss.
            final: no later checkpoint step follows (the last step, or the time limit).

        Raises:
            CheckpointError: the write failed and the policy (or ``final``) stops the run; the
                message names the last good checkpoint.
        """
        try:
            self.last_good = self._write(done, lr=lr, loss=loss)
            self.saved_at = done
        except ckpt_file.CheckpointError as err:
            # every rank gets the same error from _write, so all take the same branch
            retry = self.cfg.logging.checkpoint_failure == "retry"
            if not retry or final:
                msg = _failure_message(err, done, self.last_good, self.saved_at, retry)
                raise ckpt_file.CheckpointError(msg) from err
            self.failures += 1
            logger.warning(
                "%s; training continues (logging.checkpoint_failure=retry, %d failed "
                "write(s) so far); next attempt at step %d; last good checkpoint: %s "
                "(step %d)",
                err,
                self.failures,
                min(done + self.every, self.end_step),
                self.last_good or "none",
                self.saved_at,
            )

    def state(
        self,
        done: int,
        *,
        models: Mapping[str, Any],
        opt: Any,
        lr: float,
        loss: float,
        rng_ranks: list[Any],
    ) -> dict[str, Any]:
        """The checkpoint dict after ``done`` steps, around the gathered full states.

        Args:
            models: ``encoder``, ``predictor`` and ``target_encoder`` state dicts.
            opt: the optimizer's id-keyed state dict.
            rng_ranks: every rank's :func:`ijepa.checkpoint.rng_state`, in rank order.
        """
        cfg, world = self.cfg, self.ctx.world_size
        return {
            "format_version": ckpt_file.FORMAT_VERSION,
            **models,
            "opt": opt,
            "scaler": None,
            "epoch": done // self.ipe,
            "step": done,
            "loss": loss,
            "batch_size": cfg.data.batch_size,
            "world_size": world,
            "global_batch_size": cfg.data.batch_size * world,
            "lr": lr,
            "config": cfg.to_dict(),
            "model_args": self.model_args,
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
            "normalization": self.normalization,
        }

    def _write(self, done: int, *, lr: float, loss: float) -> Path:
        """Gather full state (a collective under FSDP), write it on rank 0, agree on the outcome."""
        if self.sharded:
            return self._write_sharded(done, lr=lr, loss=loss)
        ctx = self.ctx
        models = self.parallel.model_state()  # None on ranks other than 0
        opt = self.parallel.optimizer_state(self.optimizer)
        rng_ranks = ctx.all_gather_object(ckpt_file.rng_state())
        path = ckpt_file.latest_path(self.run_dir, self.tag)
        error = None
        if ctx.is_main:
            state = self.state(
                done, models=models or {}, opt=opt, lr=lr, loss=loss, rng_ranks=rng_ranks
            )
            try:
                ckpt_file.save_checkpoint(state, path)
                keep = self.cfg.logging.keep_every
                if keep and done % keep == 0:
                    ckpt_file.keep_copy(path, ckpt_file.step_path(self.run_dir, done, self.tag))
            except ckpt_file.CheckpointError as err:
                if not ctx.distributed:
                    raise
                error = str(err)
        if ctx.distributed:
            error = ctx.broadcast_object(error)
        if error is not None:
            raise ckpt_file.CheckpointError(error)
        return path

    def _write_sharded(self, done: int, *, lr: float, loss: float) -> Path:
        """Every rank writes its shards; rank 0 adds the run facts and publishes ``latest``."""
        ctx = self.ctx
        state = self.parallel.sharded_state(self.optimizer)
        rng_ranks = ctx.all_gather_object(ckpt_file.rng_state())
        facts = self.state(done, models={}, opt=None, lr=lr, loss=loss, rng_ranks=rng_ranks)
        for key in ("opt", "scaler", "rng", "rng_ranks"):  # tensors, or nothing to say
            facts.pop(key)
        keep = self.cfg.logging.keep_every
        return sharded.write_sharded(
            state,
            facts,
            rng_ranks,
            folder=self.run_dir,
            step=done,
            tag=self.tag,
            keep=bool(keep and done % keep == 0),
            is_main=ctx.is_main,
            all_gather=ctx.all_gather_object if ctx.distributed else lambda obj: [obj],
        )
