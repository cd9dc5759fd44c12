"""Resuming a run: find the checkpoint, read and validate it on rank 0, restore every rank.

The run folder's own ``latest`` checkpoint wins (the single file ``jepa-latest.pth.tar`` or the
sharded ``jepa-latest.dcp``, whichever was written last); otherwise ``meta.read_checkpoint``
(with ``meta.load_checkpoint``) names one, a file or a sharded checkpoint folder. Rank 0 reads and checks it (same architecture, same global
batch), loads the weights into the unwrapped networks and broadcasts them; every rank learns the
outcome, so all fail together with the same :class:`~ijepa.checkpoint.CheckpointError`. The
optimizer state is restored after wrapping (:meth:`Resume.restore_optimizer`), the per-rank
global RNG (drop path) at once. From a sharded checkpoint rank 0 reads the full weights the same
way (DCP without the process group), and every rank then reads its own part of the optimizer
state, resharded to this run's world size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ijepa import checkpoint as ckpt_file
from ijepa import sharded_checkpoint as sharded
from ijepa.config import Config
from ijepa.dist import DistContext
from ijepa.models import JEPAModels
from ijepa.train.batches import Stream, mix_seed
from ijepa.train.optim import param_groups
from ijepa.train.parallel import ParallelModels, optimizer_param_names, optimizer_state_to_names

logger = logging.getLogger(__name__)

#: Model arguments that only set the initialisation: a checkpoint's weights replace it on resume.
INIT_ONLY_ARGS = ("patch_init_std",)


def architecture(model_args: dict[str, Any]) -> dict[str, Any]:
    """The architecture part of ``model_args`` (init-only settings dropped)."""
    return {k: v for k, v in model_args.items() if k not in INIT_ONLY_ARGS}


@dataclass
class Resume:
    """Where a run starts: the checkpoint it resumed from (None for a fresh run) and its step.

    Attributes:
        source: the checkpoint read, or None.
        step: the first step to run.
        named_opt: the optimizer state keyed by parameter names (rank 0 only, until restored).
        rng_ranks: every saving rank's global RNG state, when the checkpoint has them.
        sharded: the source is a sharded checkpoint folder.
    """

    source: Path | None = None
    step: int = 0
    named_opt: dict[str, Any] | None = None
    rng_ranks: list[Any] | None = None
    sharded: bool = False

    def restore_optimizer(self, parallel: ParallelModels, optimizer: torch.optim.Optimizer) -> None:
        """Load the saved optimizer state into the wrapped run's optimizer (every rank)."""
        if self.source is not None:
            if self.sharded:
                parallel.load_sharded_optimizer(optimizer, self.source)
            else:
                parallel.load_optimizer_state(optimizer, self.named_opt)
            logger.info("resumed from %s at step %d", self.source, self.step)
        self.named_opt = None


def resume_source(cfg: Config, run_dir: Path) -> tuple[Path | None, bool]:
    """The checkpoint to resume from, and whether it is the run folder's own ``latest``."""
    tag = cfg.logging.write_tag
    found = [
        (path.stat().st_mtime_ns, path)
        for path in (ckpt_file.latest_path(run_dir, tag), sharded.latest_dir(run_dir, tag))
        if path.exists()
    ]
    if found:  # both kinds when the run changed meta.parallel: the newer one
        return max(found)[1], True
    if cfg.meta.load_checkpoint and cfg.meta.read_checkpoint:
        path = Path(cfg.meta.read_checkpoint)
        return (path if path.is_absolute() else run_dir / path), False
    return None, False


def _check_global_batch(
    cfg: Config, state: dict[str, Any], source: Path, own: bool, world: int, global_batch: int
) -> None:
    """The checkpoint's global batch must be this run's (a warning for ``meta.read_checkpoint``)."""
    bs, ws = state.get("batch_size"), state.get("world_size")
    saved = state.get("global_batch_size")
    if saved is None and isinstance(bs, int) and isinstance(ws, int):
        saved = bs * ws
    if saved is None or saved == global_batch:
        return
    hint = (
        f"set data.batch_size={saved // world}"
        if saved % world == 0
        else f"use a number of processes that divides {saved}"
    )
    msg = (
        f"checkpoint {source} was written with a global batch of {saved} images per step "
        f"({bs} per process x {ws}); this run has {global_batch} "
        f"({cfg.data.batch_size} x {world}). Steps map to images and schedules through the "
        f"global batch, so resuming needs the same one: {hint}"
    )
    if own:
        raise ckpt_file.CheckpointError(msg)
    logger.warning("%s (continuing: the checkpoint was named by meta.read_checkpoint)", msg)


