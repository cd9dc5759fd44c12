"""One entry point for every format: :func:`load_encoder` returns a ready encoder and its transform.

Formats (detected from the path, see :func:`detect_format`):

* ``ours``: our training checkpoint (``.pth.tar``, with ``format_version``), or our encoder
  ``.safetensors`` (official names plus an ``ijepa`` header);
* ``official``: an official ``.pth.tar`` (``module.``-prefixed ``encoder``/``target_encoder``);
* ``hf``: a transformers ``IJepaModel`` folder (``config.json`` with ``model_type: ijepa``);
* ``timm``: a timm ``.safetensors`` file or folder, or a ``.pth`` state dict of a ``*_gap`` ViT.

Every pickle-based file is read with ``torch.load(weights_only=True)``
(:func:`ijepa.checkpoint.load_checkpoint`): one that needs arbitrary unpickling is refused.
Every load is strict, or names the missing, unexpected or mis-shaped keys.

Normalisation of the returned transform: the mean/std the file records (our checkpoints'
``normalization`` entry or ``config.data.mean/std``, our exports' ``ijepa`` metadata), else the
ImageNet statistics for 3-channel models and ``0.5/0.5`` for 1-channel ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
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
    model_args_of,
)
from ijepa.compat.official import select_encoder
from ijepa.compat.safetensors_io import read_header, read_keys, save_tensors
from ijepa.compat.timm import load_timm, timm_state_to_encoder, unwrap_state_dict
from ijepa.compat.transformers import load_hf
from ijepa.data.transforms import DEFAULT_CROP_PCT, EvalTransform, eval_transform
from ijepa.models import Encoder

__all__ = [
    "FORMATS",
    "build_transform",
    "detect_format",
    "load_encoder",
    "read_encoder",
    "save_encoder",
]

logger = logging.getLogger(__name__)

FORMATS = ("ours", "official", "hf", "timm")


def _stats_from_checkpoint(state: Mapping[str, Any]) -> tuple[Any, Any]:
    norm = state.get("normalization")
    if isinstance(norm, Mapping) and "mean" in norm and "std" in norm:
        return norm["mean"], norm["std"]
    config = state.get("config")
    data = config.get("data") if isinstance(config, Mapping) else None
    if isinstance(data, Mapping) and data.get("mean") is not None and data.get("std") is not None:
        return data["mean"], data["std"]
    return None, None


def _classify_state(state: Mapping[str, Any], path: Path) -> str:
    """Format of a loaded ``.pth``/``.pth.tar`` dict."""
    if "format_version" in state:
        return "ours"
    if any(isinstance(state.get(k), Mapping) for k in ("encoder", "target_encoder")):
        return "official"
    if any(str(k).startswith("blocks.") for k in unwrap_state_dict(state)):
        return "timm"
    raise ConversionError(
        f"{path}: a checkpoint with keys {sorted(map(str, state))[:8]} matches no known format"
    )


def _detect_path(path: Path) -> str | None:
    """Format of a folder or safetensors file; ``None`` for pickle files (to be loaded first)."""
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ConversionError(f"{path}: a folder without config.json is no known model format")
        try:
            config = json.loads(config_path.read_text())
        except ValueError as err:
            raise ConversionError(f"{config_path}: invalid JSON ({err})") from err
        if config.get("model_type") is not None:
            return "hf"
        if "architecture" in config:
            return "timm"
        raise ConversionError(f"{config_path}: neither a transformers nor a timm config")
    if not path.is_file():
        raise ConversionError(f"not found: {path}")
    if path.suffix != ".safetensors":
        return None
    header = read_header(path)
    if "timm_architecture" in header:
        return "timm"
    if "ijepa" in header:
        return "ours"
    if any(k.startswith(("embeddings.", "encoder.layer.", "layers.")) for k in read_keys(path)):
        raise ConversionError(
            f"{path}: transformers weights without their folder; pass the folder that holds "
            "config.json"
        )
    return "timm"


def detect_format(path: str | Path) -> str:
    """``"ours"``, ``"official"``, ``"hf"`` or ``"timm"`` for a file or folder.

    Raises:
        ConversionError: the path does not exist or matches no known format.
    """
    path = Path(path)
    fmt = _detect_path(path)
    return fmt if fmt is not None else _classify_state(load_checkpoint(path), path)


def _from_training_checkpoint(
    state: Mapping[str, Any], what: str, which: str, device: str | torch.device
) -> tuple[Encoder, EncoderMeta]:
    model_args = model_args_of(state, what)
    sd = select_encoder(state, which, what)
    encoder = encoder_from_state(sd, model_args, f"{what} [{which} encoder]", device)
    mean, std = _stats_from_checkpoint(state)
    meta = EncoderMeta(
        model_args=model_args,
        which=which,
        mean=tuple(float(v) for v in mean) if mean is not None else None,
        std=tuple(float(v) for v in std) if std is not None else None,
    )
    return encoder, meta


def _check_fmt(path: Path, wanted: str | None, detected: str) -> None:
    if wanted is None or wanted == detected:
        return
    if wanted not in FORMATS:
        raise ConversionError(f"unknown format {wanted!r}; choose one of {', '.join(FORMATS)}")
    # our encoder .safetensors and timm's share names: either reader takes either file
    if {wanted, detected} <= {"ours", "timm"} and path.suffix == ".safetensors":
        return
    raise ConversionError(f"{path} looks like the {detected!r} format, not {wanted!r}")


def read_encoder(
    path: str | Path,
    *,
    which: str = "target",
    fmt: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Encoder, EncoderMeta]:
    """Load an encoder from any supported format, as stored (no resize, train mode).

    Args:
        path: file or folder.
        which: ``"target"`` (default) or ``"context"`` for training checkpoints; files holding a
            single encoder ignore it (with a warning when they record the other one).
        fmt: one of :data:`FORMATS`, or ``None`` to detect it.
        device: where the weights go.

    Returns:
        ``(encoder, meta)``.
    """
    path = Path(path)
    if which not in ("target", "context"):
        raise ConversionError(f"which must be 'target' or 'context', got {which!r}")
    from ijepa.sharded_checkpoint import is_sharded

    if is_sharded(path):  # the checkpoint folder of a meta.parallel=fsdp run
        from ijepa.train.sharded import sharded_to_state

        return _from_training_checkpoint(sharded_to_state(path), str(path), which, device)
    detected = _detect_path(path)
    if detected is None:  # a pickle file: load it once, safely
        state = load_checkpoint(path)
        detected = _classify_state(state, path)
        _check_fmt(path, fmt, detected)
        if detected in ("ours", "official"):
            return _from_training_checkpoint(state, str(path), which, device)
        encoder, meta = timm_state_to_encoder(
            unwrap_state_dict(state), None, None, f"{path} [timm]", device
        )
    else:
        _check_fmt(path, fmt, detected)
        encoder, meta = load_hf(path, device) if detected == "hf" else load_timm(path, device)
    if meta.which is None:
        logger.info(
            "%s holds a single encoder and does not say which; the transformers and timm "
            "conversions of the released models hold the context encoder",
            path,
        )
    elif meta.which != which:
        logger.warning("%s holds the %s encoder only (you asked for %s)", path, meta.which, which)
    else:
        logger.info("%s: the %s encoder", path, which)
    return encoder, meta


def save_encoder(encoder: Encoder, path: str | Path, meta: EncoderMeta | None = None) -> Path:
    """Write ``encoder`` as our ``.safetensors`` (official names, architecture in the header).

    The same file loads in timm (the names are timm's); :func:`load_encoder` reads it back.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConversionError(f"an encoder-only export is a .safetensors file, got {path}")
    if meta is None:
        meta = EncoderMeta(model_args=encoder_model_args(encoder))
    if getattr(encoder, "input_norm", "none") != "none":
        logger.warning(
            "%s: this encoder standardises each input image itself (input_norm=%s); "
            "load_encoder restores that, a plain timm ViT loading these weights does not",
            path, encoder.input_norm,
        )  # fmt: skip
    save_tensors(encoder.state_dict(), path, meta)
    logger.info("wrote encoder weights %s", path)
    return path


def build_transform(
    img_size: int | tuple[int, int],
    in_chans: int = 3,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> EvalTransform:
    """The evaluation preprocessing of an encoder: PIL/uint8 image -> float ``(C, H, W)``.

    :func:`ijepa.data.eval_transform` (the package's one evaluation transform): converts to
    ``in_chans`` channels (RGB or grayscale), resizes by ``crop_pct`` (bicubic, antialiased),
    centre-crops ``img_size`` and normalises with ``mean``/``std`` (defaults:
    :func:`~ijepa.compat.arch.default_stats`).
    """
    if mean is None or std is None:
        mean, std = default_stats(in_chans)
    return eval_transform(img_size, mean=mean, std=std, crop_pct=crop_pct, in_chans=in_chans)


def load_encoder(
    path: str | Path,
    *,
    which: str = "target",
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Encoder, Callable[[Any], torch.Tensor]]:
    """A ready I-JEPA encoder (eval mode) from any supported file, and its preprocessing.

    Args:
        path: our or an official ``.pth.tar``, a transformers folder, a timm or our
            ``.safetensors`` file or folder.
        which: ``"target"`` (EMA encoder, default, as evaluated in the paper) or ``"context"``;
            only training checkpoints hold both.
        img_size: image side (or ``(H, W)``) to run at; the sin-cos positions are rebuilt for it.
            ``None`` keeps the trained size.
        device: device of the returned encoder.

    Returns:
        ``(encoder, transform)``: ``encoder(x (B, C, H, W)) -> (B, N, D)`` patch tokens after the
        final norm; ``transform(image) -> (C, H, W)`` float tensor.
    """
    encoder, meta = read_encoder(path, which=which, device=device)
    if img_size is not None and tuple(encoder.img_size) != (
        (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    ):
        encoder.resize_pos_embed(img_size)
        logger.info("positional table rebuilt for %s px", img_size)
    encoder.eval()
    mean, std = default_stats(encoder.in_chans, meta)
    transform = build_transform(encoder.img_size, encoder.in_chans, mean, std)
    return encoder, transform
