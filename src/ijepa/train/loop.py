"""The pretraining loop: data, masks, steps, metrics, checkpoints and automatic resume.

One process or many (``torchrun``): every rank builds the same networks from the same seed, takes
its slice of each global batch and of its masks (both pure functions of the seed and the step, so
the global batch does not depend on the world size), and trains a DDP- or FSDP-wrapped copy (see
:mod:`ijepa.train.parallel`). Only rank 0 writes metrics and checkpoints; metrics are averaged over
ranks at log steps only (one all-gather). Checkpoints are full state dicts, loadable on any world
size with the same global batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ijepa.config import Config, ConfigError, dataset_spec, save_config, validate
from ijepa.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    load_imageset,
    official_train_transform,
    parse_spec,
)
from ijepa.diagnostics import CollapseMonitor, probe_rank
from ijepa.dist import DistContext, DistInfo, dist_info_from_env, is_comm_error, resolve_device
from ijepa.train import checkpoint as ckpt
from ijepa.train.batches import (
    DataLoaderError,
    FileBatches,
    MemoryBatches,
    mix_seed,
    rank_slice,
    seeded_generator,
)
from ijepa.train.build import (
    build_mask_generator,
    build_models,
    build_regularizer,
    model_args_from_config,
    schedules_for,
)
from ijepa.train.optim import build_optimizer, param_groups
from ijepa.train.parallel import (
    PARALLEL_MODES,
    optimizer_param_names,
    optimizer_state_to_names,
    wrap_models,
)
from ijepa.train.schedules import Schedules
from ijepa.train.step import JEPAModels, train_step

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


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


def _nonfinite_weights(models: JEPAModels) -> torch.Tensor:
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


def _out_of_time(ctx: DistContext, deadline: float | None, done: int, log_every: int) -> bool:
    """Whether the wall-clock ``deadline`` has passed after step ``done``, the same on every rank.

    One process checks its clock after every step. Several processes check only at log steps
    and follow rank 0's clock (one small broadcast), so they all stop at the same step.
    """
    if deadline is None:
        return False
    if not ctx.distributed:
        return time.perf_counter() >= deadline
    if done % log_every != 0:
        return False
    return bool(ctx.broadcast_object(time.perf_counter() >= deadline))


#: Model arguments that only set the initialisation: a checkpoint's weights replace it on resume.
_INIT_ONLY_ARGS = ("patch_init_std",)


def _arch(model_args: dict[str, Any]) -> dict[str, Any]:
    """The architecture part of ``model_args`` (init-only settings dropped)."""
    return {k: v for k, v in model_args.items() if k not in _INIT_ONLY_ARGS}


def _checkpoint_failure_message(
    err: ckpt.CheckpointError, done: int, last_good: Path | None, saved_at: int, retry: bool
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


def _make_batches(cfg: Config, dist: DistInfo) -> tuple[Any, int]:
    """The batch source for a run and its number of input channels."""
    spec = dataset_spec(cfg)
    kind, arg = parse_spec(spec)
    d = cfg.data
    if kind == "imagefolder":
        folder = Path(arg or ".")
        root = folder / "train" if (folder / "train").is_dir() else folder
        dataset: Any = ImageFolderDataset(root)
        if d.max_images is not None:
            dataset = torch.utils.data.Subset(dataset, range(min(d.max_images, len(dataset))))
        transform = official_train_transform(
            d.crop_size,
            crop_scale=d.crop_scale,
            hflip=d.use_horizontal_flip,
            color_distortion=d.use_color_distortion,
            color_jitter=d.color_jitter_strength,
            blur=d.use_gaussian_blur,
        )
        batches: Any = FileBatches(
            dataset,
            transform,
            batch_size=d.batch_size,
            seed=cfg.meta.seed,
            num_workers=d.num_workers,
            pin_memory=d.pin_mem and torch.cuda.is_available(),
            rank=dist.rank,
            world_size=dist.world_size,
        )
        return batches, 3
    data = load_imageset(spec, "train")
    if d.max_images is not None:
        data = data.subset(torch.arange(min(d.max_images, len(data))))
    batches = MemoryBatches(
        data,
        batch_size=d.batch_size,
        crop_size=d.crop_size,
        crop_scale=d.crop_scale,
        hflip=d.use_horizontal_flip,
        seed=cfg.meta.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    return batches, int(data.images.shape[1])


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric records past ``last_step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a record cut short (a crash, a full disk)
            logger.warning("%s: dropping an unreadable line: %.80s", path, line)
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= last_step:
            keep.append(line)
    # a kill while rewriting must not lose the history: write aside, then rename
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def _resume_source(cfg: Config, run_dir: Path) -> tuple[Path | None, bool]:
    """The checkpoint to resume from, and whether it is the run folder's own ``latest``."""
    latest = ckpt.latest_path(run_dir, cfg.logging.write_tag)
    if latest.exists():
        return latest, True
    if cfg.meta.load_checkpoint and cfg.meta.read_checkpoint:
        path = Path(cfg.meta.read_checkpoint)
        return (path if path.is_absolute() else run_dir / path), False
    return None, False


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_parallel_settings(cfg: Config, info: DistInfo) -> None:
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


