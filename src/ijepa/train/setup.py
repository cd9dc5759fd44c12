"""Everything a run does before its first step: checks, seeding, run folder, models, resume.

:func:`start_run` returns a :class:`Run`: the batches, the (wrapped) networks and their
optimizer, the schedules, and the step range, with the weights and optimizer state of the
checkpoint it resumes from already in place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ijepa import checkpoint as ckpt_file
from ijepa import sharded_checkpoint as sharded
from ijepa.config import Config, ConfigError, save_config
from ijepa.dist import DistContext, DistInfo
from ijepa.models import JEPAModels, build_models
from ijepa.models.jepa import encoder_depth
from ijepa.train.build import (
    Batch,
    TrainBatches,
    build_regularizer,
    model_args_from_config,
    schedules_for,
)
from ijepa.train.checkpointer import Checkpointer
from ijepa.train.guards import Phase
from ijepa.train.objective import Objective
from ijepa.train.optim import build_optimizer
from ijepa.train.parallel import PARALLEL_MODES, ParallelModels, wrap_models
from ijepa.train.precision import resolve_bf16, warm_up_kernels
from ijepa.train.resume import Resume, resume_models
from ijepa.train.schedules import Schedules
from ijepa.train.step import Regularizer, StepOutput, train_step


def check_parallel_settings(cfg: Config, info: DistInfo) -> None:
    """Settings that depend on the number of processes.

    Raises:
        ConfigError: an unknown ``meta.parallel``, a bad timeout, or ``nan_policy=skip`` with
            several processes.
    """
    meta = cfg.meta
    if meta.parallel not in PARALLEL_MODES:
        raise ConfigError(
            f"meta.parallel must be one of {', '.join(PARALLEL_MODES)}; got {meta.parallel!r}"
        )
    if meta.dist_timeout_s <= 0:
        raise ConfigError(f"meta.dist_timeout_s must be > 0, got {meta.dist_timeout_s}")
    if info.world_size > 1 and cfg.optimization.nan_policy == "skip":
        raise ConfigError(
            "optimization.nan_policy=skip is not supported with several processes (a rank that "
            "skips its backward would desynchronise the gradient all-reduce); use stop"
        )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_config(ctx: DistContext, cfg: Config) -> None:
    """Every rank must run the same config: compare hashes, and name the differences.

    Raises:
        ConfigError: the configs differ (on every rank).
    """
    if not ctx.distributed:
        return
    flat = _flat(cfg.to_dict())
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    if len(set(ctx.all_gather_object(digest))) == 1:
        return
    everyone = ctx.all_gather_object(flat)
    diffs = []
    for rank, other in enumerate(everyone[1:], start=1):
        keys = sorted(k for k in set(flat) | set(other) if everyone[0].get(k) != other.get(k))
        shown = ", ".join(f"{k}={everyone[0].get(k)!r} vs {other.get(k)!r}" for k in keys[:5])
        if keys:
            diffs.append(f"rank 0 vs rank {rank}: {shown}")
    raise ConfigError(
        "the config differs across ranks (every process must run the same config): "
        + "; ".join(diffs)
    )


def _build_models(cfg: Config, model_args: dict[str, Any], device: torch.device) -> JEPAModels:
    """The networks of a run, on its device (target encoder in eval mode)."""
    try:
        models = build_models(
            model_args,
            attn_impl=cfg.meta.attn_impl,
            drop_path_rate=cfg.meta.drop_path_rate,
            pred_shared_context=cfg.meta.pred_shared_context,
        )
    except ValueError as err:
        raise ConfigError(f"invalid model settings (meta.*, mask.patch_size): {err}") from err
    for module in (models.encoder, models.predictor, models.target_encoder):
        module.to(device)
    models.target_encoder.eval()
    return models


def _measured_choices(
    cfg: Config, ctx: DistContext, models: JEPAModels, batches: TrainBatches
) -> bool:
    """Resolve ``meta.use_bfloat16: auto`` (rank 0's measurement for every rank) and, under
    ``meta.compile`` with ``attn_impl: auto``, record the attention kernels eagerly; returns
    whether the steps run under bf16 autocast."""
    if cfg.meta.deterministic and cfg.meta.attn_impl == "auto":
        # a measured choice may differ between processes (and so break exact resume): pin SDPA
        for module in (models.encoder, models.predictor, models.target_encoder):
            module.set_attn_impl("sdpa")  # type: ignore[operator]
    setting = cfg.meta.use_bfloat16
    batch = cfg.data.batch_size
    masks_enc, masks_pred = batches.masks(batch, torch.Generator().manual_seed(0))
    if isinstance(setting, bool):
        bf16 = setting
    else:
        choice = resolve_bf16(
            setting,
            models,
            batch_size=batch,
            masks_enc=masks_enc,
            masks_pred=masks_pred,
            device=ctx.device,
        )
        bf16 = bool(ctx.all_gather_object(choice.bf16)[0]) if ctx.distributed else choice.bf16
    if cfg.meta.compile and cfg.meta.attn_impl == "auto":
        side = cfg.data.crop_size
        warm_up_kernels(
            models,
            images_shape=(batch, batches.in_chans, side, side),
            masks_enc=masks_enc,
            masks_pred=masks_pred,
            bf16=bf16,
        )
    return bf16


def _compiled(models: JEPAModels) -> JEPAModels:
    return JEPAModels(
        encoder=torch.compile(models.encoder),  # type: ignore[arg-type]
        predictor=torch.compile(models.predictor),  # type: ignore[arg-type]
        target_encoder=torch.compile(models.target_encoder),  # type: ignore[arg-type]
    )


@dataclass
class Run:
    """A run ready for its first step.

    Attributes:
        batches: this rank's images and masks of each step.
        model_args: the architecture facts saved in checkpoints.
        parallel: the networks (``parallel.models`` own the weights, checkpoints read them).
        step_models: what the training step calls (wrapped, maybe compiled).
        optimizer: AdamW over encoder and predictor.
        sched: learning-rate, weight-decay and EMA schedules by step.
        resume: the checkpoint resumed from (``resume.step`` is the first step to run).
        end_step: one past the last step to run.
        checkpointer: the run's checkpoint saves.
        regularizer: the anti-collapse term (``meta.regularizer``), or None.
        objective: the prediction target (``meta.target``, ``meta.teacher``); None for the
            paper's (latent targets from the EMA encoder).
    """

    cfg: Config
    batches: TrainBatches
    model_args: dict[str, Any]
    parallel: ParallelModels
    step_models: JEPAModels
    optimizer: torch.optim.Optimizer
    sched: Schedules
    resume: Resume
    end_step: int
    checkpointer: Checkpointer
    regularizer: Regularizer | None = None
    bf16: bool = False
    """Whether the steps run under bf16 autocast (``meta.use_bfloat16``, ``auto`` resolved)."""
    objective: Objective | None = None
    target_layers: int = 1
    """Blocks the targets average (``meta.target_layers``, ``all`` resolved to the depth)."""

    def step(self, step: int, batch: Batch) -> StepOutput:
        """One optimisation step (:func:`~ijepa.train.step.train_step`) on the batch of ``step``."""
        o = self.cfg.optimization
        return train_step(
            self.step_models,
            self.optimizer,
            batch.images,
            batch.masks_enc,
            batch.masks_pred,
            **self.sched.at(step),
            loss_kind=o.loss,
            bf16=self.bf16,
            skip_nonfinite=o.nan_policy == "skip",
            regularizer=self.regularizer,
            reg_weight=self.cfg.meta.reg_weight,
            step=step,
            objective=self.objective,
            target_layers=self.target_layers,
            valid_enc=batch.valid_enc,
            valid_pred=batch.valid_pred,
        )


def start_run(cfg: Config, ctx: DistContext, phase: Phase) -> Run:
    """Seed, prepare the run folder, build data and networks, resume, wrap; see :class:`Run`."""
    if cfg.meta.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.meta.seed)
    run_dir = Path(cfg.logging.folder)
    phase.where = "the start-up config check"
    check_same_config(ctx, cfg)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        ckpt_file.remove_stale_temps(run_dir, cfg.logging.write_tag)
        sharded.remove_stale_sharded_temps(run_dir, cfg.logging.write_tag)

    batches = TrainBatches(cfg, ctx.info, ctx.device)
    ipe = batches.iterations_per_epoch
    sched = schedules_for(cfg, ipe)
    model_args = model_args_from_config(cfg, batches.in_chans)
    models = _build_models(cfg, model_args, ctx.device)
    phase.where = "loading the checkpoint"
    resume = resume_models(
        cfg,
        ctx,
        models,
        model_args,
        global_batch=batches.global_batch_size,
        iterations_per_epoch=ipe,
    )
    phase.where = "measuring bf16 against fp32 and the attention kernels"
    bf16 = _measured_choices(cfg, ctx, models, batches)
    phase.where = "wrapping the models"
    parallel = wrap_models(
        models,
        mode=cfg.meta.parallel,
        world_size=ctx.world_size,
        rank=ctx.rank,
        device=ctx.device,
        bf16=bf16,
        activation_checkpointing=cfg.meta.activation_checkpointing,
    )
    o = cfg.optimization
    optimizer = build_optimizer(
        parallel.models.encoder,
        parallel.models.predictor,
        lr=o.start_lr,
        weight_decay=o.weight_decay,
    )
    phase.where = "loading the optimizer state"
    resume.restore_optimizer(parallel, optimizer)
    step_models = _compiled(parallel.step_models) if cfg.meta.compile else parallel.step_models
    end_step = sched.total_steps if o.max_steps is None else min(sched.total_steps, o.max_steps)
    checkpointer = Checkpointer(
        cfg,
        ctx,
        parallel,
        optimizer,
        model_args,
        batches.normalization,
        iterations_per_epoch=ipe,
        end_step=end_step,
        last_good=resume.source,
        saved_at=resume.step,
    )
    return Run(
        cfg,
        batches,
        model_args,
        parallel,
        step_models,
        optimizer,
        sched,
        resume,
        end_step,
        checkpointer,
        build_regularizer(cfg),
        bf16=bf16,
        objective=objective_of(cfg),
        target_layers=target_layers_of(cfg, model_args),
    )


def target_layers_of(cfg: Config, model_args: dict[str, Any]) -> int:
    """``meta.target_layers`` as a count of blocks (``all``: the encoder's depth)."""
    depth = encoder_depth(model_args)
    layers = cfg.meta.target_layers
    if layers == "all":
        return depth
    if not isinstance(layers, int) or not 1 <= layers <= depth:
        raise ConfigError(f"meta.target_layers must be 'all' or in [1, {depth}], got {layers!r}")
    return layers


def objective_of(cfg: Config) -> Objective | None:
    """The prediction target of a run; None for the paper's (the step's default path)."""
    meta = cfg.meta
    if meta.target == "latent" and meta.teacher == "ema":
        return None
    return Objective(target=meta.target, teacher=meta.teacher, patch_size=cfg.mask.patch_size)