def read_checkpoint(
    cfg: Config,
    models: JEPAModels,
    model_args: dict[str, Any],
    *,
    world: int,
    global_batch: int,
    map_location: torch.device | str,
    iterations_per_epoch: int,
) -> Resume:
    """Rank 0: read, validate and load a checkpoint into the unwrapped modules."""
    source, own = resume_source(cfg, Path(cfg.logging.folder))
    if source is None:
        return Resume()
    if sharded.is_sharded(source):
        return _read_sharded(cfg, source, own, models, model_args, world, global_batch)
    state = ckpt_file.load_checkpoint(source, map_location=map_location)
    saved_args = state.get("model_args")
    if saved_args is not None and architecture(saved_args) != architecture(model_args):
        raise ckpt_file.CheckpointError(
            f"checkpoint {source} was made for a different architecture "
            f"({saved_args}) than this config ({model_args})"
        )
    _check_global_batch(cfg, state, source, own, world, global_batch)
    for part in ("encoder", "predictor", "target_encoder"):
        ckpt_file.load_module_state(getattr(models, part), state[part], f"{source} [{part}]")
    names = optimizer_param_names(
        param_groups(models.encoder, models.predictor), models.encoder, models.predictor
    )
    try:
        named_opt = optimizer_state_to_names(state["opt"], names)
    except (KeyError, ValueError, TypeError) as err:
        raise ckpt_file.CheckpointError(
            f"checkpoint {source}: bad optimizer state 'opt': {err}"
        ) from err
    rng_ranks = state.get("rng_ranks")
    if not isinstance(rng_ranks, list):
        rng_ranks = [state["rng"]] if "rng" in state else None
    step = int(state.get("step", state.get("epoch", 0) * iterations_per_epoch))
    return Resume(source=source, step=step, named_opt=named_opt, rng_ranks=rng_ranks)


def _read_sharded(
    cfg: Config,
    source: Path,
    own: bool,
    models: JEPAModels,
    model_args: dict[str, Any],
    world: int,
    global_batch: int,
) -> Resume:
    """Rank 0: check a sharded checkpoint's facts and read the full weights into the modules."""
    facts = sharded.read_sharded_meta(source)
    saved_args = facts.get("model_args")
    if saved_args is not None and architecture(saved_args) != architecture(model_args):
        raise ckpt_file.CheckpointError(
            f"checkpoint {source} was made for a different architecture "
            f"({saved_args}) than this config ({model_args})"
        )
    _check_global_batch(cfg, facts, source, own, world, global_batch)
    parts = ("encoder", "predictor", "target_encoder")
    template = {"models": {part: getattr(models, part).state_dict() for part in parts}}
    sharded.load_sharded(source, template, this_process_only=True)
    for part in parts:
        ckpt_file.load_module_state(
            getattr(models, part), template["models"][part], f"{source} [{part}]"
        )
    return Resume(
        source=source, step=int(facts["step"]), rng_ranks=facts.get("rng_ranks"), sharded=True
    )


def _agree(ctx: DistContext, read: Callable[[], Resume]) -> Resume:
    """Rank 0 reads and validates; every rank learns the outcome (and fails together)."""
    if not ctx.distributed:
        return read()
    out, error = Resume(), None
    if ctx.is_main:
        try:
            out = read()
        except ckpt_file.CheckpointError as err:
            error = str(err)
    meta = {"source": out.source, "step": out.step, "rng": out.rng_ranks, "error": error,
            "sharded": out.sharded}  # fmt: skip
    meta = ctx.broadcast_object(meta)
    if meta["error"] is not None:
        raise ckpt_file.CheckpointError(meta["error"])
    return Resume(
        source=meta["source"],
        step=meta["step"],
        named_opt=out.named_opt,
        rng_ranks=meta["rng"],
        sharded=meta["sharded"],
    )


def _restore_rng(cfg: Config, ctx: DistContext, rng_ranks: list[Any] | None) -> None:
    """Per-rank global RNG (it drives only drop path): restored where the checkpoint has it."""
    if rng_ranks is not None and ctx.rank < len(rng_ranks):
        ckpt_file.set_rng_state(rng_ranks[ctx.rank])
        if len(rng_ranks) != ctx.world_size and cfg.meta.drop_path_rate > 0:
            logger.warning(
                "the world size changed since the checkpoint: drop-path randomness will differ "
                "from an uninterrupted run"
            )
    elif ctx.rank > 0:
        torch.manual_seed(mix_seed(cfg.meta.seed, Stream.DROP_PATH, ctx.rank))


def resume_models(
    cfg: Config,
    ctx: DistContext,
    models: JEPAModels,
    model_args: dict[str, Any],
    *,
    global_batch: int,
    iterations_per_epoch: int,
) -> Resume:
    """Restore the weights (and RNG) of a run from its checkpoint, the same on every rank.

    Rank 0's weights, fresh or loaded, are broadcast to every rank before wrapping or sharding.

    Raises:
        CheckpointError: the checkpoint is unreadable or does not fit (on every rank).
    """
    resume = _agree(
        ctx,
        lambda: read_checkpoint(
            cfg,
            models,
            model_args,
            world=ctx.world_size,
            global_batch=global_batch,
            map_location="cpu" if ctx.distributed else ctx.device,
            iterations_per_epoch=iterations_per_epoch,
        ),
    )
    if ctx.distributed:
        modules = (models.encoder, models.predictor, models.target_encoder)
        ctx.broadcast_tensors([t for m in modules for t in (*m.parameters(), *m.buffers())])
    if resume.source is not None or ctx.rank > 0:
        _restore_rng(cfg, ctx, resume.rng_ranks)
    return resume
