"""What a run builds from its config: model arguments, mask sampler, schedules, and its batches.

:class:`TrainBatches` is the training loop's only data source: this rank's images and masks of a
step, on the device, as a pure function of the seed and the step (see :mod:`ijepa.train.batches`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ijepa.config import Config, ConfigError, dataset_spec
from ijepa.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    WebDatasetStream,
    load_imageset,
    official_train_transform,
    parse_spec,
)
from ijepa.dist import DistInfo
from ijepa.masks import (
    SMALL_GRID,
    SMALL_GRID_MIN_KEEP,
    SMALL_GRID_TARGETS,
    MaskSampler,
    make_mask_sampler,
    step_masks,
)
from ijepa.train.batches import FileBatches, MemoryBatches
from ijepa.train.regularizers import SIGReg
from ijepa.train.schedules import Schedules, build_schedules
from ijepa.train.stream_batches import StreamBatches

logger = logging.getLogger(__name__)


def model_args_from_config(cfg: Any, in_chans: int) -> dict[str, Any]:
    """The architecture facts of a run, stored in every checkpoint to rebuild its networks."""
    return {
        "model_name": cfg.meta.model_name,
        "img_size": cfg.data.crop_size,
        "patch_size": cfg.mask.patch_size,
        "in_chans": in_chans,
        "pred_depth": cfg.meta.pred_depth,
        "pred_emb_dim": cfg.meta.pred_emb_dim,
        "enc_depth": cfg.meta.enc_depth,
        "enc_emb_dim": cfg.meta.enc_emb_dim,
        "enc_num_heads": cfg.meta.enc_num_heads,
        "patch_init_std": cfg.meta.patch_init_std,
        **variant_args(cfg),
    }


def variant_args(cfg: Any) -> dict[str, Any]:
    """The variant keys of ``model_args``, present only where a run departs from the paper.

    (So a default run's ``model_args``, and those of checkpoints written before the variants
    existed, stay as they were.)
    """
    meta = cfg.meta
    out: dict[str, Any] = {}
    if meta.backbone != "vit":
        out.update(
            backbone=meta.backbone,
            energy_steps=meta.energy_steps,
            energy_step_size=meta.energy_step_size,
        )
    if meta.target != "latent":
        out["target"] = meta.target
    if meta.input_norm != "none":
        out["input_norm"] = meta.input_norm
    return out


def build_mask_generator(
    cfg: Config | None, grid: tuple[int, int] | None = None, mode: str | None = None
) -> MaskSampler:
    """The mask sampler a config describes (its ``mask`` section; ``mask.strategy``).

    Args:
        cfg: the run config; ``None`` gives the defaults.
        grid: patch grid ``(Hp, Wp)``; default ``crop_size // patch_size`` on both sides.
        mode: override ``mask.mode`` (``"default"`` or ``"official"``); ``per_image_size``
            applies to the default mode only.
    """
    cfg = cfg or Config()
    m = cfg.mask
    if grid is None:
        side = cfg.data.crop_size // m.patch_size
        grid = (side, side)
    mode = mode or m.mode
    pad = m.pad and mode == "default"
    npred, min_keep = mask_counts(m.geometry, grid, m.num_pred_masks, m.min_keep)
    if m.strategy != "multiblock":  # the paper's ablations: their own counts and sizes
        return make_mask_sampler(
            m.strategy, grid, pad=pad, min_keep=min_keep, aspect_ratio=m.aspect_ratio
        )
    return make_mask_sampler(
        "multiblock",
        grid,
        pad=pad,
        min_keep=min_keep,
        aspect_ratio=m.aspect_ratio,
        enc_mask_scale=m.enc_mask_scale,
        pred_mask_scale=m.pred_mask_scale,
        nenc=m.num_enc_masks,
        npred=npred,
        allow_overlap=m.allow_overlap,
        mode=mode,
        per_image_size=m.per_image_size if mode == "default" else False,
        fixed_sizes=m.fixed_sizes if mode == "default" else False,
    )


def mask_counts(
    geometry: str, grid: tuple[int, int], num_pred_masks: int, min_keep: int
) -> tuple[int, int]:
    """Target-block count and ``min_keep`` for ``mask.geometry`` on a patch grid.

    ``fixed`` returns them as given; ``auto`` caps them at 2 and 4 on grids smaller than
    :data:`ijepa.masks.SMALL_GRID` on a side (and says so once in the log).
    """
    if geometry == "fixed" or min(grid) >= SMALL_GRID:
        return num_pred_masks, min_keep
    npred, keep = min(num_pred_masks, SMALL_GRID_TARGETS), min(min_keep, SMALL_GRID_MIN_KEEP)
    if (npred, keep) != (num_pred_masks, min_keep) and grid not in _SAID:
        _SAID.add(grid)
        changed = [f"{npred} target block(s) (not {num_pred_masks})"] * (npred != num_pred_masks)
        changed += [f"min_keep {keep} (not {min_keep})"] * (keep != min_keep)
        logger.info(
            "mask.geometry=auto: %dx%d patch grid, so %s; set mask.geometry=fixed to keep the "
            "configured values", grid[0], grid[1], " and ".join(changed),
        )  # fmt: skip
    return npred, keep


_SAID: set[tuple[int, int]] = set()


def schedules_for(cfg: Config, iterations_per_epoch: int) -> Schedules:
    """The LR, weight-decay and EMA schedules of a config's ``optimization`` section."""
    o = cfg.optimization
    return build_schedules(
        iterations_per_epoch=iterations_per_epoch,
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


def build_regularizer(cfg: Config) -> SIGReg | None:
    """The anti-collapse regulariser ``meta.regularizer`` names (None for ``none``)."""
    if cfg.meta.regularizer == "none":
        return None
    if cfg.meta.regularizer == "sigreg":
        return SIGReg(num_slices=cfg.meta.reg_slices, seed=cfg.meta.seed, on=cfg.meta.reg_on)
    raise ValueError(f"unknown meta.regularizer {cfg.meta.regularizer!r}")


def _official_transform(cfg: Config) -> Any:
    d = cfg.data
    return official_train_transform(
        d.crop_size,
        crop_scale=d.crop_scale,
        hflip=d.use_horizontal_flip,
        color_distortion=d.use_color_distortion,
        color_jitter=d.color_jitter_strength,
        blur=d.use_gaussian_blur,
    )


def _stream_source(cfg: Config, pattern: str, dist: DistInfo) -> StreamBatches:
    """A ``webdataset:PATTERN`` training stream (the official per-image augmentation)."""
    from ijepa.data.shards import count_samples, expand_pattern

    d = cfg.data
    if d.max_images is not None:
        raise ConfigError("data.max_images does not apply to webdataset streams; unset it")
    urls = expand_pattern(pattern, "train")
    stream = WebDatasetStream(
        urls,
        seed=cfg.meta.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        shuffle_buffer=d.shuffle_buffer,
    )
    return StreamBatches(
        stream,
        count_samples(urls),
        _official_transform(cfg),
        batch_size=d.batch_size,
        seed=cfg.meta.seed,
        num_workers=d.num_workers,
        pin_memory=d.pin_mem and torch.cuda.is_available(),
        world_size=dist.world_size,
    )


def image_source(
    cfg: Config, dist: DistInfo
) -> tuple[MemoryBatches | FileBatches | StreamBatches, int]:
    """The images of a run as a function of the step, and their number of channels.

    An ``imagefolder:`` data set is read from files by a DataLoader and a ``webdataset:`` one is
    streamed from its shards (both with the official per-image augmentation); every other data
    set is held in memory and augmented in batches.
    """
    spec = dataset_spec(cfg)
    kind, arg = parse_spec(spec)
    d = cfg.data
    if kind == "webdataset":
        return _stream_source(cfg, arg or "", dist), 3
    if kind == "imagefolder":
        folder = Path(arg or ".")
        root = folder / "train" if (folder / "train").is_dir() else folder
        dataset: Any = ImageFolderDataset(root)
        if d.max_images is not None:
            dataset = torch.utils.data.Subset(dataset, range(min(d.max_images, len(dataset))))
        transform = _official_transform(cfg)
        files = FileBatches(
            dataset,
            transform,
            batch_size=d.batch_size,
            seed=cfg.meta.seed,
            num_workers=d.num_workers,
            pin_memory=d.pin_mem and torch.cuda.is_available(),
            rank=dist.rank,
            world_size=dist.world_size,
        )
        return files, 3
    data = load_imageset(spec, "train")
    if d.max_images is not None:
        data = data.subset(torch.arange(min(d.max_images, len(data))))
    memory = MemoryBatches(
        data,
        batch_size=d.batch_size,
        crop_size=d.crop_size,
        crop_scale=d.crop_scale,
        hflip=d.use_horizontal_flip,
        seed=cfg.meta.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    return memory, int(data.images.shape[1])


@dataclass
class Batch:
    """This rank's part of one global batch, on the device.

    Attributes:
        images: (B, C, S, S) float, normalised.
        masks_enc: (nenc, B, Kc) context patch indices (-1: padding, with ``mask.pad``).
        masks_pred: (M, B, Kt) target patch indices (-1: padding).
        valid_enc: with ``mask.pad``: (nenc, B, Kc) bool, the real context slots; else None.
        valid_pred: with ``mask.pad``: (M, B, Kt) bool, the real target slots; else None.
    """

    images: torch.Tensor
    masks_enc: torch.Tensor
    masks_pred: torch.Tensor
    valid_enc: torch.Tensor | None = None
    valid_pred: torch.Tensor | None = None


class TrainBatches:
    """This rank's images and masks of each training step, on the device.

    Args:
        cfg: the run config (``data``, ``mask`` and ``meta.seed``).
        dist: this process's place in the job.
        device: where the batches go.
    """

    def __init__(self, cfg: Config, dist: DistInfo, device: torch.device) -> None:
        self.source, self.in_chans = image_source(cfg, dist)
        self.device = device
        self.seed = cfg.meta.seed
        self.masks = build_mask_generator(cfg)
        self.batch_size, self.rank, self.world_size = (
            cfg.data.batch_size,
            dist.rank,
            dist.world_size,
        )
        self.global_batch_size = self.source.global_batch_size
        self.iterations_per_epoch = self.source.iterations_per_epoch
        data = getattr(self.source, "data", None)
        mean, std = (data.mean, data.std) if data is not None else (IMAGENET_MEAN, IMAGENET_STD)
        self.normalization = {"mean": list(mean), "std": list(std)}
        """The per-channel mean and std the images were normalised with (saved in checkpoints)."""

    def get(self, step: int) -> Batch:
        """The batch of global step ``step``."""
        images, _ = self.source.get(step)
        # the one seeding rule: this rank's columns of the global batch's masks
        masks_enc, masks_pred = step_masks(
            self.masks,
            self.seed,
            step,
            self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
        )
        valid_enc = valid_pred = None
        if self.masks.pad:  # the real slots, found here on the CPU (no device sync)
            valid_enc = (masks_enc >= 0).to(self.device, non_blocking=True)
            valid_pred = (masks_pred >= 0).to(self.device, non_blocking=True)
        return Batch(
            images=images.to(self.device, non_blocking=True),
            masks_enc=masks_enc.to(self.device, non_blocking=True),
            masks_pred=masks_pred.to(self.device, non_blocking=True),
            valid_enc=valid_enc,
            valid_pred=valid_pred,
        )
