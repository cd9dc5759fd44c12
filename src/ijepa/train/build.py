"""Build the I-JEPA networks from plain model arguments (never from files or the environment)."""

from __future__ import annotations

import copy
from typing import Any

from ijepa.config import Config
from ijepa.masks import MultiBlockMaskGenerator
from ijepa.models import VisionTransformer, VisionTransformerPredictor, vit_encoder
from ijepa.models.attention import check_attn_impl
from ijepa.train.regularizers import SIGReg
from ijepa.train.schedules import Schedules, build_schedules
from ijepa.train.step import JEPAModels


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
    }


def build_encoder(
    model_args: dict[str, Any], *, attn_impl: str = "auto", drop_path_rate: float = 0.0
) -> VisionTransformer:
    """A context encoder as described by ``model_args``."""
    overrides = {
        key: model_args[arg]
        for key, arg in (
            ("depth", "enc_depth"),
            ("embed_dim", "enc_emb_dim"),
            ("num_heads", "enc_num_heads"),
        )
        if model_args.get(arg) is not None
    }
    return vit_encoder(
        model_args["model_name"],
        **overrides,
        img_size=model_args["img_size"],
        patch_size=model_args["patch_size"],
        in_chans=model_args["in_chans"],
        attn_impl=attn_impl,
        drop_path_rate=drop_path_rate,
        patch_init_std=model_args.get("patch_init_std"),
    )


def build_models(
    model_args: dict[str, Any], *, attn_impl: str = "auto", drop_path_rate: float = 0.0
) -> JEPAModels:
    """Context encoder, predictor, and a frozen copy of the encoder as EMA target."""
    encoder = build_encoder(model_args, attn_impl=attn_impl, drop_path_rate=drop_path_rate)
    predictor = VisionTransformerPredictor(
        grid_size=encoder.grid_size,
        embed_dim=encoder.embed_dim,
        predictor_embed_dim=model_args["pred_emb_dim"],
        depth=model_args["pred_depth"],
        num_heads=encoder.num_heads,
        attn_impl=check_attn_impl(attn_impl),
    )
    target = copy.deepcopy(encoder)
    for p in target.parameters():
        p.requires_grad_(False)
    return JEPAModels(encoder=encoder, predictor=predictor, target_encoder=target)


def build_mask_generator(
    cfg: Config | None, grid: tuple[int, int] | None = None, mode: str | None = None
) -> MultiBlockMaskGenerator:
    """The multi-block mask sampler a config describes (its ``mask`` section).

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
    return MultiBlockMaskGenerator(
        input_size=grid,
        enc_mask_scale=m.enc_mask_scale,
        pred_mask_scale=m.pred_mask_scale,
        aspect_ratio=m.aspect_ratio,
        nenc=m.num_enc_masks,
        npred=m.num_pred_masks,
        min_keep=m.min_keep,
        allow_overlap=m.allow_overlap,
        mode=mode,
        per_image_size=m.per_image_size if mode == "default" else False,
    )


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
        return SIGReg(seed=cfg.meta.seed, on=cfg.meta.reg_on)
    raise ValueError(f"unknown meta.regularizer {cfg.meta.regularizer!r}")