def _check_same_config(ctx: DistContext, cfg: Config) -> None:
    """Every rank must run the same config: compare hashes, and name the differences."""
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


@dataclass
class _Resume:
    """What rank 0 read from a checkpoint (``named_opt`` only on rank 0)."""

    source: Path | None = None
    step: int = 0
    named_opt: dict[str, Any] | None = None
    rng_ranks: list[Any] | None = None


def _read_checkpoint(
    cfg: Config,
    run_dir: Path,
    models: JEPAModels,
    model_args: dict[str, Any],
    *,
    world: int,
    global_batch: int,
    map_location: torch.device | str,
    ipe: int,
) -> _Resume:
    """Rank 0: read, validate and load a checkpoint into the unwrapped modules."""
    source, own = _resume_source(cfg, run_dir)
    if source is None:
        return _Resume()
    state = ckpt.load_checkpoint(source, map_location=map_location)
    if state.get("model_args") is not None and _arch(state["model_args"]) != _arch(model_args):
        raise ckpt.CheckpointError(
            f"checkpoint {source} was made for a different architecture "
            f"({state['model_args']}) than this config ({model_args})"
        )
    bs, ws = state.get("batch_size"), state.get("world_size")
    saved = state.get("global_batch_size")
    if saved is None and isinstance(bs, int) and isinstance(ws, int):
        saved = bs * ws
    if saved is not None and saved != global_batch:
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
            raise ckpt.CheckpointError(msg)
        logger.warning("%s (continuing: the checkpoint was named by meta.read_checkpoint)", msg)
    ckpt.load_module_state(models.encoder, state["encoder"], f"{source} [encoder]")
    ckpt.load_module_state(models.predictor, state["predictor"], f"{source} [predictor]")
    ckpt.load_module_state(
        models.target_encoder, state["target_encoder"], f"{source} [target_encoder]"
    )
    names = optimizer_param_names(
        param_groups(models.encoder, models.predictor), models.encoder, models.predictor
    )
    try:
        named_opt = optimizer_state_to_names(state["opt"], names)
    except (KeyError, ValueError, TypeError) as err:
        raise ckpt.CheckpointError(
            f"checkpoint {source}: bad optimizer state 'opt': {err}"
        ) from err
    rng_ranks = state.get("rng_ranks")
    if not isinstance(rng_ranks, list):
        rng_ranks = [state["rng"]] if "rng" in state else None
    step = int(state.get("step", state.get("epoch", 0) * ipe))
    return _Resume(source=source, step=step, named_opt=named_opt, rng_ranks=rng_ranks)


