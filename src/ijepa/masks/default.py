"""Our multi-block sampler (``mode="default"``): the official scheme with its flaws 2-7 fixed.

* Scale and aspect ratio are drawn independently; sides follow ``default_block_size``.
* Every valid corner is reachable (``0..H-h`` inclusive): the last row and column are covered and
  the context block moves.
* A context keeps at least ``max(min_keep, 1)`` patches and, with ``allow_overlap=False``, never
  overlaps a target. An image whose context fails is resampled as a whole (targets and context
  positions; rejection sampling), for ``max_tries`` rounds, after which the block sizes are
  redrawn, at most ``max_tries`` times, before :class:`MaskSamplingError` is raised.
* One block size per batch, or with ``per_image_size=True`` one per block and image.
* Context masks are brought to the batch's shortest by keeping a uniformly random subset of each
  longer mask (drawn from the generator), so no region is favoured; with per-image sizes the
  targets are subsampled the same way. Indices stay sorted. With ``pad=True`` nothing is dropped:
  every mask is padded with -1 to the batch's longest instead (:mod:`ijepa.masks.pack`).
* Static shapes (``fixed_context``/``fixed_target`` set, see :mod:`ijepa.masks.fixed`): a context
  needs at least ``fixed_context`` patches (images below are resampled, as for ``min_keep``), a
  size draw whose target blocks are smaller than ``fixed_target`` is redrawn, and every mask is
  then subsampled to exactly that many: a shorter mask is never padded.
"""

from __future__ import annotations

import logging

import torch

from ijepa.masks.blocks import (
    block_grid,
    block_indices,
    count_true,
    default_block_size,
    draw_corners,
    select_indices,
    union,
)
from ijepa.masks.pack import pack_grids
from ijepa.masks.settings import MaskSettings, MaskStats

__all__ = ["draw_default_sizes", "sample_default"]

logger = logging.getLogger(__name__)


