"""Cross-field checks of a run configuration that the types of :mod:`ijepa.config` cannot express.

:func:`validate` (re-exported by :mod:`ijepa.config`) raises :class:`~ijepa.errors.ConfigError`
naming the key to fix; :func:`check_placeholders` refuses the official files' placeholders.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ijepa.errors import ConfigError

if TYPE_CHECKING:
    from ijepa.config import Config

PLACEHOLDER_PREFIX = "$replace_this"


def check_placeholders(cfg: Config) -> None:
    """Refuse the official files' ``$replace_this...`` placeholders, naming the key to set."""
    for sec_name, values in cfg.to_dict().items():
        for key, value in values.items():
            if isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX):
                raise ConfigError(
                    f"{sec_name}.{key} is still the placeholder '{value}'; "
                    f"set it, e.g. {sec_name}.{key}=/path/to/..."
                )


def validate(cfg: Config) -> None:
    """Cross-field checks that the type system cannot express."""
    check_placeholders(cfg)
    d, m, o = cfg.data, cfg.mask, cfg.optimization
    if d.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {d.batch_size}")
    if d.shuffle_buffer < 0:
        raise ConfigError(f"data.shuffle_buffer must be >= 0, got {d.shuffle_buffer}")
    if m.patch_size < 1 or d.crop_size % m.patch_size != 0:
        raise ConfigError(
            f"data.crop_size ({d.crop_size}) must be a multiple of mask.patch_size ({m.patch_size})"
        )
    for name in ("crop_scale",):
        lo, hi = getattr(d, name)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"data.{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
    for name in ("enc_mask_scale", "pred_mask_scale"):
        lo, hi = getattr(m, name)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"mask.{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
    if m.fixed_sizes and m.mode != "default":
        raise ConfigError(
            "mask.fixed_sizes needs mask.mode=default (the official sampler's sizes "
            "are the official code's)"
        )
    if not 0 < m.aspect_ratio[0] <= m.aspect_ratio[1]:
        raise ConfigError(f"mask.aspect_ratio must satisfy 0 < min <= max, got {m.aspect_ratio}")
    if m.num_pred_masks < 1 or m.num_enc_masks < 1:
        raise ConfigError("mask.num_pred_masks and mask.num_enc_masks must be >= 1")
    if o.epochs < 1:
        raise ConfigError(f"optimization.epochs must be >= 1, got {o.epochs}")
    if o.warmup < 0 or o.warmup > o.epochs:
        raise ConfigError(
            f"optimization.warmup ({o.warmup}) must lie in [0, optimization.epochs={o.epochs}]"
        )
    if not 0 <= o.ema[0] <= o.ema[1] <= 1:
        raise ConfigError(f"optimization.ema must satisfy 0 <= start <= end <= 1, got {o.ema}")
    if o.ipe_scale <= 0:
        raise ConfigError(f"optimization.ipe_scale must be > 0, got {o.ipe_scale}")
    if o.max_steps is not None and o.max_steps < 1:
        raise ConfigError(f"optimization.max_steps must be >= 1, got {o.max_steps}")
    if cfg.meta.patch_init_std is not None and not cfg.meta.patch_init_std > 0:
        raise ConfigError(f"meta.patch_init_std must be > 0, got {cfg.meta.patch_init_std}")
    layers = cfg.meta.target_layers
    depth = cfg.meta.energy_steps if cfg.meta.backbone == "energy" else cfg.meta.enc_depth
    if layers != "all" and (
        not isinstance(layers, int) or layers < 1 or (depth is not None and layers > depth)
    ):
        raise ConfigError(
            f"meta.target_layers must be 'all' or in [1, encoder depth"
            f"{'' if depth is None else f' = {depth}'}], got {layers!r}"
        )
    if cfg.meta.reg_slices < 1:
        raise ConfigError(f"meta.reg_slices must be >= 1, got {cfg.meta.reg_slices}")
    if not (cfg.meta.reg_weight >= 0 and math.isfinite(cfg.meta.reg_weight)):
        raise ConfigError(
            f"meta.reg_weight must be a finite number >= 0, got {cfg.meta.reg_weight}"
        )
    _validate_variants(cfg)
    if o.time_limit_min is not None and o.time_limit_min <= 0:
        raise ConfigError(f"optimization.time_limit_min must be > 0, got {o.time_limit_min}")
    for key in ("lr", "start_lr", "final_lr", "weight_decay", "final_weight_decay"):
        if getattr(o, key) < 0:
            raise ConfigError(f"optimization.{key} must be >= 0")
    if cfg.logging.log_every < 1:
        raise ConfigError("logging.log_every must be >= 1")
    from ijepa.trackers import parse_trackers  # light: the tracker packages load on use

    parse_trackers(cfg.logging.trackers)
    for key in ("checkpoint_every", "keep_every"):
        if getattr(cfg.logging, key) < 0:
            raise ConfigError(f"logging.{key} must be >= 0, got {getattr(cfg.logging, key)}")
    if not -(2**63) <= cfg.meta.seed < 2**64:  # what torch.manual_seed accepts
        raise ConfigError(f"meta.seed must lie in [-2**63, 2**64), got {cfg.meta.seed}")


def _validate_variants(cfg: Config) -> None:
    """Checks of the variant switches (backbone, target, teacher, mask strategy, padding)."""
    m, meta = cfg.mask, cfg.meta
    if meta.teacher == "none" and meta.regularizer == "none":
        raise ConfigError(
            "meta.teacher=none needs meta.regularizer=sigreg: without a teacher the targets come "
            "from the trained encoder itself, and nothing but the regulariser stops it from "
            "collapsing to a constant"
        )
    if m.strategy != "multiblock":
        if m.mode != "default":
            raise ConfigError(
                f"mask.mode={m.mode} applies to mask.strategy=multiblock only, not {m.strategy}"
            )
        if m.num_enc_masks != 1:
            raise ConfigError(
                f"mask.strategy={m.strategy} has one context (the targets' complement); "
                f"set mask.num_enc_masks=1 (got {m.num_enc_masks})"
            )
        if m.fixed_sizes:
            raise ConfigError(
                f"mask.fixed_sizes applies to mask.strategy=multiblock only (the {m.strategy} "
                "strategy's sizes are fixed per batch already)"
            )
    if meta.target_layers != 1 and (meta.target != "latent" or meta.teacher != "ema"):
        raise ConfigError(
            "meta.target_layers other than 1 averages the EMA target encoder's blocks; it does not go "
            f"with meta.target={meta.target} / meta.teacher={meta.teacher}"
        )
    if m.pad:
        clash = [
            name
            for name, on in (
                ("mask.mode=official", m.mode == "official"),
                ("mask.fixed_sizes=true", m.fixed_sizes),
                ("meta.pred_shared_context=true", meta.pred_shared_context),
            )
            if on
        ]
        if clash:
            raise ConfigError(
                f"mask.pad=true keeps every mask whole; it does not go with {', '.join(clash)} "
                "(the official sampler and fixed sizes subsample masks, the shared-context "
                "predictor pass has no padding mask)"
            )
    if meta.input_norm != "none" and meta.backbone != "vit":
        raise ConfigError(f"meta.input_norm={meta.input_norm} applies to meta.backbone=vit only")
    if meta.energy_steps < 1:
        raise ConfigError(f"meta.energy_steps must be >= 1, got {meta.energy_steps}")
    if not meta.energy_step_size > 0:
        raise ConfigError(f"meta.energy_step_size must be > 0, got {meta.energy_step_size}")