def _resume(ctx: DistContext, read: Callable[[], _Resume]) -> _Resume:
    """Rank 0 reads and validates; every rank learns the outcome (and fails together)."""
    if not ctx.distributed:
        return read()
    out, error = _Resume(), None
    if ctx.is_main:
        try:
            out = read()
        except ckpt.CheckpointError as err:
            error = str(err)
    meta = {"source": out.source, "step": out.step, "rng": out.rng_ranks, "error": error}
    meta = ctx.broadcast_object(meta)
    if meta["error"] is not None:
        raise ckpt.CheckpointError(meta["error"])
    return _Resume(
        source=meta["source"], step=meta["step"], named_opt=out.named_opt, rng_ranks=meta["rng"]
    )


def _restore_rng(cfg: Config, ctx: DistContext, rng_ranks: list[Any] | None) -> None:
    """Per-rank global RNG (it drives only drop path): restored where the checkpoint has it."""
    if rng_ranks is not None and ctx.rank < len(rng_ranks):
        ckpt.set_rng_state(rng_ranks[ctx.rank])
        if len(rng_ranks) != ctx.world_size and cfg.meta.drop_path_rate > 0:
            logger.warning(
                "the world size changed since the checkpoint: drop-path randomness will differ "
                "from an uninterrupted run"
            )
    elif ctx.rank > 0:
        torch.manual_seed(mix_seed(cfg.meta.seed, 5, ctx.rank))


def _state(
    model_state: dict[str, Any],
    opt_state: dict[str, Any],
    cfg: Config,
    model_args: dict[str, Any],
    *,
    step: int,
    epoch: int,
    loss: float,
    lr: float,
    world_size: int,
    rng_ranks: list[Any],
    normalization: dict[str, list[float]],
) -> dict[str, Any]:
    return {
        "format_version": ckpt.FORMAT_VERSION,
        **model_state,
        "opt": opt_state,
        "scaler": None,
        "epoch": epoch,
        "step": step,
        "loss": loss,
        "batch_size": cfg.data.batch_size,
        "world_size": world_size,
        "global_batch_size": cfg.data.batch_size * world_size,
        "lr": lr,
        "config": cfg.to_dict(),
        "model_args": model_args,
        "rng": rng_ranks[0],
        "rng_ranks": rng_ranks,
        "normalization": normalization,
    }


@dataclass
class _Phase:
    """What the loop is doing, for error messages about failed collectives."""

    where: str = "start-up"


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
    _check_parallel_settings(cfg, info)
    device = resolve_device(cfg.meta.device, info.local_rank)
    ctx = DistContext.start(info, device, cfg.meta.dist_timeout_s)
    phase = _Phase()
    comm_failed = False
    try:
        return _train(cfg, ctx, phase, on_log, started)
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
        ctx.close(after_failure=comm_failed)


