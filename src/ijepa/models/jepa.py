"""The three networks of I-JEPA, built from plain model arguments (never from configs or files).

``model_args`` is the dict every checkpoint stores to rebuild its networks
(:func:`ijepa.train.build.model_args_from_config` makes it from a run config; compat code infers
it from foreign checkpoints): ``model_name``, ``img_size``, ``patch_size``, ``in_chans``,
``enc_depth``/``enc_emb_dim``/``enc_num_heads`` (overrides of the named size, or None),
``pred_depth``, ``pred_emb_dim`` and ``patch_init_std``; and, only where a run departs from the
paper (docs/variants.md), ``input_norm: "image"`` (per-image standardised input),
``backbone: "energy"`` with ``energy_steps``/``energy_step_size`` (an
:class:`~ijepa.models.energy.EnergyTransformer` encoder) and ``target: "pixels"`` (a predictor
with a pixel head, :class:`~ijepa.models.heads.PixelPredictor`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ijepa.models.attention import check_attn_impl
from ijepa.models.energy import EnergyTransformer
from ijepa.models.heads import PixelPredictor
from ijepa.models.predictor import VisionTransformerPredictor
from ijepa.models.vit import VIT_SIZES, VisionTransformer, vit_encoder

#: Any encoder :func:`build_encoder` makes: the same call and output contract.
Encoder = VisionTransformer | EnergyTransformer


@dataclass
class JEPAModels:
    """The three networks of I-JEPA."""

    encoder: nn.Module
    predictor: nn.Module
    target_encoder: nn.Module


def build_encoder(
    model_args: dict[str, Any], *, attn_impl: str = "auto", drop_path_rate: float = 0.0
) -> Encoder:
    """A context encoder as described by ``model_args`` (a ViT, or ``backbone: energy``)."""
    if model_args.get("backbone", "vit") == "energy":
        return _energy_encoder(model_args, drop_path_rate)
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
        input_norm=model_args.get("input_norm", "none"),
    )


def random_init_encoder(
    model_args: dict[str, Any], *, seed: int, attn_impl: str = "auto"
) -> Encoder:
    """The random-init baseline of an evaluation: ``build_encoder(model_args)`` seeded with
    ``seed + 1`` (so it differs from a run's own init at ``seed``) without touching the caller's
    random state. Every report that puts a random init beside a trained encoder builds it here."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return build_encoder(model_args, attn_impl=attn_impl)


def encoder_depth(model_args: dict[str, Any]) -> int:
    """Blocks of the encoder ``model_args`` describe (descent steps for ``backbone: energy``)."""
    if model_args.get("backbone", "vit") == "energy":
        return int(model_args["energy_steps"])
    if model_args.get("enc_depth") is not None:
        return int(model_args["enc_depth"])
    return int(VIT_SIZES[model_args["model_name"].lower().removeprefix("vit_")]["depth"])


def _energy_encoder(model_args: dict[str, Any], drop_path_rate: float) -> EnergyTransformer:
    """The Energy Transformer of ``model_args``: width and heads from the size or the overrides."""
    if drop_path_rate > 0:
        raise ValueError("drop_path_rate applies to the ViT backbone only (energy has no blocks)")
    if model_args.get("input_norm", "none") != "none":
        raise ValueError("input_norm applies to the ViT backbone only")
    size = VIT_SIZES[model_args["model_name"].lower().removeprefix("vit_")]
    return EnergyTransformer(
        img_size=model_args["img_size"],
        patch_size=model_args["patch_size"],
        in_chans=model_args["in_chans"],
        embed_dim=model_args.get("enc_emb_dim") or size["embed_dim"],
        num_heads=model_args.get("enc_num_heads") or size["num_heads"],
        steps=model_args["energy_steps"],
        step_size=model_args["energy_step_size"],
        patch_init_std=model_args.get("patch_init_std"),
    )


def build_models(
    model_args: dict[str, Any],
    *,
    attn_impl: str = "auto",
    drop_path_rate: float = 0.0,
    pred_shared_context: bool = False,
) -> JEPAModels:
    """Context encoder, predictor, and a frozen copy of the encoder as EMA target.

    ``pred_shared_context``: the predictor's one pass for all target blocks (a computation
    choice, not part of ``model_args``: see :class:`VisionTransformerPredictor`).
    """
    encoder = build_encoder(model_args, attn_impl=attn_impl, drop_path_rate=drop_path_rate)
    pred_args: dict[str, Any] = dict(
        grid_size=encoder.grid_size,
        embed_dim=encoder.embed_dim,
        predictor_embed_dim=model_args["pred_emb_dim"],
        depth=model_args["pred_depth"],
        num_heads=encoder.num_heads,
        attn_impl=check_attn_impl(attn_impl),
        shared_context=pred_shared_context,
    )
    predictor: VisionTransformerPredictor
    if model_args.get("target", "latent") == "pixels":
        predictor = PixelPredictor(encoder.patch_size, encoder.in_chans, **pred_args)
    else:
        predictor = VisionTransformerPredictor(**pred_args)
    target = copy.deepcopy(encoder)
    for p in target.parameters():
        p.requires_grad_(False)
    return JEPAModels(encoder=encoder, predictor=predictor, target_encoder=target)
