"""Static mask shapes: the context and target patch counts of ``fixed_sizes=True``.

With fixed sizes every batch has the same context length ``Kc`` and target length ``Kt``, so a
compiled step (``torch.compile``, CUDA graphs) is traced once instead of once per new length.

* ``Kt`` is the smallest target block the size ranges can give (scale and aspect ratio on a fine
  grid, including both ends; a size draw that still rounds below it is redrawn): every target is
  a block of at least ``Kt`` patches, subsampled uniformly to ``Kt``.
* ``Kc`` is a low quantile (:data:`CONTEXT_QUANTILE`) of the per-image context size after the
  targets are removed, estimated once from a fixed-seed sample of the same sampler (so it is a
  pure function of the settings). An image whose context falls below ``Kc`` is resampled, as for
  ``min_keep``; a longer context is subsampled uniformly to ``Kc``. A lower quantile drops more
  context patches; a higher one resamples more images (which favours overlapping targets).
"""

from __future__ import annotations

import dataclasses

import torch

from ijepa.masks.blocks import block_grid, count_true, default_block_size, draw_corners, union
from ijepa.masks.default import draw_default_sizes
from ijepa.masks.settings import MaskSettings

__all__ = ["CONTEXT_QUANTILE", "fixed_sizes_for", "with_fixed_sizes"]

#: Quantile of the per-image context size used as the fixed context length.
CONTEXT_QUANTILE = 0.1
#: Images sampled to estimate it, and the seed of that sample.
ESTIMATE_IMAGES = 2048
ESTIMATE_SEED = 20_250_101
_GRID = 129  # scale and aspect-ratio values on which the smallest target block is found


def smallest_target(cfg: MaskSettings) -> int:
    """Patches in the smallest target block the scale and aspect ranges can give."""
    (lo, hi), (alo, ahi) = cfg.pred_mask_scale, cfg.aspect_ratio
    steps = torch.linspace(0.0, 1.0, _GRID, dtype=torch.float64)
    scale = (lo + steps * (hi - lo))[:, None].expand(_GRID, _GRID)
    aspect = (alo + steps * (ahi - alo))[None, :].expand(_GRID, _GRID)
    h, w = default_block_size(cfg.height * cfg.width, scale, aspect, cfg.height, cfg.width)
    return int((h * w).min())


def context_sizes(cfg: MaskSettings, n: int, generator: torch.Generator) -> torch.Tensor:
    """Context sizes ``(n * nenc,)`` of ``n`` images, each with its own block sizes and positions."""
    H, W = cfg.height, cfg.width
    th, tw, ch, cw = draw_default_sizes(cfg, (n,), generator)  # (n,) each
    t_h, t_w = th.expand(cfg.npred, n), tw.expand(cfg.npred, n)
    c_h, c_w = ch.expand(cfg.nenc, n), cw.expand(cfg.nenc, n)
    t_top, t_left = draw_corners(t_h, t_w, H, W, generator, inclusive=True)  # (npred, n)
    c_top, c_left = draw_corners(c_h, c_w, H, W, generator, inclusive=True)  # (nenc, n)
    grid = block_grid(c_top, c_left, c_h, c_w, H, W)  # (nenc, n, H, W)
    if not cfg.allow_overlap:
        grid &= ~union(block_grid(t_top, t_left, t_h, t_w, H, W))
    return count_true(grid).flatten()


def fixed_sizes_for(cfg: MaskSettings) -> tuple[int, int]:
    """``(Kc, Kt)``: the fixed context and target lengths for these settings (see module doc)."""
    kt = smallest_target(cfg)
    g = torch.Generator().manual_seed(ESTIMATE_SEED)
    sizes = context_sizes(cfg, ESTIMATE_IMAGES, g)
    sizes = sizes[sizes >= max(cfg.min_keep, 1)]  # the sampler resamples the others anyway
    if len(sizes) == 0:
        raise cfg.error("no sampled context keeps min_keep patches, so no fixed size exists")
    kc = int(torch.quantile(sizes.double(), CONTEXT_QUANTILE, interpolation="lower"))
    return max(kc, cfg.min_keep, 1), kt


def with_fixed_sizes(cfg: MaskSettings, sizes: tuple[int, int] | None = None) -> MaskSettings:
    """``cfg`` with fixed context and target lengths (estimated when ``sizes`` is None)."""
    if cfg.mode != "default" or cfg.pad:
        raise ValueError("fixed sizes are available with mode='default' only, without pad=True")
    kc, kt = sizes if sizes is not None else fixed_sizes_for(cfg)
    if kc < 1 or kt < 1:
        raise ValueError(f"fixed sizes must be positive, got context {kc} and target {kt}")
    if kt > smallest_target(cfg):
        raise cfg.error(f"a fixed target size of {kt} exceeds the smallest target block")
    return dataclasses.replace(cfg, fixed_context=kc, fixed_target=kt)
