"""PCA of patch features shown as RGB: patches with similar features get similar colours.

The first three principal components of all patch tokens of a set of images (fitted jointly, so
colours are comparable across images) are mapped to red, green and blue, each scaled by its
1st and 99th percentiles. Parts of objects that the encoder groups together appear in one colour.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ijepa.viz.common import encoder_patch_size, new_figure, patch_grid, save_figure, to_display

__all__ = ["feature_pca_figure", "patch_features", "pca_rgb", "save_feature_figure"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def patch_features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Last-layer patch tokens ``(B, N, D)`` (float32, CPU) of ``images (B, C, H, W)``.

    The encoder runs in eval mode; its previous mode is restored.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        tokens = encoder(images)
    finally:
        encoder.train(was_training)
    if (
        not isinstance(tokens, torch.Tensor)
        or tokens.ndim != 3
        or tokens.shape[0] != images.shape[0]
    ):
        raise ValueError("encoder(images) must return patch tokens (B, N, D)")
    return tokens.float().cpu()


def pca_rgb(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Project patch tokens on their first 3 principal components and scale them to ``[0, 1]``.

    Args:
        tokens: ``(B, N, D)`` with ``N = Hp * Wp`` and ``D >= 3``.
        grid: the patch grid ``(Hp, Wp)``.

    Returns:
        ``(B, Hp, Wp, 3)`` float32 in ``[0, 1]``.
    """
    b, n, d = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not fill a {grid[0]}x{grid[1]} grid")
    if d < 3:
        raise ValueError(f"pca_rgb needs at least 3 feature dimensions, got {d}")
    x = tokens.reshape(b * n, d).double()
    x = x - x.mean(dim=0, keepdim=True)
    # right singular vectors = principal axes; fix each sign so the largest loading is positive
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:3]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    proj = x @ (axes * signs).T  # (B*N, 3)
    lo = torch.quantile(proj, 0.01, dim=0)
    hi = torch.quantile(proj, 0.99, dim=0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    return rgb.view(b, grid[0], grid[1], 3).float()


def save_feature_figure(
    images: torch.Tensor,
    rgb: torch.Tensor,
    path: str | Path,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Path:
    """Images (top row) above their PCA colour maps (bottom row), as a PNG.

    Args:
        images: ``(B, C, H, W)`` images (uint8, or normalised with ``mean``/``std``).
        rgb: ``(B, Hp, Wp, 3)`` from :func:`pca_rgb`.
        path: output PNG.
        mean: normalisation mean of ``images``.
        std: normalisation std of ``images``.

    Returns:
        ``path``.
    """
    if rgb.ndim != 4 or rgb.shape[0] != images.shape[0] or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be (B={images.shape[0]}, Hp, Wp, 3), got {tuple(rgb.shape)}")
    shown = to_display(images, mean, std)
    n = images.shape[0]
    fig = new_figure(1.8 * n, 3.9)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(shown[i], interpolation="nearest")
        axes[1, i].imshow(rgb[i].numpy(), interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("patch PCA (RGB)", fontsize=8)
    fig.suptitle("first 3 principal components of patch features", fontsize=10)
    save_figure(fig, path)
    logger.info("wrote feature PCA figure %s", path)
    return Path(path)


def feature_pca_figure(
    encoder: nn.Module,
    images: torch.Tensor,
    path: str | Path,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Encode ``images`` (normalised ``(B, C, H, W)``), save the PCA figure, return the RGB maps."""
    grid = patch_grid(images, encoder_patch_size(encoder))
    rgb = pca_rgb(patch_features(encoder, images), grid)
    save_feature_figure(images, rgb, path, mean=mean, std=std)
    return rgb
