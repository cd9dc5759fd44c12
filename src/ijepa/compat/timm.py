"""timm ``VisionTransformer`` weights: export our encoder, import timm state dicts.

Our encoder is timm's ViT without class token and with average pooling (the ``vit_*_gap`` family,
``class_token=False, global_pool="avg", fc_norm=False``): the parameter names are the same
(``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/fc2``,
``norm``), and timm's ``forward_features`` equals our ``encoder(x)``. timm's own I-JEPA weights
(``vit_huge_patch14_gap_224.in1k_ijepa`` and friends) are the official **context** encoders.

An export is either one ``.safetensors`` file, for::

    timm.create_model("vit_huge_patch14_gap_224", pretrained=True,
                      pretrained_cfg_overlay=dict(file="encoder.safetensors"))

(for other sizes, pass the architecture as keyword arguments: the file's ``ijepa`` header and
:func:`timm_model_args` give them), or a folder with ``model.safetensors`` and a timm
``config.json``, for ``timm.create_model("local-dir:FOLDER", pretrained=True)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ijepa.checkpoint import load_checkpoint
from ijepa.compat.arch import (
    ConversionError,
    EncoderMeta,
    default_stats,
    encoder_from_state,
    encoder_model_args,
    infer_encoder_args,
    mlp_hidden,
    require_vit,
)
from ijepa.compat.safetensors_io import load_tensors, read_meta, save_tensors
from ijepa.data.transforms import DEFAULT_CROP_PCT
from ijepa.models import Encoder, VisionTransformer

__all__ = [
    "load_timm",
    "read_timm_state",
    "save_timm",
    "timm_architecture",
    "timm_model_args",
    "timm_state_to_encoder",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
# (embed_dim, depth, patch_size, img_size) -> registered timm gap architecture
_REGISTERED = {
    (768, 12, 16, 224): "vit_base_patch16_gap_224",
    (1280, 32, 14, 224): "vit_huge_patch14_gap_224",
    (1280, 32, 16, 448): "vit_huge_patch16_gap_448",
    (1408, 40, 16, 224): "vit_giant_patch16_gap_224",
}
_FALLBACK = "vit_base_patch16_gap_224"
_HEAD_KEYS = ("head.weight", "head.bias")
_UNSUPPORTED = ("cls_token", "reg_token", "fc_norm.weight", "attn_pool.latent")


def timm_model_args(encoder: VisionTransformer) -> dict[str, Any]:
    """Keyword arguments of ``timm...VisionTransformer`` that build a twin of ``encoder``."""
    hidden = mlp_hidden(encoder)
    img = encoder.img_size
    return {
        "img_size": img[0] if img[0] == img[1] else list(img),
        "patch_size": encoder.patch_size,
        "in_chans": encoder.in_chans,
        "embed_dim": encoder.embed_dim,
        "depth": encoder.depth,
        "num_heads": encoder.num_heads,
        "mlp_ratio": hidden / encoder.embed_dim,
        "class_token": False,
        "global_pool": "avg",
        "fc_norm": False,
        "num_classes": 0,
    }


def timm_architecture(encoder: VisionTransformer) -> str:
    """The registered timm ``*_gap`` name of this shape, else a generic one (args override it)."""
    img = encoder.img_size
    key = (encoder.embed_dim, encoder.depth, encoder.patch_size, img[0] if img[0] == img[1] else -1)
    return _REGISTERED.get(key, _FALLBACK)


def _timm_config(encoder: VisionTransformer, meta: EncoderMeta) -> dict[str, Any]:
    mean, std = default_stats(encoder.in_chans, meta)
    args = timm_model_args(encoder)
    return {
        "architecture": timm_architecture(encoder),
        "num_classes": 0,
        "num_features": encoder.embed_dim,
        "global_pool": "avg",
        "model_args": args,
        "pretrained_cfg": {
            "tag": "ijepa",
            "custom_load": False,
            "input_size": [encoder.in_chans, *encoder.img_size],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": DEFAULT_CROP_PCT,
            "crop_mode": "center",
            "mean": list(mean),
            "std": list(std),
            "num_classes": 0,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
        "ijepa": meta.to_json(),
    }


def save_timm(encoder: Encoder, path: str | Path, meta: EncoderMeta | None = None) -> Path:
    """Write ``encoder`` as timm weights: a ``.safetensors`` file, or a folder for ``local-dir:``.

    Args:
        encoder: the encoder to export.
        path: ``*.safetensors`` for a single file; anything else is a folder that gets
            ``model.safetensors`` and a timm ``config.json``.
        meta: which encoder and normalisation, stored in the header (and ``config.json``).

    Returns:
        The file or folder written.
    """
    path = Path(path)
    encoder = require_vit(encoder, "timm")
    if meta is None:
        meta = EncoderMeta(model_args=encoder_model_args(encoder))
    extra = {"timm_architecture": timm_architecture(encoder)}
    if path.suffix == ".safetensors":
        save_tensors(encoder.state_dict(), path, meta, extra)
        logger.info("wrote timm weights %s (architecture %s)", path, extra["timm_architecture"])
        return path
    if path.exists() and not path.is_dir():
        raise ConversionError(
            f"timm export: {path} is a file; name it *.safetensors or use a folder"
        )
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(encoder.state_dict(), path / WEIGHTS_NAME, meta, extra)
    (path / "config.json").write_text(json.dumps(_timm_config(encoder, meta), indent=2) + "\n")
    logger.info("wrote a timm model folder %s (timm.create_model('local-dir:%s'))", path, path)
    return path


def _clean(sd: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Drop a classifier head; refuse class tokens, registers and pooled-only norms."""
    bad = [k for k in _UNSUPPORTED if k in sd]
    if bad:
        raise ConversionError(
            f"{what}: has {bad}; only class-token-free ViTs with a per-token final norm "
            "(timm's *_gap family with fc_norm=False) match the I-JEPA encoder"
        )
    dropped = [k for k in _HEAD_KEYS if k in sd]
    if dropped:
        logger.warning("%s: ignoring the classifier head %s", what, dropped)
    return {k: v for k, v in sd.items() if k not in _HEAD_KEYS}


