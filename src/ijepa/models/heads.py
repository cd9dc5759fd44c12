"""Pixel targets for the paper's "predict pixels instead of representations" ablation.

With ``target="pixels"`` the I-JEPA predictor is unchanged, and a linear ``pixel_head`` on its
output maps each predicted token (width ``D``) to the pixels of its patch (``p * p * C``). The
targets are the image's patches at the target positions, each normalised by its own mean and
standard deviation (the per-patch normalisation MAE found best for pixel targets), so the loss
compares the same kind of quantity whatever the image statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ijepa.models.gather import MaskArg, apply_masks, stack_masks
from ijepa.models.layers import init_official_
from ijepa.models.predictor import VisionTransformerPredictor

__all__ = ["PixelPredictor", "patchify", "pixel_targets"]

#: Epsilon of the per-patch variance in :func:`pixel_targets`.
PATCH_NORM_EPS = 1e-6


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Non-overlapping patches in row-major grid order.

    Args:
        images: ``(B, C, H, W)``, ``H`` and ``W`` divisible by ``patch_size``.
        patch_size: patch side ``p``.

    Returns:
        ``(B, (H/p) * (W/p), p * p * C)``, each patch flattened as ``(p, p, C)``.
    """
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def pixel_targets(
    images: torch.Tensor, patch_size: int, masks_pred: MaskArg, nenc: int = 1
) -> torch.Tensor:
    """Per-patch normalised pixels of the target blocks, in the predictor's batch order.

    Args:
        images: ``(B, C, H, W)``.
        patch_size: patch side ``p``.
        masks_pred: target patch indices ``(M, B, Kt)`` (or ``(B, Kt)`` / a list).
        nenc: context masks per image; targets are repeated to ``(M * nenc * B)`` rows.

    Returns:
        ``(M * nenc * B, Kt, p * p * C)`` float32, without gradients: each patch minus its mean,
        over its standard deviation.
    """
    with torch.no_grad():
        patches = patchify(images.float(), patch_size)  # (B, N, P)
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True, unbiased=False)
        patches = (patches - mean) / (var + PATCH_NORM_EPS).sqrt()
        idx = stack_masks(masks_pred)
        t = apply_masks(patches, idx)  # (M * B, Kt, P)
        if nenc > 1:
            m, b = idx.shape[0], idx.shape[1]
            t = t.view(m, 1, b, *t.shape[1:]).expand(m, nenc, b, *t.shape[1:])
            t = t.reshape(m * nenc * b, *t.shape[3:])
    return t


class PixelPredictor(VisionTransformerPredictor):
    """The I-JEPA predictor followed by a linear head to patch pixels.

    Args:
        patch_size: patch side ``p`` of the encoder.
        in_chans: image channels ``C``.
        **kwargs: :class:`~ijepa.models.predictor.VisionTransformerPredictor` arguments.

    ``forward`` takes the predictor's arguments and returns ``(M * nenc * B, Kt, p * p * C)``.
    The state dict is the predictor's plus ``pixel_head.{weight,bias}``.
    """

    def __init__(self, patch_size: int, in_chans: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.pixel_head = nn.Linear(self.embed_dim, patch_size * patch_size * in_chans)
        init_official_(self.pixel_head, self.init_std)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Predicted pixels of every target patch (see the class docstring)."""
        return self.pixel_head(super().forward(*args, **kwargs))
