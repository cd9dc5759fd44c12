"""Pictures of the multi-block masks: blocks over sample images, and patch-usage heatmaps.

The heatmaps count, over many sampled batches, how often each patch is in the context and in a
target block. A sampler without positional bias gives smooth, symmetric maps; the official
sampler's exclusive corner bound shows up as a dead last row and column (see the spec, "Multi-block
masking", flaws 3 and 6), which is why the figure can put several modes side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ijepa.masks import MaskSampler, step_masks
from ijepa.viz.common import new_figure, save_figure, to_display

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "TARGET_COLOURS",
    "MaskFrequency",
    "block_box",
    "draw_masks",
    "mask_frequency",
    "save_mask_figure",
]

logger = logging.getLogger(__name__)

TARGET_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4")


@dataclass(frozen=True)
class MaskFrequency:
    """How often each patch was used, over ``images`` sampled images.

    Attributes:
        context: ``(H, W)`` fraction of context masks that contain the patch.
        target: ``(H, W)`` fraction of images whose target blocks (any of them) contain the patch.
        images: number of images sampled.
    """

    context: torch.Tensor
    target: torch.Tensor
    images: int

    @property
    def unused(self) -> int:
        """Patches that were never in a context nor in a target."""
        return int(((self.context == 0) & (self.target == 0)).sum())


def _membership(masks: torch.Tensor, num_patches: int) -> torch.Tensor:
    """``(n, B, K)`` index masks (padding -1 allowed) -> ``(n, B, N)`` bool membership."""
    n, b, _ = masks.shape
    out = torch.zeros(n, b, num_patches + 1, dtype=torch.bool)  # a last column for padding
    idx = masks.long()
    out.scatter_(2, torch.where(idx < 0, num_patches, idx), True)
    return out[..., :num_patches]


def mask_frequency(
    generator: MaskSampler,
    *,
    num_batches: int = 200,
    batch_size: int = 16,
    seed: int = 0,
) -> MaskFrequency:
    """Sample ``num_batches`` batches and count patch usage.

    Batch ``i`` follows the training's seeding rule (:func:`ijepa.masks.step_masks`): with the
    run's seed and its global batch size, batch ``i`` holds the masks of training step ``i``.

    Args:
        generator: the mask sampler.
        num_batches: batches to sample.
        batch_size: images per batch (block sizes are drawn per batch in the official sampler).
        seed: seed of the draws.

    Returns:
        The :class:`MaskFrequency` over ``num_batches * batch_size`` images.
    """
    if num_batches < 1 or batch_size < 1:
        raise ValueError(
            f"num_batches and batch_size must be >= 1, got {num_batches}, {batch_size}"
        )
    h, w = generator.input_size
    n = h * w
    ctx = torch.zeros(n, dtype=torch.float64)
    tgt = torch.zeros(n, dtype=torch.float64)
    for i in range(num_batches):
        masks_enc, masks_pred = step_masks(generator, seed, i, batch_size)
        ctx += _membership(masks_enc, n).sum(dim=(0, 1)).double()
        tgt += _membership(masks_pred, n).any(dim=0).sum(dim=0).double()
    images = num_batches * batch_size
    return MaskFrequency(
        context=(ctx / (images * generator.nenc)).view(h, w).float(),
        target=(tgt / images).view(h, w).float(),
        images=images,
    )


def block_box(idx: torch.Tensor, width: int) -> tuple[int, int, int, int]:
    """Bounding box ``(row0, col0, rows, cols)`` of patch indices."""
    rows, cols = idx // width, idx % width
    r0, c0 = int(rows.min()), int(cols.min())
    return r0, c0, int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1


def draw_masks(
    ax: Axes,
    image: torch.Tensor,
    context: torch.Tensor,
    targets: torch.Tensor,
    patch_size: int,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> None:
    """Draw one image with its context shown and everything else dimmed, and target boxes.

    Args:
        ax: a matplotlib ``Axes``.
        image: ``(C, H, W)`` (uint8, or normalised floats with ``mean``/``std``).
        context: ``(Kc,)`` context patch indices.
        targets: ``(M, Kt)`` target patch indices, one row per block.
        patch_size: patch side in pixels.
        mean: normalisation mean of ``image``.
        std: normalisation std of ``image``.
    """
    from matplotlib.patches import Rectangle

    rgb = torch.from_numpy(to_display(image[None], mean, std)[0])  # (H, W, 3)
    hp, wp = image.shape[-2] // patch_size, image.shape[-1] // patch_size
    keep = torch.zeros(hp * wp, dtype=torch.bool)
    keep[context[context >= 0].long()] = True  # padding (-1) left out
    pixel_keep = keep.view(hp, wp).repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    shown = torch.where(pixel_keep[..., None], rgb, 0.25 * rgb + 0.35)
    ax.imshow(shown.numpy(), interpolation="nearest")
    for k, block in enumerate(targets):
        block = block[block >= 0].long()
        r0, c0, nr, nc = block_box(block, wp)
        colour = TARGET_COLOURS[k % len(TARGET_COLOURS)]
        # a block is one rectangle; scattered targets (mask.strategy=random) one box per patch
        boxes = (
            [(r0, c0, nr, nc)]
            if len(block) == nr * nc
            else [(int(i) // wp, int(i) % wp, 1, 1) for i in block]
        )
        for r, c, h, w in boxes:
            ax.add_patch(
                Rectangle(
                    (c * patch_size - 0.5, r * patch_size - 0.5),
                    w * patch_size,
                    h * patch_size,
                    fill=False,
                    edgecolor=colour,
                    linewidth=2 if len(boxes) == 1 else 1,
                )
            )
    ax.set_xticks([])
    ax.set_yticks([])


def save_mask_figure(
    images: torch.Tensor,
    generators: Mapping[str, MaskSampler],
    path: str | Path,
    *,
    patch_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    seed: int = 0,
    num_batches: int = 200,
    batch_size: int = 16,
) -> dict[str, MaskFrequency]:
    """Masks over sample images (first sampler) and usage heatmaps of every sampler, as a PNG.

    Args:
        images: ``(B, C, H, W)`` sample images (at most 6 are drawn), on the samplers' grid.
        generators: name -> sampler, e.g. ``{"default": ..., "official": ...}``.
        path: output PNG.
        patch_size: patch side in pixels.
        mean: normalisation mean of ``images`` (None for uint8 or ``[0, 1]`` images).
        std: normalisation std of ``images``.
        seed: seed of the sample masks and of the heatmap draws.
        num_batches: batches per heatmap.
        batch_size: images per heatmap batch.

    Returns:
        name -> :class:`MaskFrequency` of each sampler.
    """
    if not generators:
        raise ValueError("save_mask_figure: give at least one mask generator")
    first = next(iter(generators.values()))
    grid = (images.shape[-2] // patch_size, images.shape[-1] // patch_size)
    if tuple(first.input_size) != grid:
        raise ValueError(
            f"images of {images.shape[-2]}x{images.shape[-1]} px with patch {patch_size} give a "
            f"{grid} grid, but the mask generator samples on {first.input_size}"
        )
    shown = images[:6]
    freqs = {
        name: mask_frequency(gen, num_batches=num_batches, batch_size=batch_size, seed=seed)
        for name, gen in generators.items()
    }
    n_ex = shown.shape[0]
    cols = max(n_ex, 1)
    fig = new_figure(max(2.2 * cols, 2.6 * len(generators) + 1.0), 5.4)
    layout = fig.add_gridspec(2, 1, height_ratios=[1.0, 1.15])
    top, bottom = fig.add_subfigure(layout[0]), fig.add_subfigure(layout[1])
    ex_axes = top.subplots(1, cols, squeeze=False)[0]
    masks_enc, masks_pred = step_masks(first, seed, 0, n_ex)
    for i in range(cols):
        ax = ex_axes[i]
        if i >= n_ex:
            ax.axis("off")
            continue
        draw_masks(ax, shown[i], masks_enc[0, i], masks_pred[:, i], patch_size, mean=mean, std=std)
    top.suptitle(
        f"context (bright) and {first.npred} target blocks ({getattr(first, 'mode', first.strategy)} sampler)"
    )
    axes = bottom.subplots(1, 2 * len(generators), squeeze=False)[0]
    vmax = max(max(float(f.context.max()), float(f.target.max())) for f in freqs.values())
    image = None
    for m, (name, freq) in enumerate(freqs.items()):
        for col, (what, values) in enumerate((("context", freq.context), ("target", freq.target))):
            ax = axes[2 * m + col]
            image = ax.imshow(values.numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
            ax.set_title(f"{name}: P(in {what})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        if freq.unused:
            axes[2 * m].set_xlabel(f"{freq.unused} patch(es) never used", fontsize=8)
    if image is not None:
        bottom.colorbar(image, ax=axes, shrink=0.8)
    bottom.suptitle(f"patch usage over {next(iter(freqs.values())).images} sampled images")
    save_figure(fig, path)
    logger.info("wrote mask figure %s", path)
    return freqs
