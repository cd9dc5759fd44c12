"""Models: the ViT and Energy Transformer encoders, the I-JEPA predictor, the three networks,
sin-cos positions and mask gathering.

This package depends only on torch; it never reads configs, files or the environment.
"""

from ijepa.models.attention import ATTN_IMPLS, Attention, select_attn_impl
from ijepa.models.energy import EnergyTransformer
from ijepa.models.gather import apply_masks
from ijepa.models.jepa import (
    Encoder,
    JEPAModels,
    build_encoder,
    build_models,
    random_init_encoder,
)
from ijepa.models.layers import MLP, Block, DropPath, PatchEmbed
from ijepa.models.pos_embed import get_1d_sincos_pos_embed, get_2d_sincos_pos_embed
from ijepa.models.predictor import VisionTransformerPredictor
from ijepa.models.vit import VIT_SIZES, VisionTransformer, vit_encoder

__all__ = [
    "ATTN_IMPLS",
    "MLP",
    "VIT_SIZES",
    "Attention",
    "Block",
    "DropPath",
    "Encoder",
    "EnergyTransformer",
    "JEPAModels",
    "PatchEmbed",
    "VisionTransformer",
    "VisionTransformerPredictor",
    "apply_masks",
    "build_encoder",
    "build_models",
    "get_1d_sincos_pos_embed",
    "get_2d_sincos_pos_embed",
    "random_init_encoder",
    "select_attn_impl",
    "vit_encoder",
]
