"""The three networks of I-JEPA, built from plain model arguments (never from configs or files).

``model_args`` is the dict every checkpoint stores to rebuild its networks
(:func:`ijepa.train.build.model_args_from_config` makes it from a run config; compat code infers
it from foreign checkpoints): ``model_name``, ``img_size``, ``patch_size``, ``in_chans``,
``enc_depth``/``enc_emb_dim``/``enc_num_heads`` (overrides of the named size, or None),
``pred_depth``, ``pred_emb_dim`` and ``patch_init_std``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from ijepa.models.attention import check_attn_impl
from ijepa.models.predictor import VisionTransformerPredictor
from ijepa.models.vit import VisionTransformer, vit_encoder


@dataclass
class JEPAModels:
    """The three networks of I-JEPA."""

    encoder: nn.Module
    predictor: nn.Module
    target_encoder: nn.Module


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
    predictor = VisionTransformerPredictor(
        grid_size=encoder.grid_size,
        embed_dim=encoder.embed_dim,
        predictor_embed_dim=model_args["pred_emb_dim"],
        depth=model_args["pred_depth"],
        num_heads=encoder.num_heads,
        attn_impl=check_attn_impl(attn_impl),
        shared_context=pred_shared_context,
    )
    target = copy.deepcopy(encoder)
    for p in target.parameters():
        p.requires_grad_(False)
    return JEPAModels(encoder=encoder, predictor=predictor, target_encoder=target)