def draw_default_sizes(
    cfg: MaskSettings, shape: tuple[int, ...], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Independent uniform scale and aspect draws for target and context blocks.

    Args:
        cfg: Sampler settings.
        shape: Shape ``S`` of the draws (``(1,)`` for one size per batch).
        g: Source of randomness.

    Returns:
        ``(target_h, target_w, context_h, context_w)``, int64 tensors of shape ``S``.
    """
    H, W = cfg.height, cfg.width
    u = torch.rand((3, *shape), generator=g, dtype=torch.float64)
    (lo, hi), (alo, ahi), (elo, ehi) = cfg.pred_mask_scale, cfg.aspect_ratio, cfg.enc_mask_scale
    th, tw = default_block_size(H * W, lo + u[0] * (hi - lo), alo + u[1] * (ahi - alo), H, W)
    one = torch.ones(shape, dtype=torch.float64)
    ch, cw = default_block_size(H * W, elo + u[2] * (ehi - elo), one, H, W)
    return th, tw, ch, cw


def sample_default(
    cfg: MaskSettings, B: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, MaskStats]:
    """Sample one batch of masks in default mode.

    Args:
        cfg: Sampler settings (``cfg.mode == "default"``).
        B: Batch size.
        g: Source of randomness.

    Returns:
        ``(masks_enc (nenc, B, Kc), masks_pred (npred, B, Kt), stats)``.

    Raises:
        MaskSamplingError: No valid masks within the bounded search.
    """
    H, W = cfg.height, cfg.width
    need = max(cfg.min_keep, 1, cfg.fixed_context)
    th = torch.empty((cfg.npred, B), dtype=torch.long)
    tw, ttop, tleft = torch.empty_like(th), torch.empty_like(th), torch.empty_like(th)
    ch = torch.empty((cfg.nenc, B), dtype=torch.long)
    cw = torch.empty_like(ch)
    ctx = torch.zeros((cfg.nenc, B, H, W), dtype=torch.bool)
    pending = torch.ones(B, dtype=torch.bool)
    rounds = 0
    for draw in range(1, cfg.max_tries + 1):
        if cfg.per_image_size:  # new sizes for the images still pending only
            idx = pending.nonzero().squeeze(1)
            th[:, idx], tw[:, idx], ch[:, idx], cw[:, idx] = draw_default_sizes(cfg, (len(idx),), g)
        else:  # one size for the whole batch: every image starts again
            th[:], tw[:], ch[:], cw[:] = draw_default_sizes(cfg, (1,), g)
            pending[:] = True
        # (B,) context block smaller than min_keep, or a target smaller than the fixed size
        hopeless = (ch * cw < need).any(0) | (th * tw < cfg.fixed_target).any(0)
        for _ in range(cfg.max_tries):
            if bool(hopeless[pending].all()):
                break
            rounds += 1
            idx = pending.nonzero().squeeze(1)  # (P,)
            t_h, t_w, c_h, c_w = th[:, idx], tw[:, idx], ch[:, idx], cw[:, idx]
            t_top, t_left = draw_corners(t_h, t_w, H, W, g, inclusive=True)  # (npred, P)
            c_top, c_left = draw_corners(c_h, c_w, H, W, g, inclusive=True)  # (nenc, P)
            grid = block_grid(c_top, c_left, c_h, c_w, H, W)  # (nenc, P, H, W)
            if not cfg.allow_overlap:
                grid &= ~union(block_grid(t_top, t_left, t_h, t_w, H, W))  # minus (P, H, W)
            ok = (count_true(grid) >= need).all(0)  # (P,)
            if len(idx) == B and bool(ok.all()):  # the whole batch at once: no copies
                ctx, ttop, tleft = grid, t_top, t_left
                pending[:] = False
            else:
                done = idx[ok]
                ctx[:, done] = grid[:, ok]
                ttop[:, done], tleft[:, done] = t_top[:, ok], t_left[:, ok]
                pending[done] = False
            if not bool(pending.any()):
                return _finish(cfg, ctx, th, tw, ttop, tleft, g, draw, rounds)
        logger.debug(
            "mask sampler: redrawing block sizes (draw %d, %d pending)", draw, int(pending.sum())
        )
    raise cfg.error(
        f"no context with at least {need} patches after {cfg.max_tries} size draws "
        f"x {cfg.max_tries} position rounds"
    )


def _finish(
    cfg: MaskSettings,
    ctx: torch.Tensor,
    th: torch.Tensor,
    tw: torch.Tensor,
    ttop: torch.Tensor,
    tleft: torch.Tensor,
    g: torch.Generator,
    draws: int,
    rounds: int,
) -> tuple[torch.Tensor, torch.Tensor, MaskStats]:
    """Turn accepted grids and target corners into index tensors of equal length."""
    nenc, B, H, W = ctx.shape
    if cfg.pad:
        return _finish_padded(cfg, ctx, th, tw, ttop, tleft, g, draws, rounds)
    counts = count_true(ctx)  # (nenc, B)
    kc = cfg.fixed_context or int(counts.min())  # every count >= fixed_context (resampled)
    how = "first" if bool((counts == kc).all()) else "random"  # "first" keeps all: no draw needed
    masks_enc = select_indices(ctx.reshape(nenc, B, H * W), kc, how, g)
    tsize = th * tw  # (npred, B)
    kt = cfg.fixed_target or int(tsize.min())  # every size >= fixed_target (redrawn)
    h0, w0 = int(th[0, 0]), int(tw[0, 0])
    if bool(((th == h0) & (tw == w0)).all()) and h0 * w0 == kt:  # read indices off the corners
        masks_pred = block_indices(ttop, tleft, h0, w0, W)
    else:  # a random subset of each target, down to the batch minimum or the fixed size
        tgrid = block_grid(ttop, tleft, th, tw, H, W).reshape(cfg.npred, B, H * W)
        masks_pred = select_indices(tgrid, kt, "random", g)
    total = int(counts.sum())
    stats = MaskStats(
        context_keep=kc,
        target_keep=kt,
        context_mean=total / counts.numel(),
        target_mean=float(tsize.double().mean()),
        context_dropped=1.0 - kc * counts.numel() / total,
        size_draws=draws,
        position_rounds=rounds,
        target_dropped=1.0 - kt * tsize.numel() / float(tsize.sum()),
    )
    return masks_enc, masks_pred, stats


def _finish_padded(
    cfg: MaskSettings,
    ctx: torch.Tensor,
    th: torch.Tensor,
    tw: torch.Tensor,
    ttop: torch.Tensor,
    tleft: torch.Tensor,
    g: torch.Generator,
    draws: int,
    rounds: int,
) -> tuple[torch.Tensor, torch.Tensor, MaskStats]:
    """Like :func:`_finish`, but every mask keeps all its patches (padded with -1)."""
    H, W = cfg.height, cfg.width
    masks_enc, cs = pack_grids(ctx, pad=True, generator=g)
    tgrid = block_grid(ttop, tleft, th, tw, H, W)  # (npred, B, H, W)
    masks_pred, ts = pack_grids(tgrid, pad=True, generator=g)
    stats = MaskStats(
        context_keep=cs.keep,
        target_keep=ts.keep,
        context_mean=cs.mean,
        target_mean=ts.mean,
        context_dropped=0.0,
        size_draws=draws,
        position_rounds=rounds,
        context_padding=cs.padding,
        target_padding=ts.padding,
    )
    return masks_enc, masks_pred, stats
