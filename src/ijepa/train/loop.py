"""The pretraining loop: data, masks, steps, metrics, checkpoints and automatic resume."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ijepa.config import Config, ConfigError, dataset_spec, save_config, validate
from ijepa.data import (
    ImageFolderDataset,
    load_imageset,
    official_train_transform,
    parse_spec,
)
from ijepa.dist import DistInfo, dist_info_from_env, resolve_device
from ijepa.masks import MultiBlockMaskGenerator
from ijepa.train import checkpoint as ckpt
from ijepa.train.batches import FileBatches, MemoryBatches, seeded_generator
from ijepa.train.build import build_models, model_args_from_config
from ijepa.train.optim import build_optimizer
from ijepa.train.schedules import Schedules, build_schedules
from ijepa.train.step import JEPAModels, train_step

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    step: int
    models: JEPAModels
    model_args: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0


def _make_batches(cfg: Config, dist: DistInfo) -> tuple[Any, int]:
    """The batch source for a run and its number of input channels."""
    spec = dataset_spec(cfg)
    kind, arg = parse_spec(spec)
    d = cfg.data
    if kind == "imagefolder":
        root = Path(arg) / "train" if (Path(arg) / "train").is_dir() else Path(arg)
        dataset = ImageFolderDataset(root)
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


def _mask_generator(cfg: Config) -> MultiBlockMaskGenerator:
    m = cfg.mask
    grid = cfg.data.crop_size // m.patch_size
    return MultiBlockMaskGenerator(
        input_size=(grid, grid),
        enc_mask_scale=m.enc_mask_scale,
        pred_mask_scale=m.pred_mask_scale,
        aspect_ratio=m.aspect_ratio,
        nenc=m.num_enc_masks,
        npred=m.num_pred_masks,
        min_keep=m.min_keep,
        allow_overlap=m.allow_overlap,
        mode=m.mode,
        per_image_size=m.per_image_size,
    )


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric records past ``last_step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= last_step
    ]
    path.write_text("".join(line + "\n" for line in keep))


def _resume_source(cfg: Config, run_dir: Path) -> Path | None:
    latest = ckpt.latest_path(run_dir, cfg.logging.write_tag)
    if latest.exists():
        return latest
    if cfg.meta.load_checkpoint and cfg.meta.read_checkpoint:
        path = Path(cfg.meta.read_checkpoint)
        return path if path.is_absolute() else run_dir / path
    return None


def _state(
    models: JEPAModels,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    model_args: dict[str, Any],
    *,
    step: int,
    epoch: int,
    loss: float,
    lr: float,
    world_size: int,
) -> dict[str, Any]:
    return {
        "format_version": ckpt.FORMAT_VERSION,
        "encoder": models.encoder.state_dict(),
        "predictor": models.predictor.state_dict(),
        "target_encoder": models.target_encoder.state_dict(),
        "opt": optimizer.state_dict(),
        "scaler": None,
        "epoch": epoch,
        "step": step,
        "loss": loss,
        "batch_size": cfg.data.batch_size,
        "world_size": world_size,
        "lr": lr,
        "config": cfg.to_dict(),
        "model_args": model_args,
        "rng": ckpt.rng_state(),
    }


def train(cfg: Config, *, on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Pretrain I-JEPA as configured; resumes automatically from the run folder's ``latest``.

    Args:
        cfg: the run configuration (validated here).
        on_log: called with each metrics record (on the main process).
    """
    validate(cfg)
    dist = dist_info_from_env()
    device = resolve_device(cfg.meta.device, dist.local_rank)
    if cfg.meta.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.meta.seed)
    run_dir = Path(cfg.logging.folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    batches, in_chans = _make_batches(cfg, dist)
    ipe = batches.iterations_per_epoch
    o = cfg.optimization
    sched: Schedules = build_schedules(
        iterations_per_epoch=ipe,
        epochs=o.epochs,
        ipe_scale=o.ipe_scale,
        warmup_epochs=o.warmup,
        start_lr=o.start_lr,
        lr=o.lr,
        final_lr=o.final_lr,
        weight_decay=o.weight_decay,
        final_weight_decay=o.final_weight_decay,
        ema=o.ema,
    )
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
    optimizer = build_optimizer(
        models.encoder, models.predictor, lr=o.start_lr, weight_decay=o.weight_decay
    )

    start_step = 0
    source = _resume_source(cfg, run_dir)
    if source is not None:
        state = ckpt.load_checkpoint(source, map_location=device)
        if state.get("model_args") not in (None, model_args):
            raise ckpt.CheckpointError(
                f"checkpoint {source} was made for a different architecture "
                f"({state['model_args']}) than this config ({model_args})"
            )
        ckpt.load_module_state(models.encoder, state["encoder"], f"{source} [encoder]")
        ckpt.load_module_state(models.predictor, state["predictor"], f"{source} [predictor]")
        ckpt.load_module_state(
            models.target_encoder, state["target_encoder"], f"{source} [target_encoder]"
        )
        optimizer.load_state_dict(state["opt"])
        if "rng" in state:
            ckpt.set_rng_state(state["rng"])
        start_step = int(state.get("step", state.get("epoch", 0) * ipe))
        logger.info("resumed from %s at step %d", source, start_step)
    metrics_path = run_dir / "metrics.jsonl"
    if dist.is_main:
        _truncate_metrics(metrics_path, start_step)

    end_step = sched.total_steps if o.max_steps is None else min(sched.total_steps, o.max_steps)
    mask_gen = _mask_generator(cfg)
    bf16 = cfg.meta.use_bfloat16
    skip = o.nan_policy == "skip"
    step_models = models
    if cfg.meta.compile:
        step_models = JEPAModels(
            encoder=torch.compile(models.encoder),  # type: ignore[arg-type]
            predictor=torch.compile(models.predictor),  # type: ignore[arg-type]
            target_encoder=torch.compile(models.target_encoder),  # type: ignore[arg-type]
        )

    tag = cfg.logging.write_tag
    ckpt_every = cfg.logging.checkpoint_every or ipe
    history: list[dict[str, Any]] = []
    loss_sum = torch.zeros((), device=device)
    std_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    n_acc = 0
    skipped = 0
    kc = kt = 0
    t_last = time.perf_counter()
    imgs_since = 0
    last_good: Path | None = source
    bar = tqdm(
        total=end_step,
        initial=start_step,
        disable=not (cfg.logging.progress and dist.is_main),
        desc="pretrain",
        unit="step",
        dynamic_ncols=True,
    )
    metrics_file = open(metrics_path, "a") if dist.is_main else None  # noqa: SIM115
    step = start_step
    try:
        for step in range(start_step, end_step):
            images, _ = batches.get(step)
            masks_enc, masks_pred = mask_gen(
                images.shape[0], seeded_generator(cfg.meta.seed, 4, step, dist.rank)
            )
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
            )
            imgs_since += images.shape[0]
            bar.update(1)
            if out.skipped:
                skipped += 1
                logger.warning("step %d: non-finite loss, step skipped (%d so far)", step, skipped)
                continue
            bad = ~torch.isfinite(out.loss.detach())
            first_bad = torch.where(bad & (first_bad < 0), step, first_bad)
            loss_sum += out.loss.detach()
            std_sum += out.target_std
            n_acc += 1
            done = step + 1
            is_ckpt = done % ckpt_every == 0 or done == end_step
            if done % cfg.logging.log_every == 0 or is_ckpt:
                # the only host synchronisation of the loop
                bad_step = int(first_bad)
                if bad_step >= 0:
                    raise TrainingDiverged(
                        f"loss became non-finite at step {bad_step}; stopping. The last good "
                        f"checkpoint is {last_good or 'none (no checkpoint written yet)'}. "
                        "Set optimization.nan_policy=skip to skip such steps instead."
                    )
                now = time.perf_counter()
                rec = {
                    "step": done,
                    "epoch": step // ipe,
                    "loss": float(loss_sum) / max(1, n_acc),
                    "lr": sched.lr(step),
                    "wd": sched.wd(step),
                    "momentum": sched.momentum(step),
                    "context_tokens": kc,
                    "target_tokens": kt,
                    "img_per_s": imgs_since / max(1e-9, now - t_last),
                    "target_std": float(std_sum) / max(1, n_acc),
                    "skipped_steps": skipped,
                }
                history.append(rec)
                if metrics_file is not None:
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}", ips=f"{rec['img_per_s']:.0f}")
                if on_log is not None and dist.is_main:
                    on_log(rec)
                loss_sum.zero_()
                std_sum.zero_()
                n_acc = 0
                imgs_since = 0
                t_last = time.perf_counter()
            if is_ckpt and dist.is_main:
                last_loss = history[-1]["loss"] if history else math.nan
                state = _state(
                    models,
                    optimizer,
                    cfg,
                    model_args,
                    step=done,
                    epoch=done // ipe,
                    loss=last_loss,
                    lr=sched.lr(step),
                    world_size=dist.world_size,
                )
                path = ckpt.latest_path(run_dir, tag)
                ckpt.save_checkpoint(state, path)
                last_good = path
                keep = cfg.logging.keep_every
                if keep and done % keep == 0:
                    ckpt.keep_copy(path, ckpt.step_path(run_dir, done, tag))
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    if skipped:
        logger.warning("%d step(s) were skipped for a non-finite loss", skipped)
    return TrainResult(
        run_dir=run_dir,
        step=end_step if end_step > start_step else start_step,
        models=models,
        model_args=model_args,
        history=history,
        skipped_steps=skipped,
    )
