"""Multi-block mask sampler of I-JEPA: one large context block and several target blocks.

Two modes share one interface (see ``docs/ijepa-spec.md``, "Multi-block masking"):
``mode="default"`` fixes the official sampler's flaws 2-7 (:mod:`ijepa.masks.default`), and
``mode="official"`` reproduces its sizes and biases, seeded and bounded
(:mod:`ijepa.masks.official`). All randomness comes from the generator passed to each call, so
the masks are a pure function of it (see :func:`ijepa.masks.make_generator`).
"""

from __future__ import annotations

import logging

import torch

from ijepa.masks.blocks import default_block_size, official_block_size
from ijepa.masks.default import sample_default
from ijepa.masks.fixed import with_fixed_sizes
from ijepa.masks.official import sample_official
from ijepa.masks.settings import MaskSamplingError, MaskSettings, MaskStats

__all__ = ["MaskSamplingError", "MaskStats", "MultiBlockMaskGenerator"]

logger = logging.getLogger(__name__)

_OFFICIAL_GRID = 1024  # uniform draws at which the constructor checks official block sizes


class MultiBlockMaskGenerator:
    """Samples I-JEPA context and target masks as patch indices.

    Args:
        input_size: Patch grid ``(H, W)`` or an int for a square grid; at least 2x2.
        enc_mask_scale: ``(min, max)`` fraction of the grid covered by the context block.
        pred_mask_scale: ``(min, max)`` fraction of the grid covered by each target block.
        aspect_ratio: ``(min, max)`` target aspect ratio ``h / w`` (the context uses 1).
        nenc: Context masks per image.
        npred: Target blocks per image.
        min_keep: Default mode: a context keeps at least ``max(min_keep, 1)`` patches. Official
            mode: targets and contexts need strictly more than ``min_keep`` patches.
        allow_overlap: If False, patches of any target block are removed from the context.
        mode: ``"default"`` (our fixes) or ``"official"`` (the official code's behaviour).
        per_image_size: Default mode only: draw a size per block and image, not one per batch.
        max_tries: Bound of the search: position rounds per size draw, and size draws.
        pad: Default mode only: keep every patch of every mask, padding shorter masks with -1
            up to the batch's longest, instead of subsampling longer masks to the shortest.
        fixed_sizes: Default mode only: static shapes, every batch with the same context and
            target lengths (``True``: derived from the settings, see :mod:`ijepa.masks.fixed`;
            or an explicit ``(Kc, Kt)``), so that a compiled step is traced once.

    Attributes:
        stats: :class:`MaskStats` of the last call (None before the first call). Inside
            DataLoader workers it lives in the worker's copy.

    Raises:
        ValueError: A setting is malformed.
        MaskSamplingError: The settings can never be met on this grid.
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = (14, 14),
        enc_mask_scale: tuple[float, float] = (0.85, 1.0),
        pred_mask_scale: tuple[float, float] = (0.15, 0.2),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        nenc: int = 1,
        npred: int = 4,
        min_keep: int = 10,
        allow_overlap: bool = False,
        mode: str = "default",
        per_image_size: bool = False,
        max_tries: int = 20,
        pad: bool = False,
        fixed_sizes: bool | tuple[int, int] = False,
    ) -> None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) != 2:
            raise ValueError(f"input_size must be an int or a pair (H, W), got {input_size!r}")
        self.settings = MaskSettings(
            height=size[0],
            width=size[1],
            enc_mask_scale=enc_mask_scale,
            pred_mask_scale=pred_mask_scale,
            aspect_ratio=aspect_ratio,
            nenc=nenc,
            npred=npred,
            min_keep=min_keep,
            allow_overlap=bool(allow_overlap),
            mode=mode,
            per_image_size=bool(per_image_size),
            max_tries=max_tries,
            pad=bool(pad),
        )
        self.stats: MaskStats | None = None
        self._warned_relax = False
        _check_feasible(self.settings)
        if fixed_sizes is not False:
            explicit = None if fixed_sizes is True else (int(fixed_sizes[0]), int(fixed_sizes[1]))
            self.settings = with_fixed_sizes(self.settings, explicit)
            logger.info(
                "fixed mask sizes: %d context and %d target patches per mask",
                self.settings.fixed_context,
                self.settings.fixed_target,
            )

    @property
    def fixed_sizes(self) -> tuple[int, int] | None:
        """``(Kc, Kt)`` under static shapes, else None."""
        s = self.settings
        return (s.fixed_context, s.fixed_target) if s.fixed_context else None

    @property
    def input_size(self) -> tuple[int, int]:
        """The patch grid ``(H, W)``."""
        return self.settings.input_size

    @property
    def nenc(self) -> int:
        """Context masks per image."""
        return self.settings.nenc

    @property
    def npred(self) -> int:
        """Target blocks per image."""
        return self.settings.npred

    strategy = "multiblock"
    """The masking strategy's name (see :data:`ijepa.masks.STRATEGIES`)."""

    @property
    def pad(self) -> bool:
        """Whether masks are padded with -1 instead of subsampled to one length."""
        return self.settings.pad

    @property
    def mode(self) -> str:
        """``"default"`` or ``"official"``."""
        return self.settings.mode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.describe()})"

    def __call__(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the masks of one batch.

        Args:
            batch_size: Number of images ``B``.
            generator: CPU generator, e.g. from :func:`ijepa.masks.make_generator`.

        Returns:
            ``(masks_enc, masks_pred)``: int64 tensors ``(nenc, B, Kc)`` and ``(npred, B, Kt)`` of
            row-major indices into the flattened ``H*W`` grid, ascending in each row (with
            ``pad=True``, rows end in -1 padding up to the batch's longest mask).

        Raises:
            MaskSamplingError: No valid masks were found within the bounded search.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if self.settings.mode == "official":
            masks_enc, masks_pred, stats = sample_official(self.settings, batch_size, generator)
            if stats.relaxed and not self._warned_relax:
                self._warned_relax = True
                logger.warning(
                    "official mask mode: %d context masks needed the official tolerance "
                    "relaxation and may overlap targets (%s); later cases only go to stats.relaxed",
                    stats.relaxed,
                    self.settings.describe(),
                )
        else:
            masks_enc, masks_pred, stats = sample_default(self.settings, batch_size, generator)
        self.stats = stats
        return masks_enc, masks_pred


def _check_feasible(cfg: MaskSettings) -> None:
    """Reject settings that cannot be met.

    Default mode: the largest context block must hold ``max(min_keep, 1)`` patches (a necessary
    condition; settings where most draws fail can still raise at sampling time). Official mode:
    every size draw (checked on a grid of draws) must give blocks of more than ``min_keep``.
    """
    H, W = cfg.height, cfg.width
    if H < 2 or W < 2:
        raise cfg.error("the patch grid must be at least 2x2 (blocks are smaller than the grid)")
    if cfg.mode == "default":
        top = torch.tensor([cfg.enc_mask_scale[1]])
        h, w = default_block_size(H * W, top, torch.ones(1), H, W)
        area = int(h.item() * w.item())
        if area < max(cfg.min_keep, 1):
            raise cfg.error(f"the largest context block has {area} patches, fewer than min_keep")
        return
    # the official code loops forever on any size draw whose block has at most min_keep patches
    us = [i / _OFFICIAL_GRID for i in range(_OFFICIAL_GRID)]
    ctx = [_area(official_block_size(u, cfg.enc_mask_scale, (1.0, 1.0), H, W)) for u in us]
    tgt = [_area(official_block_size(u, cfg.pred_mask_scale, cfg.aspect_ratio, H, W)) for u in us]
    bad = sum(c <= cfg.min_keep or t <= cfg.min_keep for c, t in zip(ctx, tgt, strict=True))
    if bad:
        raise cfg.error(
            f"official mode needs blocks of more than min_keep patches, but {bad / len(us):.0%} "
            f"of the size draws give fewer (context blocks of {min(ctx)}-{max(ctx)} patches, "
            f"target blocks of {min(tgt)}-{max(tgt)}); the official sampler would loop forever "
            "on those batches"
        )


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]
