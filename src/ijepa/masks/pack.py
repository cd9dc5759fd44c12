"""Boolean patch grids to index tensors of one length: subsampled to the shortest, or padded.

Every sampler ends the same way: each (mask, image) pair has a set of patches, and a batch needs
one tensor ``(n, B, K)``. Two ways to get one length ``K``:

* ``pad=False`` (the default): ``K`` is the batch's shortest mask and every longer mask keeps a
  uniformly random subset of that size (drawn from the generator, so no region is favoured).
  Patches are dropped; :class:`PackStats` says how many.
* ``pad=True``: ``K`` is the longest mask and shorter ones are filled up with ``PAD`` (-1) after
  their last index. Nothing is dropped; a model that takes padded masks leaves the padding out
  of its attention and its loss.

Indices are ascending within each row (padding last). Depends only on torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ijepa.masks.blocks import select_indices

__all__ = ["PAD", "PackStats", "pack_grids", "pad_indices"]

PAD = -1
"""Index value of a padding slot in a padded mask tensor."""


@dataclass(frozen=True)
class PackStats:
    """What packing did to one group of masks.

    Attributes:
        keep: Length ``K`` of the returned rows.
        mean: Mean number of patches per mask before packing.
        dropped: Fraction of the masks' patches dropped to equalise lengths (0 when padded).
        padding: Fraction of the returned slots that are padding (0 when subsampled).
    """

    keep: int
    mean: float
    dropped: float
    padding: float


def pad_indices(mask: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """All True positions of each row, ascending, padded with :data:`PAD` to a common length.

    Args:
        mask: Bool tensor ``(*S, N)``.
        length: Row length ``K`` (at least the largest row count); default the largest count.

    Returns:
        Int64 tensor ``(*S, K)``: the True positions of each row in ascending order, then ``PAD``.
    """
    counts = mask.sum(-1)  # (*S,)
    most = int(counts.max()) if counts.numel() else 0
    k = most if length is None else length
    if k < most:
        raise ValueError(f"pad_indices: length {k} is shorter than the longest row ({most})")
    # a stable sort of "not member" puts members first, in ascending index order
    order = (~mask).to(torch.uint8).argsort(dim=-1, stable=True)[..., :k]  # (*S, k)
    slot = torch.arange(k, device=mask.device)
    return order.masked_fill(slot >= counts[..., None], PAD)


def pack_grids(
    grids: torch.Tensor, *, pad: bool, generator: torch.Generator
) -> tuple[torch.Tensor, PackStats]:
    """Patch indices of boolean masks, in one tensor.

    Args:
        grids: Bool tensor ``(n, B, H, W)`` (or ``(n, B, N)``); every mask has at least one patch.
        pad: Pad to the longest mask with :data:`PAD` instead of subsampling to the shortest.
        generator: Source of the random subsets (unused when nothing needs subsampling).

    Returns:
        ``(indices (n, B, K), stats)``, int64 indices into the flattened grid.
    """
    flat = grids.reshape(*grids.shape[:2], -1)  # (n, B, N)
    counts = flat.sum(-1)  # (n, B)
    total = int(counts.sum())
    fewest, most = int(counts.min()), int(counts.max())
    if fewest < 1:
        raise ValueError("pack_grids: every mask needs at least one patch")
    mean = total / counts.numel()
    if pad:
        idx = pad_indices(flat, most)
        return idx, PackStats(most, mean, 0.0, 1.0 - total / (most * counts.numel()))
    how = "first" if fewest == most else "random"  # "first" keeps everything: no draw needed
    idx = select_indices(flat, fewest, how, generator)
    return idx, PackStats(fewest, mean, 1.0 - fewest * counts.numel() / total, 0.0)
