"""Reading a run for the pictures: its config, its checkpoint's networks, sample images, masks.

A run folder holds ``config.yaml``, ``metrics.jsonl`` and checkpoints (``<tag>-latest.pth.tar``).
Checkpoints written by our trainer carry ``model_args`` and the resolved ``config``, which is
enough to rebuild the three networks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ijepa import checkpoint as ckpt
from ijepa.config import Config, config_from_dict, dataset_spec, load_config
from ijepa.masks import MaskSampler, MaskSamplingError, step_masks
from ijepa.models import JEPAModels
from ijepa.train.build import build_mask_generator

__all__ = [
    "LoadedRun",
    "SampleImages",
    "find_checkpoint",
    "load_run",
    "mask_generators",
    "read_run_config",
    "run_dataset_spec",
    "sample_images",
    "training_masks",
]

logger = logging.getLogger(__name__)


def read_run_config(run_dir: str | Path) -> Config | None:
    """The run's ``config.yaml`` as a :class:`Config`, or None when the folder has none."""
    path = Path(run_dir) / "config.yaml"
    return load_config(path) if path.is_file() else None


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file for ``path``: the file itself, or a run folder's ``latest``.

    In a folder, ``<write_tag>-latest.pth.tar`` or the sharded ``<write_tag>-latest.dcp`` is
    taken (the newer; tag from its ``config.yaml``, default ``jepa``), else the newest
    ``*.pth.tar``.

    Raises:
        CheckpointNotFoundError: nothing suitable exists.
    """
    from ijepa import sharded_checkpoint as sharded

    path = Path(path)
    if path.is_file() or sharded.is_sharded(path):
        return path
    if not path.is_dir():
        raise ckpt.CheckpointNotFoundError(f"no checkpoint file or run folder at {path}")
    cfg = read_run_config(path)
    tag = cfg.logging.write_tag if cfg else "jepa"
    latest = [
        (p.stat().st_mtime_ns, p)
        for p in (ckpt.latest_path(path, tag), sharded.latest_dir(path, tag))
        if p.exists()
    ]
    if latest:  # the single file, or the sharded folder of a meta.parallel=fsdp run
        return max(latest)[1]
    found = sorted(path.glob("*.pth.tar"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ckpt.CheckpointNotFoundError(f"run folder {path} holds no checkpoint (*.pth.tar)")
    return found[-1]


@dataclass
class LoadedRun:
    """Networks and settings restored from a checkpoint.

    Attributes:
        models: context encoder, predictor and target encoder (eval mode, CPU).
        model_args: the architecture facts stored in the checkpoint.
        config: the run's config (from the checkpoint, else the folder's ``config.yaml``).
        checkpoint: the file read.
        step: the training step of the checkpoint.
    """

    models: JEPAModels
    model_args: dict[str, Any]
    config: Config | None
    checkpoint: Path
    step: int


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild the networks of a checkpoint (file or run folder) written by our trainer.

    Raises:
        FileNotFoundError: no checkpoint.
        ijepa.checkpoint.CheckpointError: unreadable, or without ``model_args``, or the
            weights do not match the architecture.
    """
    from ijepa.models import build_models
    from ijepa.sharded_checkpoint import is_sharded

    file = find_checkpoint(path)
    if is_sharded(file):
        from ijepa.train.sharded import sharded_to_state

        state = sharded_to_state(file)
    else:
        state = ckpt.load_checkpoint(file)
    model_args = state.get("model_args")
    if not isinstance(model_args, dict):
        raise ckpt.CheckpointError(
            f"checkpoint {file} has no 'model_args' (it was not written by `ijepa train`); "
            "convert it first"
        )
    models = build_models(model_args)
    for key in ("encoder", "predictor", "target_encoder"):
        if key not in state:
            raise ckpt.CheckpointError(f"checkpoint {file} has no '{key}' weights")
        module = getattr(models, key)
        ckpt.load_module_state(module, state[key], f"{file} [{key}]")
        module.eval()
    raw_cfg = state.get("config")
    config = config_from_dict(raw_cfg, str(file)) if isinstance(raw_cfg, dict) else None
    if config is None:
        config = read_run_config(file.parent)
    step = int(state.get("step", 0))
    logger.info("loaded %s (step %d)", file, step)
    return LoadedRun(
        models=models, model_args=model_args, config=config, checkpoint=file, step=step
    )


def training_masks(
    cfg: Config, step: int, *, rank: int = 0, world_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks a run's training drew at ``step`` for ``rank``'s images.

    The one seeding rule (:func:`ijepa.masks.step_masks`) with the run's sampler, seed and batch:
    ``masks_enc (nenc, B, Kc)`` and ``masks_pred (M, B, Kt)``, ``B = data.batch_size``.
    """
    sampler = build_mask_generator(cfg)
    return step_masks(
        sampler, cfg.meta.seed, step, cfg.data.batch_size, rank=rank, world_size=world_size
    )


def mask_generators(
    cfg: Config | None, grid: tuple[int, int], modes: tuple[str, ...] = ("default", "official")
) -> dict[str, MaskSampler]:
    """The run's mask sampler in each of ``modes``, for side-by-side pictures.

    The run's own mode must be possible; another mode that cannot sample on this grid (the
    official sampler would loop forever on small grids) is left out with a logged notice. Modes
    are multi-block samplers: a run with another ``mask.strategy`` gets its own sampler only.
    """
    cfg = cfg or Config()
    if cfg.mask.strategy != "multiblock":
        return {cfg.mask.strategy: build_mask_generator(cfg, grid)}
    own = cfg.mask.mode
    out: dict[str, MaskSampler] = {}
    for mode in modes:
        try:
            out[mode] = build_mask_generator(cfg, grid, mode)
        except MaskSamplingError as err:
            if mode == own:
                raise
            logger.info("mask mode %r left out of the comparison: %s", mode, err)
    if not out:
        out[own] = build_mask_generator(cfg, grid, own)
    return out


@dataclass
class SampleImages:
    """Evaluation-transformed images of a data set.

    Attributes:
        images: ``(B, C, S, S)`` normalised float32.
        labels: ``(B,)`` int64.
        classes: class names.
        mean: normalisation mean.
        std: normalisation std.
        name: the data set's name.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str


def sample_images(
    spec: str, split: str, size: int, num: int, *, seed: int = 0, shuffle: bool = True
) -> SampleImages:
    """Load a data set by spec and eval-transform ``num`` of its images to ``size`` px.

    Args:
        spec: data spec (``embedded``, ``fashion-mnist[:DIR]``, ``imagefolder:DIR``, ...).
        split: ``train`` or ``test``.
        size: output side in pixels.
        num: how many images (all when larger than the set).
        seed: seed of the random subset.
        shuffle: take a random subset (else the first ``num``).
    """
    from ijepa.data import eval_transform_batch, load_imageset

    data = load_imageset(spec, split)
    n = min(num, len(data))
    if shuffle:
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    else:
        idx = torch.arange(n)
    sub = data.subset(idx)
    return SampleImages(
        images=eval_transform_batch(sub.images, size, mean=sub.mean, std=sub.std),
        labels=sub.labels,
        classes=list(sub.classes),
        mean=tuple(sub.mean),
        std=tuple(sub.std),
        name=sub.name,
    )


def run_dataset_spec(cfg: Config | None, override: str | None = None) -> str:
    """The data spec to draw sample images from: ``override``, else the run's, else embedded."""
    if override:
        return override
    return dataset_spec(cfg) if cfg is not None else "embedded"
