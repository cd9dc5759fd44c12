"""Token selection by patch indices (``apply_masks``), in one vectorised gather.

Masks are index tensors into the row-major patch grid, as produced by :mod:`ijepa.masks`:
``(B, K)`` for one mask per image, or ``(n, B, K)`` / a list of ``n`` ``(B, K)`` tensors for
several. Outputs are mask-major: row ``i * B + b`` holds mask ``i`` of image ``b``.

Padded masks (``mask.pad``) end their rows in ``PAD`` (-1); :func:`split_padding` turns them into
gatherable indices and a ``valid`` mask of the real tokens, which the models leave out of their
attention and the loss out of its mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["PAD", "MaskArg", "apply_masks", "check_mask_range", "split_padding", "stack_masks"]

MaskArg = torch.Tensor | Sequence[torch.Tensor]

PAD = -1
"""Index of a padding slot in a padded mask (the value :mod:`ijepa.masks` pads with)."""


def stack_masks(masks: MaskArg, name: str = "masks") -> torch.Tensor:
    """Normalise a mask argument to one integer tensor ``(n, B, K)``.

    Args:
        masks: ``(B, K)``, ``(n, B, K)`` or a non-empty list/tuple of ``n`` ``(B, K)`` tensors.
        name: argument name used in error messages.

    Returns:
        LongTensor-compatible integer tensor ``(n, B, K)``.

    Raises:
        ValueError: on an empty list, a wrong rank, mismatched shapes or a floating dtype.
    """
    if isinstance(masks, torch.Tensor):
        stacked = masks
    else:
        if len(masks) == 0:
            raise ValueError(f"{name} is an empty list")
        shapes = {tuple(m.shape) for m in masks}
        if len(shapes) != 1:
            raise ValueError(
                f"all tensors in {name} must have the same shape, got {sorted(shapes)}"
            )
        stacked = torch.stack(list(masks))
    if stacked.ndim == 2:
        stacked = stacked.unsqueeze(0)
    if stacked.ndim != 3:
        raise ValueError(
            f"{name} must be (B, K), (n, B, K) or a list of (B, K), got {tuple(stacked.shape)}"
        )
    if stacked.dtype.is_floating_point or stacked.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer patch indices, got dtype {stacked.dtype}")
    return stacked


def check_mask_range(idx: torch.Tensor, num_tokens: int) -> None:
    """Raise if CPU-resident indices fall outside ``[0, num_tokens)``.

    The flattened gather in :func:`apply_masks` would otherwise read a neighbouring image's token
    silently. Indices already on an accelerator are not checked (that would force a device sync);
    neither are they under ``torch.compile``.
    """
    if idx.device.type != "cpu" or idx.numel() == 0 or torch.compiler.is_compiling():
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= num_tokens:
        raise IndexError(
            f"mask indices must lie in [0, {num_tokens}), got values in [{low}, {high}]"
        )


def apply_masks(x: torch.Tensor, masks: MaskArg) -> torch.Tensor:
    """Keep, for every mask and image, the tokens at the mask's patch indices.

    Args:
        x: tokens ``(B, N, D)``.
        masks: ``(B, K)``, ``(n, B, K)`` or a list of ``n`` ``(B, K)`` index tensors in ``[0, N)``.

    Returns:
        ``(n * B, K, D)``, mask-major: ``out[i * B + b, k] = x[b, masks[i, b, k]]``.

    Raises:
        IndexError: for CPU-resident masks with indices outside ``[0, N)``.
    """
    idx = stack_masks(masks)
    n, b, k = idx.shape
    bx, num_tokens, dim = x.shape
    if b != bx:
        raise ValueError(f"masks cover a batch of {b} images but x has {bx}")
    check_mask_range(idx, num_tokens)
    idx = idx.to(device=x.device, dtype=torch.long, non_blocking=True)
    # Offset every index by its image's first row in the flattened (B*N, D) view, then select
    # all rows at once; index_select's backward is a cheap index_add.
    offsets = torch.arange(b, device=x.device, dtype=torch.long).mul_(num_tokens).view(1, b, 1)
    flat = (idx + offsets).reshape(-1)
    return x.reshape(b * num_tokens, dim).index_select(0, flat).view(n * b, k, dim)


def split_padding(
    masks: MaskArg, valid: torch.Tensor | None = None, name: str = "masks"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gatherable indices of possibly padded masks, and which slots are real.

    Args:
        masks: ``(B, K)``, ``(n, B, K)`` or a list, padded with :data:`PAD` at the end of a row.
        valid: ``(n * B, K)`` or ``(n, B, K)`` bool, True for real slots, when the caller knows
            it (required for padded masks that already live on an accelerator: finding the
            padding there would cost a device synchronisation).
        name: argument name used in error messages.

    Returns:
        ``(indices (n, B, K) with PAD replaced by 0, valid (n * B, K) or None)``; ``valid`` is
        None when nothing is padded.
    """
    idx = stack_masks(masks, name)
    if valid is None:
        if idx.device.type != "cpu" or torch.compiler.is_compiling():
            return idx, None  # not inspected: see ``valid`` above
        pad = idx == PAD
        if not bool(pad.any()):
            return idx, None
        valid = ~pad
    valid = valid.reshape(-1, idx.shape[-1]).to(device=idx.device, dtype=torch.bool)
    if valid.shape[0] != idx.shape[0] * idx.shape[1]:
        raise ValueError(
            f"valid has {valid.shape[0]} rows, {name} has {idx.shape[0] * idx.shape[1]}"
        )
    return idx.clamp(min=0), valid
