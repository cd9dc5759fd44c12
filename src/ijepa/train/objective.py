"""What the predictor is trained to predict, and the loss over padded masks (the variants).

``Objective`` holds the two switches of the prediction target (docs/variants.md):

* ``target="latent"`` with ``teacher="ema"``: the paper. The target (EMA) encoder sees the whole
  image without gradients; its output is layer-normed without affine parameters and the
  target-block tokens are gathered.
* ``target="latent"`` with ``teacher="none"``: LeJEPA's EMA-free form. The *context* encoder sees
  the whole image, **with** gradients (LeJEPA uses no stop-gradient); same normalisation and
  gathering. The step copies the encoder into the target encoder afterwards (momentum 0).
* ``target="pixels"``: the per-patch normalised pixels of the target blocks
  (:func:`ijepa.models.heads.pixel_targets`); no target-encoder pass.

Targets come in the predictor's batch order ``(target block, context mask, image)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ijepa.models.gather import apply_masks
from ijepa.models.heads import pixel_targets

__all__ = ["TARGETS", "TEACHERS", "Objective", "expand_for_contexts"]

TARGETS = ("latent", "pixels")
TEACHERS = ("ema", "none")


@dataclass(frozen=True)
class Objective:
    """The prediction target of a run.

    Attributes:
        target: ``"latent"`` or ``"pixels"``.
        teacher: ``"ema"`` or ``"none"`` (latent targets from the context encoder itself).
        patch_size: patch side, for pixel targets.
    """

    target: str = "latent"
    teacher: str = "ema"
    patch_size: int = 16

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {self.teacher!r}")

    @property
    def uses_ema(self) -> bool:
        """Whether the target encoder is an EMA of the context encoder (else a copy of it)."""
        return self.teacher == "ema"

    def targets(
        self,
        encoder: nn.Module,
        target_encoder: nn.Module,
        images: torch.Tensor,
        masks_pred: torch.Tensor,
        nenc: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Targets ``(M * nenc * B, Kt, ·)`` and the collapse monitors' feature stds.

        Args:
            encoder: the context encoder (targets with ``teacher="none"``).
            target_encoder: the EMA encoder (targets with ``teacher="ema"``).
            images: ``(B, C, H, W)``.
            masks_pred: ``(M, B, Kt)`` target indices (padding already made gatherable).
            nenc: context masks per image.

        Returns:
            ``(targets, std, img_std)``: the stds of the layer-normed features as
            :func:`ijepa.train.step.compute_targets` gives them (without gradients); None for
            pixel targets, whose monitors the caller takes from the context encoder instead.
        """
        if self.target == "pixels":
            return pixel_targets(images, self.patch_size, masks_pred, nenc), None, None
        if self.teacher == "ema":
            with torch.no_grad():
                h = target_encoder(images)  # (B, N, D)
        else:
            h = encoder(images)  # (B, N, D), with gradients
        h = F.layer_norm(h, (h.size(-1),))  # no affine parameters, eps 1e-5
        hf = h.detach().float()
        std = hf.flatten(0, 1).std(dim=0).mean()
        img_std = hf.std(dim=0).mean() if hf.shape[0] > 1 else torch.zeros_like(std)
        t = apply_masks(h, masks_pred)  # (M * B, Kt, D)
        t = expand_for_contexts(t, masks_pred.shape[0], masks_pred.shape[1], nenc)
        return t, std, img_std


def expand_for_contexts(t: torch.Tensor, m: int, b: int, nenc: int) -> torch.Tensor:
    """Rows ``(M * B, ...)`` repeated to ``(M * nenc * B, ...)`` in (block, context, image) order."""
    if nenc == 1:
        return t
    t = t.view(m, 1, b, *t.shape[1:]).expand(m, nenc, b, *t.shape[1:])
    return t.reshape(m * nenc * b, *t.shape[3:])
