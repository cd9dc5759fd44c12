"""Architecture facts recovered from weights, and encoders built from them.

Released I-JEPA files carry only tensors, so the architecture is read off their shapes: the width
``D`` from ``pos_embed``, the patch size and channels from the patch-embedding kernel, the depth
from the number of blocks, the image size from the length of ``pos_embed`` times the patch size,
and the MLP width from ``mlp.fc1``. The number of heads cannot be seen in any shape; it comes from
the size table by width (every released model has 16), else from a 64-wide head, with a warning.

The result is our ``model_args`` dict (see :func:`ijepa.train.build.model_args_from_config`), so
the networks are built by :mod:`ijepa.train.build`. Builds go through the ``meta`` device: a
shape check costs no memory, and a load allocates each tensor once without a random init.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ijepa.checkpoint import CheckpointError, load_module_state, strip_prefix
from ijepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ijepa.models import (
    VIT_SIZES,
    Block,
    Encoder,
    EnergyTransformer,
    JEPAModels,
    VisionTransformer,
    build_encoder,
    build_models,
    get_2d_sincos_pos_embed,
)

__all__ = [
    "ConversionError",
    "EncoderMeta",
    "build_empty_encoder",
    "canonical_args",
    "check_models",
    "encoder_from_state",
    "encoder_model_args",
    "first_block",
    "heads_for",
    "infer_encoder_args",
    "infer_model_args",
    "meta_encoder",
    "meta_models",
    "mlp_hidden",
    "model_args_of",
    "pos_embed_is_sincos",
]

logger = logging.getLogger(__name__)

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")
_PRED_BLOCK_RE = re.compile(r"^predictor_blocks\.(\d+)\.")


class ConversionError(CheckpointError):
    """Weights cannot be read or written in the requested format; the message says why."""


@dataclass
class EncoderMeta:
    """What travels with an encoder's weights besides the tensors.

    Attributes:
        model_args: architecture, in the schema of ``ijepa.train.build.model_args_from_config``.
        which: ``"target"`` (EMA) or ``"context"`` encoder, or ``None`` when the file does not say.
        mean: per-channel normalisation mean in ``[0, 1]`` units, if the file records it.
        std: per-channel normalisation std, if the file records it.
    """

    model_args: dict[str, Any]
    which: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in safetensors metadata and in exported ``config.json``)."""
        out: dict[str, Any] = {"model_args": dict(self.model_args), "encoder": self.which}
        if self.mean is not None and self.std is not None:
            out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], what: str) -> EncoderMeta:
        """Inverse of :meth:`to_json`; ``what`` names the file in errors."""
        args = data.get("model_args")
        if not isinstance(args, Mapping):
            raise ConversionError(f"{what}: ijepa metadata has no model_args")
        model_args = dict(args)
        if isinstance(model_args.get("img_size"), list):
            model_args["img_size"] = tuple(model_args["img_size"])
        mean, std = data.get("mean"), data.get("std")
        return cls(
            model_args=model_args,
            which=data.get("encoder"),
            mean=tuple(float(v) for v in mean) if mean is not None else None,
            std=tuple(float(v) for v in std) if std is not None else None,
        )


