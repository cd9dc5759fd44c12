"""Hugging Face transformers ``IJepaModel`` folders: export our encoder, import theirs.

A folder holds ``config.json`` (``model_type: ijepa``) and ``model.safetensors`` in the hub
layout, the one the ``facebook/ijepa_*`` models use and transformers 4.x and 5.x both read (5.x
renames to its internal names when loading and back when saving)::

    patch_embed.proj          <-> embeddings.patch_embeddings.projection
    pos_embed                 <-> embeddings.position_embeddings
    blocks.{i}.norm1          <-> encoder.layer.{i}.layernorm_before
    blocks.{i}.attn.qkv       <-> encoder.layer.{i}.attention.attention.{query,key,value}
    blocks.{i}.attn.proj      <-> encoder.layer.{i}.attention.output.dense
    blocks.{i}.norm2          <-> encoder.layer.{i}.layernorm_after
    blocks.{i}.mlp.fc1 / fc2  <-> encoder.layer.{i}.intermediate.dense / output.dense
    norm                      <-> layernorm

The fused ``qkv`` rows are ``[query; key; value]``. ``IJepaModel(pixel_values).last_hidden_state``
equals our ``encoder(x)``: patch tokens after the final LayerNorm. Reading also accepts the
transformers 5.x internal names (``layers.{i}.attention.q_proj``, ...), an ``ijepa.`` prefix
(``IJepaForImageClassification``), sharded safetensors and ``pytorch_model.bin`` (loaded with
``weights_only=True``); pooler, classifier and mask-token tensors are dropped with a warning.

Writing needs neither torch hub access nor transformers installed. Our :class:`EncoderMeta` goes
into ``config.json`` under the key ``ijepa`` (transformers keeps unknown keys as attributes).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ijepa.checkpoint import load_checkpoint
from ijepa.compat.arch import (
    ConversionError,
    EncoderMeta,
    canonical_args,
    default_stats,
    encoder_from_state,
    encoder_model_args,
    first_block,
    require_vit,
)
from ijepa.compat.safetensors_io import load_tensors, save_tensors
from ijepa.models import Encoder, VisionTransformer

__all__ = [
    "encoder_to_hf_state",
    "hf_config",
    "hf_state_to_encoder",
    "load_hf",
    "save_hf",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_TOP = {
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "pos_embed": "embeddings.position_embeddings",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_QKV = ("query", "key", "value")
# transformers 5.x internal names -> hub names (applied to the part after the layer index)
_V5_TO_HUB = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_DROPPED = re.compile(r"^(pooler\.|classifier\.|embeddings\.mask_token$)")
_HUB_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_V5_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


def encoder_to_hf_state(sd: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Our encoder state dict (official names) in the HF hub layout, ``qkv`` split in three."""
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _TOP.items():
        out[theirs] = sd[ours]
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for ours, theirs in _BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{theirs}.{kind}"] = sd[f"{src}{ours}.{kind}"]
        for kind in ("weight", "bias"):
            for name, part in zip(_QKV, sd[f"{src}attn.qkv.{kind}"].chunk(3, dim=0), strict=True):
                out[f"{dst}attention.attention.{name}.{kind}"] = part.clone()
    return out


