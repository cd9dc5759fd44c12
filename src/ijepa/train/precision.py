"""Choices made by measurement at the start of training, for the run's own shapes.

``meta.use_bfloat16: auto``: the transformer blocks of one training step (target encoder forward
on the whole image, context encoder and predictor forward+backward) are timed in both dtypes by
:func:`ijepa.hardware.choose_bf16`. ``attn_impl: auto`` under ``meta.compile``: one eager step
on synthetic data lets every attention module measure and record its kernel before tracing
(``torch.compile`` cannot time kernels while it traces).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ijepa.hardware import BlockShape, DtypeChoice, choose_bf16
from ijepa.models import Block

__all__ = ["resolve_bf16", "step_block_shapes", "warm_up_kernels"]


def _dims(module: nn.Module, width: int, depth: int, heads: int) -> dict[str, Any]:
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    hidden = blocks[0].mlp.fc1.out_features if blocks else 4 * width
    return {"dim": width, "heads": heads, "count": depth, "mlp_ratio": hidden / width}


def step_block_shapes(
    models: Any, batch_size: int, masks_enc: torch.Tensor, masks_pred: torch.Tensor
) -> tuple[BlockShape, ...]:
    """The transformer-block shapes of one training step.

    Args:
        models: the unwrapped :class:`JEPAModels` (encoder, predictor, target encoder).
        batch_size: images per step on this process.
        masks_enc: one step's context masks ``(nenc, B', Kc)`` (only the sizes are used).
        masks_pred: one step's target masks ``(M, B', Kt)``.
    """
    enc, pred = models.encoder, models.predictor
    nenc, kc = masks_enc.shape[0], masks_enc.shape[-1]
    m, kt = masks_pred.shape[0], masks_pred.shape[-1]
    # ``depth``: a ViT's blocks, or the energy backbone's descent steps (timed as ViT blocks of
    # its width: a proxy, both are attention plus width-sized matrix products)
    e = _dims(enc, enc.embed_dim, enc.depth, enc.num_heads)
    p = _dims(pred, pred.predictor_embed_dim, len(pred.predictor_blocks), pred.num_heads)
    if getattr(pred, "shared_context", False):  # context once, then the M blocks' tokens
        pred_shape = BlockShape(tokens=kc + m * kt, batch=nenc * batch_size, **p)
    else:  # the context repeated for each of the M blocks
        pred_shape = BlockShape(tokens=kc + kt, batch=m * nenc * batch_size, **p)
    return (
        BlockShape(tokens=enc.num_patches, batch=batch_size, backward=False, **e),
        BlockShape(tokens=kc, batch=nenc * batch_size, **e),
        pred_shape,
    )


def resolve_bf16(
    setting: bool | str,
    models: Any,
    *,
    batch_size: int,
    masks_enc: torch.Tensor,
    masks_pred: torch.Tensor,
    device: str | torch.device = "cpu",
) -> DtypeChoice:
    """``meta.use_bfloat16`` as a decision: a boolean as set, ``"auto"`` by measurement."""
    if isinstance(setting, bool):
        return DtypeChoice(setting, 0.0, 0.0, "set in the config")
    if setting != "auto":
        raise ValueError(f"use_bfloat16 must be true, false or 'auto', got {setting!r}")
    shapes = step_block_shapes(models, batch_size, masks_enc, masks_pred)
    return choose_bf16(shapes, device)


def warm_up_kernels(
    models: Any,
    *,
    images_shape: tuple[int, ...],
    masks_enc: torch.Tensor,
    masks_pred: torch.Tensor,
    bf16: bool,
) -> None:
    """One eager forward+backward on random images, so that ``attn_impl="auto"`` measures and
    records its kernels; gradients are dropped and the RNG states restored afterwards.

    Args:
        models: the unwrapped networks (on their device).
        images_shape: ``(B, C, H, W)`` of a step's images.
        masks_enc: context masks of one step ``(nenc, B, Kc)`` (any valid indices).
        masks_pred: target masks of one step ``(M, B, Kt)``.
        bf16: whether the step runs under bf16 autocast.
    """
    from ijepa.train.step import forward_loss  # step imports models; keep this module light

    device = next(models.encoder.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        images = torch.randn(images_shape, device=device)
        out = forward_loss(models, images, masks_enc.to(device), masks_pred.to(device), bf16=bf16)
        out.loss.backward()
    for module in (models.encoder, models.predictor):
        module.zero_grad(set_to_none=True)