def _read_folder(folder: Path) -> tuple[dict[str, torch.Tensor], EncoderMeta | None, int | None]:
    config: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except ValueError as err:
            raise ConversionError(f"{folder}/config.json: invalid JSON ({err})") from err
    meta = EncoderMeta.from_json(config["ijepa"], str(folder)) if "ijepa" in config else None
    heads = config.get("model_args", {}).get("num_heads")
    for name in (WEIGHTS_NAME, "pytorch_model.bin"):
        weights = folder / name
        if weights.is_file():
            sd = (
                load_tensors(weights) if name.endswith(".safetensors") else load_checkpoint(weights)
            )
            if meta is None and name.endswith(".safetensors"):
                meta = read_meta(weights)
            return sd, meta, heads
    raise ConversionError(f"{folder}: no {WEIGHTS_NAME} or pytorch_model.bin")


def read_timm_state(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], EncoderMeta | None, int | None]:
    """Tensors, our metadata (if any) and the head count (if recorded) of timm weights."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if path.suffix == ".safetensors":
        return load_tensors(path), read_meta(path), None
    return unwrap_state_dict(load_checkpoint(path)), None, None


def unwrap_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """The model state of a timm/PyTorch file that nests it under ``state_dict`` or ``model``."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), Mapping):
            return dict(state[key])
    return dict(state)


def load_timm(path: str | Path, device: str | torch.device = "cpu") -> tuple[Encoder, EncoderMeta]:
    """Read timm ViT weights (file, folder, or a ``.pth`` state dict) into our encoder.

    The architecture comes from our ``ijepa`` metadata when present, else from the shapes (heads
    from a timm ``config.json`` or the size table).
    """
    sd, meta, heads = read_timm_state(path)
    return timm_state_to_encoder(sd, meta, heads, f"{path} [timm]", device)


def timm_state_to_encoder(
    sd: Mapping[str, torch.Tensor],
    meta: EncoderMeta | None,
    heads: int | None,
    what: str,
    device: str | torch.device = "cpu",
) -> tuple[Encoder, EncoderMeta]:
    """Our encoder from a timm ViT state dict (see :func:`load_timm`)."""
    sd = _clean(sd, what)
    if meta is None:
        meta = EncoderMeta(model_args=infer_encoder_args(sd, what, num_heads=heads))
    encoder = encoder_from_state(sd, meta.model_args, what, device)
    return encoder, meta