def default_stats(
    in_chans: int, meta: EncoderMeta | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean/std: recorded ones, else ImageNet (3 channels) or 0.5/0.5."""
    if meta is not None and meta.mean is not None and meta.std is not None:
        if len(meta.mean) == in_chans and len(meta.std) == in_chans:
            return tuple(meta.mean), tuple(meta.std)
        logger.warning("recorded mean/std do not have %d channels; using defaults", in_chans)
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * in_chans, (0.5,) * in_chans


def _count_blocks(keys: list[str], pattern: re.Pattern[str], what: str) -> int:
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    if indices and indices != set(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - indices)
        raise ConversionError(f"{what}: block indices are not contiguous, missing {missing}")
    return len(indices)


def _shape(sd: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConversionError(f"{what}: no '{key}' tensor, so this is not an I-JEPA ViT state")
    return tuple(sd[key].shape)


def _size_for(embed_dim: int, mlp_hidden: int) -> str | None:
    """The named size whose width is ``embed_dim`` and whose MLP ratio gives ``mlp_hidden``."""
    for name, spec in VIT_SIZES.items():
        if spec["embed_dim"] == embed_dim and int(embed_dim * spec.get("mlp_ratio", 4.0)) == (
            mlp_hidden
        ):
            return name
    return None


def _size_with_ratio(embed_dim: int, mlp_hidden: int) -> str | None:
    """Any named size whose MLP ratio maps ``embed_dim`` to ``mlp_hidden`` (for odd widths)."""
    for name, spec in VIT_SIZES.items():
        if int(embed_dim * spec.get("mlp_ratio", 4.0)) == mlp_hidden:
            return name
    return None


def heads_for(embed_dim: int) -> int:
    """Heads of the named size of width ``embed_dim``, else ``embed_dim // 64`` (with a warning)."""
    for spec in VIT_SIZES.values():
        if spec["embed_dim"] == embed_dim:
            return int(spec["num_heads"])
    if embed_dim % 64 == 0:
        logger.warning(
            "width %d matches no named ViT size; assuming 64-wide heads (%d heads)",
            embed_dim,
            embed_dim // 64,
        )
        return embed_dim // 64
    raise ConversionError(
        f"cannot infer the number of attention heads for width {embed_dim}: it matches no named "
        f"ViT size ({', '.join(str(s['embed_dim']) for s in VIT_SIZES.values())}) and is not a "
        "multiple of 64. Convert from a file that records model_args (ours, or an HF folder)."
    )


def infer_encoder_args(
    state_dict: Mapping[str, Any], what: str = "encoder", num_heads: int | None = None
) -> dict[str, Any]:
    """Encoder architecture from the shapes of a ViT state dict (``module.`` prefixes allowed).

    Args:
        state_dict: encoder tensors with official/our names (``pos_embed``, ``blocks.{i}...``).
        what: names the source in error messages.
        num_heads: the heads when known (they are not visible in any shape).

    Returns:
        ``model_args`` with ``pred_depth`` and ``pred_emb_dim`` set to ``None``.
    """
    sd = strip_prefix(state_dict)
    out_ch, in_chans, kh, kw = _shape(sd, "patch_embed.proj.weight", what)
    if kh != kw:
        raise ConversionError(f"{what}: non-square patches {kh}x{kw} are not supported")
    _, num_patches, embed_dim = _shape(sd, "pos_embed", what)
    if out_ch != embed_dim:
        raise ConversionError(
            f"{what}: patch embedding width {out_ch} != pos_embed width {embed_dim}"
        )
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ConversionError(
            f"{what}: pos_embed has {num_patches} positions, not a square grid; the image size "
            "cannot be inferred (convert from a file that records model_args)"
        )
    depth = _count_blocks(list(sd), _BLOCK_RE, what)
    if depth == 0:
        raise ConversionError(f"{what}: no transformer blocks ('blocks.0.*') found")
    if "blocks.0.attn.qkv.bias" not in sd:
        raise ConversionError(f"{what}: qkv projections without bias are not supported")
    mlp_hidden = _shape(sd, "blocks.0.mlp.fc1.weight", what)[0]
    heads = num_heads if num_heads is not None else heads_for(embed_dim)
    return canonical_args(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        mlp_hidden=mlp_hidden,
        img_size=side * kh,
        patch_size=kh,
        in_chans=in_chans,
        what=what,
    )


def canonical_args(
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_hidden: int,
    img_size: int | tuple[int, int],
    patch_size: int,
    in_chans: int,
    what: str,
) -> dict[str, Any]:
    """``model_args`` naming the matching size, with overrides only where it differs from it.

    A released ViT-H/14 thus gives ``model_name="vit_huge"`` and ``enc_depth=None``: the same
    dict a config with ``meta.model_name: vit_huge`` produces, so our trainer can resume from it.
    """
    name = _size_for(embed_dim, mlp_hidden) or _size_with_ratio(embed_dim, mlp_hidden)
    if name is None:
        raise ConversionError(
            f"{what}: MLP width {mlp_hidden} for embed dim {embed_dim} matches no supported MLP "
            "ratio (4, or 48/11 for ViT-g)"
        )
    spec = VIT_SIZES[name]
    return {
        "model_name": f"vit_{name}",
        "img_size": img_size,
        "patch_size": patch_size,
        "in_chans": in_chans,
        "pred_depth": None,
        "pred_emb_dim": None,
        "enc_depth": None if depth == spec["depth"] else depth,
        "enc_emb_dim": None if embed_dim == spec["embed_dim"] else embed_dim,
        "enc_num_heads": None if num_heads == spec["num_heads"] else num_heads,
    }


def infer_model_args(state: Mapping[str, Any], what: str = "checkpoint") -> dict[str, Any]:
    """Full ``model_args`` (encoder and predictor) of a training checkpoint from its shapes."""
    source = state.get("target_encoder") or state.get("encoder")
    if not isinstance(source, Mapping):
        raise ConversionError(f"{what}: no 'encoder' or 'target_encoder' state dict")
    args = infer_encoder_args(source, f"{what} [encoder]")
    pred = state.get("predictor")
    if isinstance(pred, Mapping):
        psd = strip_prefix(pred)
        pred_dim, _ = _shape(psd, "predictor_embed.weight", f"{what} [predictor]")
        args["pred_emb_dim"] = pred_dim
        args["pred_depth"] = _count_blocks(list(psd), _PRED_BLOCK_RE, f"{what} [predictor]")
        hidden = _shape(psd, "predictor_blocks.0.mlp.fc1.weight", f"{what} [predictor]")[0]
        if hidden != 4 * pred_dim:
            raise ConversionError(f"{what}: predictor MLP width {hidden} is not 4 x {pred_dim}")
    return args


def model_args_of(state: Mapping[str, Any], what: str = "checkpoint") -> dict[str, Any]:
    """The ``model_args`` a checkpoint records, else those inferred from its shapes."""
    args = state.get("model_args")
    if isinstance(args, Mapping):
        return dict(args)
    args = infer_model_args(state, what)
    logger.info("%s records no model_args; inferred from tensor shapes: %s", what, args)
    return args


def meta_models(model_args: Mapping[str, Any]) -> JEPAModels:
    """The three networks on the ``meta`` device: shapes and names only, no memory."""
    with torch.device("meta"):
        return build_models(dict(model_args))


def meta_encoder(model_args: Mapping[str, Any]) -> Encoder:
    """An encoder on the ``meta`` device."""
    with torch.device("meta"):
        return build_encoder(dict(model_args))


def check_models(state: Mapping[str, Any], model_args: Mapping[str, Any], what: str) -> None:
    """Check every network state in ``state`` against ``model_args`` (strict, no memory used).

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped keys.
    """
    models = meta_models(model_args)
    with warnings.catch_warnings():
        # loading real tensors into meta parameters is the point here: a shape-only check
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        for key in ("encoder", "predictor", "target_encoder"):
            if isinstance(state.get(key), Mapping):
                load_module_state(getattr(models, key), state[key], f"{what} [{key}]")


def build_empty_encoder(
    model_args: Mapping[str, Any], device: str | torch.device = "cpu"
) -> Encoder:
    """An encoder of the given architecture with uninitialised weights (to be loaded)."""
    encoder = meta_encoder(model_args)
    return encoder.to_empty(device=device)


def encoder_from_state(
    state_dict: Mapping[str, Any],
    model_args: Mapping[str, Any],
    what: str,
    device: str | torch.device = "cpu",
) -> Encoder:
    """Build an encoder for ``model_args`` and load ``state_dict`` into it strictly."""
    encoder = build_empty_encoder(model_args, device)
    load_module_state(encoder, state_dict, what)
    if not pos_embed_is_sincos(encoder):
        logger.warning(
            "%s: pos_embed is not the fixed sin-cos table (it was trained or altered); it is kept "
            "as stored, but resizing to another image size replaces it by the sin-cos table",
            what,
        )
    return encoder


def first_block(encoder: VisionTransformer) -> Block:
    """The first block of ``encoder`` (its MLP width and qkv bias describe all blocks)."""
    block = encoder.blocks[0]
    if not isinstance(block, Block):
        raise ConversionError(f"encoder blocks are {type(block).__name__}, not ijepa Blocks")
    return block


def mlp_hidden(encoder: VisionTransformer) -> int:
    """Hidden width of the encoder's MLPs."""
    return first_block(encoder).mlp.fc1.out_features


def require_vit(encoder: Encoder, target: str) -> VisionTransformer:
    """``encoder`` if it is a ViT as the paper has it; a clear error for formats that only know
    those (an energy backbone, or a ViT that standardises each input image itself)."""
    if not isinstance(encoder, VisionTransformer):
        raise ConversionError(
            f"{target} has no {type(encoder).__name__} architecture; export an energy-backbone "
            "encoder with ijepa.compat.save_encoder (.safetensors) or keep the training checkpoint"
        )
    if encoder.input_norm != "none":
        raise ConversionError(
            f"{target}'s ViT has no per-image input standardisation (this encoder was trained "
            f"with meta.input_norm={encoder.input_norm}), so its features there would differ; "
            "export it with ijepa.compat.save_encoder (.safetensors) or keep the training checkpoint"
        )
    return encoder


def encoder_model_args(encoder: Encoder) -> dict[str, Any]:
    """``model_args`` describing an existing encoder module."""
    if isinstance(encoder, EnergyTransformer):
        arch = encoder.architecture()
        return {
            "model_name": "vit_tiny",  # the size table only names the width and heads, both given
            "img_size": arch["img_size"],
            "patch_size": arch["patch_size"],
            "in_chans": arch["in_chans"],
            "pred_depth": None,
            "pred_emb_dim": None,
            "enc_depth": None,
            "enc_emb_dim": arch["embed_dim"],
            "enc_num_heads": arch["num_heads"],
            "backbone": "energy",
            "energy_steps": arch["steps"],
            "energy_step_size": arch["step_size"],
        }
    img = encoder.img_size
    args = canonical_args(
        embed_dim=encoder.embed_dim,
        depth=encoder.depth,
        num_heads=encoder.num_heads,
        mlp_hidden=mlp_hidden(encoder),
        img_size=img[0] if img[0] == img[1] else img,
        patch_size=encoder.patch_size,
        in_chans=encoder.in_chans,
        what="encoder",
    )
    if encoder.input_norm != "none":
        args["input_norm"] = encoder.input_norm
    return args


@torch.no_grad()
def pos_embed_is_sincos(encoder: Encoder, atol: float = 1e-5) -> bool:
    """Whether the stored ``pos_embed`` equals the fixed sin-cos table of its grid."""
    table = get_2d_sincos_pos_embed(encoder.embed_dim, encoder.grid_size)
    stored = encoder.pos_embed.detach().to("cpu", torch.float32)[0]
    return bool(torch.allclose(stored, table, atol=atol, rtol=0.0))