def _to_hub_names(sd: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Strip an ``ijepa.`` prefix, rename 5.x internal names, drop head tensors."""
    out: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in sd.items():
        key = key.removeprefix("ijepa.")
        if _DROPPED.match(key):
            dropped.append(key)
            continue
        m = _V5_LAYER.match(key)
        if m:
            rest = m.group(2)
            for new, old in _V5_TO_HUB.items():
                if rest.startswith(new + "."):
                    rest = old + rest[len(new) :]
                    break
            key = f"encoder.layer.{m.group(1)}.{rest}"
        out[key] = value
    if dropped:
        logger.warning("%s: ignoring tensors that are not part of the encoder: %s", what, dropped)
    return out


def hf_state_to_encoder(
    sd: Mapping[str, torch.Tensor], what: str = "HF weights"
) -> dict[str, torch.Tensor]:
    """HF weights (hub or 5.x names) as our encoder state dict, ``query/key/value`` fused.

    Raises:
        ConversionError: naming unknown tensors or layers that lack one of query/key/value.
    """
    hub = _to_hub_names(sd, what)
    inverse_top = {v: k for k, v in _TOP.items()}
    inverse_block = {v: k for k, v in _BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in hub.items():
        if key in inverse_top:
            out[inverse_top[key]] = value
            continue
        m = _HUB_LAYER.match(key)
        if m is None:
            unknown.append(key)
            continue
        layer, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if name.startswith("attention.attention.") and name.rsplit(".", 1)[1] in _QKV:
            qkv.setdefault((layer, kind), {})[name.rsplit(".", 1)[1]] = value
        elif name in inverse_block:
            out[f"blocks.{layer}.{inverse_block[name]}.{kind}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"{what}: unexpected tensors ({len(unknown)}): {sorted(unknown)[:8]}")
    for (layer, kind), parts in sorted(qkv.items()):
        absent = [n for n in _QKV if n not in parts]
        if absent:
            raise ConversionError(f"{what}: layer {layer} lacks attention {absent} {kind}")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in _QKV], dim=0)
    return out


def hf_config(encoder: VisionTransformer, meta: EncoderMeta | None = None) -> dict[str, Any]:
    """``config.json`` contents for an ``IJepaModel`` equal to ``encoder``."""
    first = first_block(encoder)
    img = encoder.img_size
    config: dict[str, Any] = {
        "architectures": ["IJepaModel"],
        "model_type": "ijepa",
        "hidden_size": encoder.embed_dim,
        "num_hidden_layers": encoder.depth,
        "num_attention_heads": encoder.num_heads,
        "intermediate_size": first.mlp.fc1.out_features,
        "hidden_act": "gelu",  # exact (erf) GELU in transformers
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": encoder.init_std,
        "layer_norm_eps": encoder.norm.eps,
        "image_size": img[0] if img[0] == img[1] else list(img),
        "patch_size": encoder.patch_size,
        "num_channels": encoder.in_chans,
        "qkv_bias": first.attn.qkv.bias is not None,
        "dtype": "float32",
    }
    if meta is not None:
        config["ijepa"] = meta.to_json()
    return config


def _preprocessor_config(encoder: VisionTransformer, meta: EncoderMeta | None) -> dict[str, Any]:
    mean, std = default_stats(encoder.in_chans, meta)
    h, w = encoder.img_size
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": h, "width": w},
        "resample": 3,  # bicubic
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }


def save_hf(encoder: Encoder, folder: str | Path, meta: EncoderMeta | None = None) -> Path:
    """Write ``encoder`` as a transformers ``IJepaModel`` folder.

    Args:
        encoder: the encoder to export (any device/dtype; saved as it is, on the CPU).
        folder: created if needed; gets ``config.json``, ``model.safetensors`` and
            ``preprocessor_config.json``.
        meta: which encoder it is and its normalisation, kept in ``config.json`` under ``ijepa``.

    Returns:
        The folder, for ``IJepaModel.from_pretrained(folder)``.
    """
    folder = Path(folder)
    encoder = require_vit(encoder, "transformers")
    if folder.exists() and not folder.is_dir():
        raise ConversionError(f"HF export goes to a folder, but {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    if meta is None:
        meta = EncoderMeta(model_args=encoder_model_args(encoder))
    state = encoder_to_hf_state(encoder.state_dict(), encoder.depth)
    save_tensors(state, folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(hf_config(encoder, meta), indent=2) + "\n")
    preprocessor = _preprocessor_config(encoder, meta)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    logger.info("wrote a transformers IJepaModel folder: %s", folder)
    return folder


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in (WEIGHTS_NAME, "model.safetensors.index.json"):
        if (folder / name).is_file():
            return load_tensors(folder / name)
    if (folder / "pytorch_model.bin").is_file():
        return load_checkpoint(folder / "pytorch_model.bin")
    raise ConversionError(f"{folder}: no model.safetensors, shard index or pytorch_model.bin")


def _args_from_config(config: Mapping[str, Any], what: str) -> dict[str, Any]:
    if config.get("model_type") != "ijepa":
        raise ConversionError(
            f"{what}: model_type is {config.get('model_type')!r}, not 'ijepa' (only class-token-free "
            "I-JEPA ViTs convert to our encoder)"
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"{what}: hidden_act {config['hidden_act']!r} is not exact GELU")
    if not config.get("qkv_bias", True):
        raise ConversionError(f"{what}: qkv_bias=false is not supported")
    eps = float(config.get("layer_norm_eps", 1e-12))
    if eps != 1e-6:
        logger.warning(
            "%s: layer_norm_eps is %g; our encoder uses 1e-6, features may differ", what, eps
        )
    size = config.get("image_size", 224)
    patch = config.get("patch_size", 16)
    if not isinstance(patch, int):
        if len(set(patch)) != 1:
            raise ConversionError(f"{what}: non-square patch_size {patch} is not supported")
        patch = int(patch[0])
    img = size if isinstance(size, int) else (tuple(size) if size[0] != size[1] else int(size[0]))
    return canonical_args(
        embed_dim=int(config["hidden_size"]),
        depth=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        mlp_hidden=int(config["intermediate_size"]),
        img_size=img,
        patch_size=patch,
        in_chans=int(config.get("num_channels", 3)),
        what=what,
    )


def load_hf(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Encoder, EncoderMeta]:
    """Read a transformers ``IJepaModel`` folder (ours or the hub's) into our encoder.

    Returns:
        The encoder (train mode, as built) and its :class:`EncoderMeta`; ``which`` is ``None``
        for hub folders, which the transformers conversion made from the context encoder.
    """
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise ConversionError(f"{folder}: no {CONFIG_NAME}, so not a transformers model folder")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        raise ConversionError(f"{config_path}: invalid JSON ({err})") from err
    what = str(folder)
    args = _args_from_config(config, what)
    meta = EncoderMeta(model_args=args)
    if isinstance(config.get("ijepa"), Mapping):
        meta = EncoderMeta.from_json(config["ijepa"], what)
        meta.model_args = args  # config.json is what transformers reads: it wins
    sd = hf_state_to_encoder(_read_weights(folder), what)
    encoder = encoder_from_state(sd, args, f"{what} [HF IJepaModel]", device)
    return encoder, meta
