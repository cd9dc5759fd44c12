"""Vectorised building blocks of the multi-block sampler: block sizes, corners, grids, selection.

Everything works on whole batches of blocks at once (no per-patch Python loops): a block is a
``(top, left, h, w)`` quadruple of integer tensors, and its mask on the ``H x W`` patch grid is
built by broadcasting a row test against a column test.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "block_grid",
    "block_indices",
    "count_true",
    "default_block_size",
    "draw_corners",
    "official_block_size",
    "select_indices",
    "union",
]


def default_block_size(
    num_patches: int,
    scale: torch.Tensor,
    aspect: torch.Tensor,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block height and width from a scale and an aspect ratio (``h / w``), our rule.

    ``n = H*W*s``, ``h = round(sqrt(n*a))``, ``w = round(sqrt(n/a))``, then each side is clamped to
    ``[1, H-1]`` (resp. ``[1, W-1]``), i.e. shrunk until it is strictly smaller than the grid.
    Rounding is half-to-even (``torch.round``).

    Args:
        num_patches: ``H * W``.
        scale: Fractions of the grid, any shape ``S``.
        aspect: Aspect ratios ``h / w``, shape ``S``.
        height: Grid height ``H`` (at least 2).
        width: Grid width ``W`` (at least 2).

    Returns:
        ``(h, w)``: two int64 tensors of shape ``S``.
    """
    n = num_patches * scale.double()
    a = aspect.double()
    h = torch.round(torch.sqrt(n * a)).long().clamp(1, height - 1)
    w = torch.round(torch.sqrt(n / a)).long().clamp(1, width - 1)
    return h, w


def official_block_size(
    u: float,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    height: int,
    width: int,
) -> tuple[int, int]:
    """Block size as the official sampler computes it from one uniform draw ``u``.

    The same ``u`` sets the scale and the aspect ratio (so they are correlated), the patch count
    is floored (``int(H*W*s)``), sides use Python's ``round``, and each side is decremented while
    it is not smaller than the grid (it may end at 0 on tiny grids).

    Args:
        u: A uniform draw in ``[0, 1)``.
        scale: ``(min, max)`` fraction of the grid.
        aspect: ``(min, max)`` aspect ratio ``h / w``.
        height: Grid height ``H``.
        width: Grid width ``W``.

    Returns:
        ``(h, w)`` as Python ints.
    """
    s = scale[0] + u * (scale[1] - scale[0])
    a = aspect[0] + u * (aspect[1] - aspect[0])
    n = int(height * width * s)
    h = round(math.sqrt(n * a))
    w = round(math.sqrt(n / a))
    return max(min(h, height - 1), 0), max(min(w, width - 1), 0)


def draw_corners(
    h: torch.Tensor,
    w: torch.Tensor,
    height: int,
    width: int,
    generator: torch.Generator,
    inclusive: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform top-left corners for blocks of the given sizes.

    Args:
        h: Block heights, int64, shape ``S``.
        w: Block widths, int64, shape ``S``.
        height: Grid height ``H``.
        width: Grid width ``W``.
        generator: Source of randomness.
        inclusive: If True, ``top`` is uniform on ``0..H-h`` (every valid position, our default);
            if False, on ``0..H-h-1`` (the official exclusive bound, never touching the last row or
            column). Requires ``h < H`` and ``w < W`` when False.

    Returns:
        ``(top, left)``: int64 tensors of shape ``S``.
    """
    extra = 1 if inclusive else 0
    u = torch.rand((2, *h.shape), generator=generator, dtype=torch.float64)
    top = (u[0] * (height - h + extra)).long()
    left = (u[1] * (width - w + extra)).long()
    return top, left


def block_grid(
    top: torch.Tensor,
    left: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """Boolean masks of axis-aligned blocks on the patch grid.

    Args:
        top, left, h, w: int64 tensors of the same shape ``S``.
        height: Grid height ``H``.
        width: Grid width ``W``.

    Returns:
        Bool tensor ``(*S, H, W)``, True inside each block.
    """
    rows = torch.arange(height)
    cols = torch.arange(width)
    in_rows = (rows >= top[..., None]) & (rows < (top + h)[..., None])  # (*S, H)
    in_cols = (cols >= left[..., None]) & (cols < (left + w)[..., None])  # (*S, W)
    return in_rows[..., :, None] & in_cols[..., None, :]  # (*S, H, W)


def block_indices(
    top: torch.Tensor,
    left: torch.Tensor,
    h: int,
    w: int,
    width: int,
) -> torch.Tensor:
    """Flattened row-major indices of equal-sized blocks, ascending in each block.

    Args:
        top, left: int64 tensors of shape ``S``.
        h: Common block height.
        w: Common block width.
        width: Grid width ``W``.

    Returns:
        Int64 tensor ``(*S, h*w)``.
    """
    r = top[..., None, None] + torch.arange(h)[:, None]  # (*S, h, 1)
    c = left[..., None, None] + torch.arange(w)[None, :]  # (*S, 1, w)
    return (r * width + c).flatten(-2)  # (*S, h*w)


def select_indices(
    mask: torch.Tensor,
    k: int,
    how: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick ``k`` True positions from each row of a boolean mask, returned in ascending order.

    Args:
        mask: Bool tensor ``(*S, N)``; every row has at least ``k`` True entries.
        k: How many indices to keep per row.
        how: ``"first"`` keeps the ``k`` smallest indices (the official truncation, biased
            towards the top-left of the grid); ``"random"`` keeps a uniformly random subset of
            size ``k`` drawn from ``generator`` (unbiased over positions).
        generator: Required for ``"random"``.

    Returns:
        Int64 tensor ``(*S, k)``, sorted ascending in each row.
    """
    lead = mask.shape[:-1]
    if how == "random":
        if generator is None:
            raise ValueError("select_indices(how='random') needs a generator")
        key = torch.rand(mask.shape, generator=generator)
        key = key.masked_fill(~mask, 2.0)  # non-members sort last
        idx = key.topk(k, dim=-1, largest=False, sorted=False).indices  # (*S, k)
        return idx.sort(dim=-1).values
    if how == "first":
        keep = mask & (mask.long().cumsum(-1) <= k)  # the first k members of each row
        # nonzero walks rows in order and columns ascending, each row contributes exactly k
        return keep.nonzero()[:, -1].reshape(*lead, k)
    raise ValueError(f"select_indices: unknown how={how!r} (expected 'first' or 'random')")


def union(grids: torch.Tensor) -> torch.Tensor:
    """OR over the leading dim (a chain of in-place ORs, much faster than ``any(0)`` on CPU).

    Args:
        grids: Bool tensor ``(k, *S)`` with ``k >= 1``.

    Returns:
        Bool tensor ``S``.
    """
    out = grids[0].clone()
    for grid in grids[1:]:
        out |= grid
    return out


def count_true(grids: torch.Tensor) -> torch.Tensor:
    """True cells per block mask.

    Args:
        grids: Bool tensor ``(*S, H, W)``.

    Returns:
        Int32 tensor ``S``.
    """
    return grids.flatten(-2).sum(-1, dtype=torch.int32)