def _train(
    cfg: Config,
    ctx: DistContext,
    phase: _Phase,
    on_log: Callable[[dict[str, Any]], None] | None,
    started: float,
) -> TrainResult:
    device = ctx.device
    if cfg.meta.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.meta.seed)
    run_dir = Path(cfg.logging.folder)
    phase.where = "the start-up config check"
    _check_same_config(ctx, cfg)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        ckpt.remove_stale_temps(run_dir, cfg.logging.write_tag)

    batches, in_chans = _make_batches(cfg, ctx.info)
    data = getattr(batches, "data", None)
    normalization = (
        {"mean": list(data.mean), "std": list(data.std)}
        if data is not None
        else {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    )
    monitor = CollapseMonitor()
    probe_images: torch.Tensor | None = None
    ipe = batches.iterations_per_epoch
    o = cfg.optimization
    sched: Schedules = schedules_for(cfg, ipe)
    model_args = model_args_from_config(cfg, in_chans)
    try:
        models = build_models(
            model_args, attn_impl=cfg.meta.attn_impl, drop_path_rate=cfg.meta.drop_path_rate
        )
    except ValueError as err:
        raise ConfigError(f"invalid model settings (meta.*, mask.patch_size): {err}") from err
    for module in (models.encoder, models.predictor, models.target_encoder):
        module.to(device)
    models.target_encoder.eval()

    phase.where = "loading the checkpoint"
    resume = _resume(
        ctx,
        lambda: _read_checkpoint(
            cfg,
            run_dir,
            models,
            model_args,
            world=ctx.world_size,
            global_batch=batches.global_batch_size,
            map_location="cpu" if ctx.distributed else device,
            ipe=ipe,
        ),
    )
    if ctx.distributed:
        # rank 0's weights (fresh or loaded) everywhere, before wrapping or sharding
        ctx.broadcast_tensors(
            [
                t
                for m in (models.encoder, models.predictor, models.target_encoder)
                for t in (*m.parameters(), *m.buffers())
            ]
        )
    if resume.source is not None or ctx.rank > 0:
        _restore_rng(cfg, ctx, resume.rng_ranks)
    phase.where = "wrapping the models"
    pm = wrap_models(
        models,
        mode=cfg.meta.parallel,
        world_size=ctx.world_size,
        rank=ctx.rank,
        device=device,
        bf16=cfg.meta.use_bfloat16,
        activation_checkpointing=cfg.meta.activation_checkpointing,
    )
    optimizer = build_optimizer(
        pm.models.encoder, pm.models.predictor, lr=o.start_lr, weight_decay=o.weight_decay
    )
    start_step = resume.step
    if resume.source is not None:
        phase.where = "loading the optimizer state"
        pm.load_optimizer_state(optimizer, resume.named_opt)
        logger.info("resumed from %s at step %d", resume.source, start_step)
    resume.named_opt = None
    metrics_path = run_dir / "metrics.jsonl"
    if ctx.is_main:
        _truncate_metrics(metrics_path, start_step)

    end_step = sched.total_steps if o.max_steps is None else min(sched.total_steps, o.max_steps)
    deadline = None if o.time_limit_min is None else started + 60.0 * o.time_limit_min
    timed_out = False
    mask_gen = build_mask_generator(cfg)
    regularizer = build_regularizer(cfg)
    bf16 = cfg.meta.use_bfloat16
    skip = o.nan_policy == "skip"
    step_models = pm.step_models
    if cfg.meta.compile:
        step_models = JEPAModels(
            encoder=torch.compile(step_models.encoder),  # type: ignore[arg-type]
            predictor=torch.compile(step_models.predictor),  # type: ignore[arg-type]
            target_encoder=torch.compile(step_models.target_encoder),  # type: ignore[arg-type]
        )

    tag = cfg.logging.write_tag
    ckpt_every = cfg.logging.checkpoint_every or ipe
    global_batch = batches.global_batch_size
    mine = rank_slice(ctx.rank, cfg.data.batch_size)
    history: list[dict[str, Any]] = []
    loss_sum = torch.zeros((), device=device)
    std_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    n_acc = 0
    skipped = 0
    ckpt_failures = 0
    kc = kt = 0
    t_last = time.perf_counter()
    imgs_since = 0
    last_good: Path | None = resume.source
    saved_at = start_step  # the step of last_good
    bar = tqdm(
        total=end_step,
        initial=start_step,
        disable=not (cfg.logging.progress and ctx.is_main),
        desc="pretrain",
        unit="step",
        dynamic_ncols=True,
    )
    metrics_file = open(metrics_path, "a") if ctx.is_main else None  # noqa: SIM115
    step = start_step
    last_done = start_step
    try:
        for step in range(start_step, end_step):
            phase.where = f"training step {step}"
            images, _ = batches.get(step)
            # masks of the whole global batch (so they do not depend on the world size), sliced
            masks_enc, masks_pred = mask_gen(
                global_batch, seeded_generator(cfg.meta.seed, 4, step, 0)
            )
            masks_enc = masks_enc[:, mine].contiguous()
            masks_pred = masks_pred[:, mine].contiguous()
            kc, kt = masks_enc.shape[-1], masks_pred.shape[-1]
            images = images.to(device, non_blocking=True)
            masks_enc = masks_enc.to(device, non_blocking=True)
            masks_pred = masks_pred.to(device, non_blocking=True)
            out = train_step(
                step_models,
                optimizer,
                images,
                masks_enc,
                masks_pred,
                lr=sched.lr(step),
                wd=sched.wd(step),
                momentum=sched.momentum(step),
                loss_kind=o.loss,
                bf16=bf16,
                skip_nonfinite=skip,
                regularizer=regularizer,
                reg_weight=cfg.meta.reg_weight,
                step=step,
            )
            imgs_since += images.shape[0] * ctx.world_size
            bar.update(1)
            done = last_done = step + 1
            timed_out = done < end_step and _out_of_time(ctx, deadline, done, cfg.logging.log_every)
            # a run stopped by the time limit checkpoints its last step, like a finished one
            is_ckpt = done % ckpt_every == 0 or done == end_step or timed_out
            if out.skipped:
                skipped += 1
                logger.warning("step %d: non-finite loss, step skipped (%d so far)", step, skipped)
                if not is_ckpt:
                    continue  # a checkpoint step still checkpoints (the last one above all)
            else:
                bad = ~torch.isfinite(out.loss.detach())
                first_bad = torch.where(bad & (first_bad < 0), step, first_bad)
                loss_sum += out.loss.detach()
                std_sum += out.target_std
                n_acc += 1
            if done % cfg.logging.log_every == 0 or is_ckpt:
                phase.where = f"averaging metrics at step {done}"
                # the only host synchronisation of the loop, and its only extra collective
                mine_vec = torch.stack(
                    [
                        loss_sum.double(),
                        std_sum.double(),
                        torch.tensor(float(n_acc), dtype=torch.float64, device=device),
                        first_bad.double(),
                        # weights are checked before each checkpoint only (never save NaN/Inf)
                        _nonfinite_weights(pm.models).double()
                        if is_ckpt
                        else torch.zeros((), dtype=torch.float64, device=device),
                    ]
                )
                every = ctx.all_gather_tensor(mine_vec).cpu()  # (world, 5)
                bads = every[:, 3][every[:, 3] >= 0]
                if bads.numel():
                    raise TrainingDiverged(
                        f"loss became non-finite at step {int(bads.min())}; stopping. The last "
                        f"good checkpoint is {last_good or 'none (no checkpoint written yet)'}. "
                        "Set optimization.nan_policy=skip to skip such steps instead."
                    )
                if float(every[:, 4].sum()) > 0:
                    raise TrainingDiverged(
                        f"the weights became non-finite (NaN/Inf) by step {done} although the "
                        "loss was finite (an overflowing update: is the learning rate far too "
                        "high?); stopping without writing a checkpoint. The last good checkpoint "
                        f"is {last_good or 'none (no checkpoint written yet)'}."
                    )
                # no record when every step since the last one was skipped (nan_policy=skip)
                if float(every[:, 2].sum()) > 0:
                    count = max(1.0, float(every[:, 2].sum()))
                    now = time.perf_counter()
                    rec = {
                        "step": done,
                        "epoch": step // ipe,
                        "loss": float(every[:, 0].sum()) / count,
                        "lr": sched.lr(step),
                        "wd": sched.wd(step),
                        "momentum": sched.momentum(step),
                        "context_tokens": kc,
                        "target_tokens": kt,
                        "img_per_s": imgs_since / max(1e-9, now - t_last),
                        "target_std": float(every[:, 1].sum()) / count,
                        "skipped_steps": skipped,
                    }
                    alarms: list[str] = []
                    if probe_images is None:
                        probe_images = images[:256].detach().clone()
                    # every rank runs the probe: under FSDP its forward is a collective
                    try:
                        rec["probe_rank"] = probe_rank(models.target_encoder, probe_images)
                    except ValueError as err:  # non-finite features: the alarm's NaN case
                        logger.warning("collapse probe failed at step %d: %s", done, err)
                        rec["probe_rank"] = math.nan
                    if ctx.is_main:
                        alarms = monitor.update(rec)  # logs a collapse warning itself
                    history.append(rec)
                    if metrics_file is not None:
                        metrics_file.write(json.dumps(rec) + "\n")
                        metrics_file.flush()
                    postfix = {"loss": f"{rec['loss']:.4f}", "ips": f"{rec['img_per_s']:.0f}"}
                    if alarms:
                        postfix["alarm"] = "COLLAPSE"
                    bar.set_postfix(postfix)
                    if on_log is not None and ctx.is_main:
                        on_log(rec)
                    loss_sum.zero_()
                    std_sum.zero_()
                    n_acc = 0
                    imgs_since = 0
                    t_last = time.perf_counter()
            if is_ckpt:
                phase.where = f"writing the checkpoint of step {done}"
                try:
                    last_good = (
                        _save(
                            cfg,
                            ctx,
                            pm,
                            optimizer,
                            model_args,
                            run_dir,
                            tag,
                            done=done,
                            ipe=ipe,
                            lr=sched.lr(step),
                            loss=history[-1]["loss"] if history else math.nan,
                            normalization=normalization,
                        )
                        or last_good
                    )
                    saved_at = done
                except ckpt.CheckpointError as err:
                    # every rank gets the same error from _save, so all take the same branch
                    retry = cfg.logging.checkpoint_failure == "retry"
                    if not retry or done == end_step or timed_out:
                        msg = _checkpoint_failure_message(err, done, last_good, saved_at, retry)
                        raise ckpt.CheckpointError(msg) from err
                    ckpt_failures += 1
                    logger.warning(
                        "%s; training continues (logging.checkpoint_failure=retry, %d failed "
                        "write(s) so far); next attempt at step %d; last good checkpoint: %s "
                        "(step %d)",
                        err,
                        ckpt_failures,
                        min(done + ckpt_every, end_step),
                        last_good or "none",
                        saved_at,
                    )
            if timed_out:
                logger.warning(
                    "stopped at step %d of %d: optimization.time_limit_min=%g reached (%.2f min "
                    "since start); checkpoint written, run the same command again to resume",
                    done,
                    end_step,
                    o.time_limit_min,
                    (time.perf_counter() - started) / 60.0,
                )
                break
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    if skipped:
        logger.warning("%d step(s) were skipped for a non-finite loss", skipped)
    if ckpt_failures:
        logger.warning("%d checkpoint write(s) failed and were retried", ckpt_failures)
    return TrainResult(
        run_dir=run_dir,
        step=last_done,
        models=pm.models,
        model_args=model_args,
        history=history,
        skipped_steps=skipped,
        checkpoint_failures=ckpt_failures,
        time_limit_reached=timed_out,
    )


def _save(
    cfg: Config,
    ctx: DistContext,
    pm: Any,
    optimizer: torch.optim.Optimizer,
    model_args: dict[str, Any],
    run_dir: Path,
    tag: str,
    *,
    done: int,
    ipe: int,
    lr: float,
    loss: float,
    normalization: dict[str, list[float]],
) -> Path | None:
    """Gather full state (a collective under FSDP), write it on rank 0, agree on the outcome."""
    model_state = pm.model_state()
    opt_state = pm.optimizer_state(optimizer)
    rng_ranks = ctx.all_gather_object(ckpt.rng_state())
    path = ckpt.latest_path(run_dir, tag)
    error = None
    if ctx.is_main:
        state = _state(
            model_state,
            opt_state,
            cfg,
            model_args,
            step=done,
            epoch=done // ipe,
            loss=loss,
            lr=lr,
            world_size=ctx.world_size,
            rng_ranks=rng_ranks,
            normalization=normalization,
        )
        try:
            ckpt.save_checkpoint(state, path)
            keep = cfg.logging.keep_every
            if keep and done % keep == 0:
                ckpt.keep_copy(path, ckpt.step_path(run_dir, done, tag))
        except ckpt.CheckpointError as err:
            if not ctx.distributed:
                raise
            error = str(err)
    if ctx.distributed:
        error = ctx.broadcast_object(error)
    if error is not None:
        raise ckpt.CheckpointError(error)
    return path
