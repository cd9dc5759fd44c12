"""Attention maps: where one patch looks, per layer and head.

The encoder must offer ``get_attention_maps(x, layer) -> (B, heads, N, N)`` and ``depth``
(:class:`ijepa.models.VisionTransformer` does). I-JEPA's ViT has no class token, so the map of a
*query patch* is shown: row ``q`` of the attention matrix, reshaped to the patch grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ijepa.errors import UsageError
from ijepa.viz.common import (
    encoder_patch_size,
    new_figure,
    patch_grid,
    patch_rc,
    save_figure,
    to_display,
)

__all__ = ["attention_maps", "patch_attention", "save_attention_figure"]

logger = logging.getLogger(__name__)


def _layers(encoder: nn.Module, layers: Sequence[int] | None) -> list[int]:
    if not callable(getattr(encoder, "get_attention_maps", None)):
        raise ValueError(
            f"{type(encoder).__name__} has no get_attention_maps(x, layer); attention pictures "
            "need an ijepa VisionTransformer"
        )
    depth = int(getattr(encoder, "depth", 0))
    if depth <= 0:
        raise ValueError(f"{type(encoder).__name__} does not report its depth")
    if layers is None:
        return list(range(depth))
    out = []
    for layer in layers:
        if not -depth <= layer < depth:
            raise UsageError(
                f"layer {layer} outside [-{depth}, {depth}) for a {depth}-block encoder"
            )
        out.append(layer % depth)
    return out


@torch.no_grad()
def attention_maps(
    encoder: nn.Module, images: torch.Tensor, layers: Sequence[int] | None = None
) -> torch.Tensor:
    """Attention probabilities of several blocks.

    Args:
        encoder: a ViT with ``get_attention_maps`` (run in eval mode; its mode is restored).
        images: ``(B, C, H, W)`` normalised images.
        layers: block indices (negative from the end); all blocks when None.

    Returns:
        ``(B, L, heads, N, N)`` float32 on the CPU; each row sums to 1.
    """
    chosen = _layers(encoder, layers)
    was_training = encoder.training
    encoder.eval()
    try:
        fn = getattr(encoder, "get_attention_maps", None)
        assert callable(fn)  # checked by _layers
        maps = [fn(images, layer).float().cpu() for layer in chosen]
    finally:
        encoder.train(was_training)
    return torch.stack(maps, dim=1)


def patch_attention(
    encoder: nn.Module,
    image: torch.Tensor,
    patch: int | tuple[int, int],
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Attention of one query patch over the patch grid, per layer and head.

    Args:
        encoder: a ViT with ``get_attention_maps`` and ``patch_size``.
        image: ``(C, H, W)`` normalised image.
        patch: query patch, flat row-major index or ``(row, col)``.
        layers: block indices; all when None.

    Returns:
        ``(L, heads, Hp, Wp)``.
    """
    grid = patch_grid(image[None], encoder_patch_size(encoder))
    r, c = patch_rc(patch, grid)
    maps = attention_maps(encoder, image[None], layers)[0]  # (L, h, N, N)
    return maps[:, :, r * grid[1] + c].reshape(maps.shape[0], maps.shape[1], *grid)


def save_attention_figure(
    image: torch.Tensor,
    maps: torch.Tensor,
    patch: tuple[int, int],
    patch_size: int,
    path: str | Path,
    *,
    layer_names: Sequence[str] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Path:
    """One row per layer: the image with the query patch, then each head's map over the image.

    Args:
        image: ``(C, H, W)`` image (uint8, or normalised with ``mean``/``std``).
        maps: ``(L, heads, Hp, Wp)`` from :func:`patch_attention`.
        patch: the query patch ``(row, col)``.
        patch_size: patch side in pixels.
        path: output PNG.
        layer_names: row titles (default ``layer 0..L-1``).
        mean: normalisation mean of ``image``.
        std: normalisation std of ``image``.

    Returns:
        ``path``.
    """
    from matplotlib.patches import Rectangle

    if maps.ndim != 4:
        raise ValueError(f"maps must be (L, heads, Hp, Wp), got {tuple(maps.shape)}")
    n_layers, n_heads = maps.shape[:2]
    names = (
        list(layer_names) if layer_names is not None else [f"layer {i}" for i in range(n_layers)]
    )
    if len(names) != n_layers:
        raise ValueError(f"{len(names)} layer names for {n_layers} layers")
    rgb = to_display(image[None], mean, std)[0]
    h, w = rgb.shape[:2]
    fig = new_figure(1.6 * (n_heads + 1), 1.6 * n_layers + 0.4)
    axes = fig.subplots(n_layers, n_heads + 1, squeeze=False)
    r, c = patch
    for i in range(n_layers):
        ax = axes[i, 0]
        ax.imshow(rgb, interpolation="nearest")
        ax.add_patch(
            Rectangle(
                (c * patch_size - 0.5, r * patch_size - 0.5),
                patch_size,
                patch_size,
                fill=False,
                edgecolor="red",
                linewidth=2,
            )
        )
        ax.set_ylabel(names[i], fontsize=8)
        for j in range(n_heads):
            ax = axes[i, j + 1]
            ax.imshow(rgb, interpolation="nearest")
            ax.imshow(
                maps[i, j].numpy(),
                cmap="inferno",
                alpha=0.65,
                extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                interpolation="nearest",
            )
            if i == 0:
                ax.set_title(f"head {j}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"attention of patch (row {r}, col {c})", fontsize=10)
    save_figure(fig, path)
    logger.info("wrote attention figure %s", path)
    return Path(path)
