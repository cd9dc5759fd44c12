"""The official I-JEPA sampler's behaviour (``mode="official"``), seeded and bounded.

Reproduced from the official code's behaviour (not its text): one uniform draw sets both scale
and aspect ratio (``official_block_size``); one target size and one context size per batch;
corners drawn with an exclusive upper bound (``0..H-h-1``, so the last row and column are never
a block's first row or column, and a context block of side ``H-1`` always sits at the top-left);
a block is valid only with strictly more than ``min_keep`` patches; after every 20 failed context
positions one more target block, the last one first, stops constraining that context (so a
relaxed context may overlap targets); every context mask is truncated to the batch's shortest,
keeping its smallest indices (top/left).

Differences, by design: every draw comes from the passed generator (the official code draws
positions from the global RNG), and a block size that can never be valid (where the official code
would loop forever) is redrawn, at most ``max_tries`` times, before :class:`MaskSamplingError`.
"""

from __future__ import annotations

import torch

from ijepa.masks.blocks import (
    block_grid,
    block_indices,
    count_true,
    draw_corners,
    official_block_size,
    select_indices,
    union,
)
from ijepa.masks.settings import MaskSettings, MaskStats

__all__ = ["RELAX_EVERY", "sample_official"]

RELAX_EVERY = 20  # failed context positions before the official code drops one target constraint


def sample_official(
    cfg: MaskSettings, B: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, MaskStats]:
    """Sample one batch of masks the way the official collator does.

    Args:
        cfg: Sampler settings (``cfg.mode == "official"``).
        B: Batch size.
        g: Source of randomness.

    Returns:
        ``(masks_enc (nenc, B, Kc), masks_pred (npred, B, Kt), stats)``.

    Raises:
        MaskSamplingError: ``max_tries`` size draws all gave a block of at most ``min_keep``.
    """
    H, W = cfg.height, cfg.width
    for draw in range(1, cfg.max_tries + 1):
        u_pred = float(torch.rand(1, generator=g, dtype=torch.float64))
        u_enc = float(torch.rand(1, generator=g, dtype=torch.float64))
        ph, pw = official_block_size(u_pred, cfg.pred_mask_scale, cfg.aspect_ratio, H, W)
        eh, ew = official_block_size(u_enc, cfg.enc_mask_scale, (1.0, 1.0), H, W)
        if ph * pw > cfg.min_keep and eh * ew > cfg.min_keep:
            enc, pred, rounds, relaxed = _sample_positions(cfg, B, g, (ph, pw), (eh, ew))
            counts = count_true(enc)  # (nenc, B)
            kc = int(counts.min())
            total = int(counts.sum())
            stats = MaskStats(
                context_keep=kc,
                target_keep=ph * pw,
                context_mean=total / counts.numel(),
                target_mean=float(ph * pw),
                context_dropped=1.0 - kc * counts.numel() / total,
                size_draws=draw,
                position_rounds=rounds,
                relaxed=relaxed,
            )
            masks_enc = select_indices(enc.reshape(cfg.nenc, B, H * W), kc, "first")  # truncation
            return masks_enc, pred, stats
        # the official code would retry positions forever with this size; we redraw it
    raise cfg.error(
        f"official mode drew {cfg.max_tries} block sizes and none gave both blocks more than "
        "min_keep patches"
    )


def _sample_positions(
    cfg: MaskSettings,
    B: int,
    g: torch.Generator,
    pred_size: tuple[int, int],
    enc_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Place targets, then contexts with the official tolerance relaxation.

    Both sizes must exceed ``min_keep`` patches, which makes the context loop finite: after
    ``npred * RELAX_EVERY`` failures a context has no constraint left and is valid at once.

    Returns:
        ``(context grids (nenc, B, H, W), masks_pred (npred, B, ph*pw), rounds, relaxed)``.
    """
    H, W = cfg.height, cfg.width
    (ph, pw), (eh, ew) = pred_size, enc_size
    t_h = torch.full((cfg.npred, B), ph, dtype=torch.long)
    t_w = torch.full((cfg.npred, B), pw, dtype=torch.long)
    ttop, tleft = draw_corners(t_h, t_w, H, W, g, inclusive=False)  # (npred, B)
    tgrid = block_grid(ttop, tleft, t_h, t_w, H, W)  # (npred, B, H, W)
    E = cfg.nenc * B  # context masks in flattened (nenc, B) order
    ctx = torch.zeros((E, H, W), dtype=torch.bool)
    image = torch.arange(E) % B
    level = torch.zeros(E, dtype=torch.long)  # target constraints dropped so far
    fails = torch.zeros(E, dtype=torch.long)
    pending = torch.ones(E, dtype=torch.bool)
    relaxed = rounds = 0
    for _ in range(cfg.npred * RELAX_EVERY + 1):
        rounds += 1
        idx = pending.nonzero().squeeze(1)  # (P,)
        c_h = torch.full((len(idx),), eh, dtype=torch.long)
        c_w = torch.full((len(idx),), ew, dtype=torch.long)
        c_top, c_left = draw_corners(c_h, c_w, H, W, g, inclusive=False)  # (P,)
        grid = block_grid(c_top, c_left, c_h, c_w, H, W)  # (P, H, W)
        if not cfg.allow_overlap:
            # only the first npred - level targets still constrain each context
            use = torch.arange(cfg.npred)[:, None] < (cfg.npred - level[idx])[None, :]  # (npred, P)
            grid &= ~union(tgrid[:, image[idx]] & use[..., None, None])  # minus (P, H, W)
        ok = count_true(grid) > cfg.min_keep  # (P,)
        done = idx[ok]
        ctx[done] = grid[ok]
        relaxed += int((level[done] > 0).sum())
        pending[done] = False
        if not bool(pending.any()):
            break
        bad = idx[~ok]
        fails[bad] += 1
        bump = bad[fails[bad] >= RELAX_EVERY]
        level[bump] += 1
        fails[bump] = 0
    if bool(pending.any()):  # unreachable: see the docstring
        raise cfg.error("official context search did not terminate")
    masks_pred = block_indices(ttop, tleft, ph, pw, W)  # (npred, B, ph*pw)
    return ctx.reshape(cfg.nenc, B, H, W), masks_pred, rounds, relaxed
