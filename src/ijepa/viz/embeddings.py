"""2-D maps of pooled image features coloured by label: UMAP, or PCA when umap is missing.

``umap-learn`` is an optional dependency (the ``umap`` extra); it is imported only when a UMAP
map is asked for, and ``method="auto"`` falls back to PCA with a logged notice when it is absent.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ijepa.viz.common import new_figure, save_figure

__all__ = ["METHODS", "embed_2d", "pooled_features", "save_embedding_figure"]

logger = logging.getLogger(__name__)

METHODS = ("auto", "umap", "pca")


@torch.no_grad()
def pooled_features(
    encoder: nn.Module, images: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Average-pooled last-layer features ``(B, D)`` (float32, CPU) of ``images (B, C, H, W)``.

    The encoder runs in eval mode; its previous mode is restored.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        chunks = [encoder(chunk).float().mean(dim=1).cpu() for chunk in images.split(batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(chunks)


def _pca_2d(features: torch.Tensor) -> torch.Tensor:
    x = features.double() - features.double().mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return (x @ vh[:2].T).float()


def embed_2d(
    features: torch.Tensor, method: str = "auto", *, seed: int = 0, n_neighbors: int = 15
) -> tuple[torch.Tensor, str]:
    """Project features to 2-D.

    Args:
        features: ``(N, D)``, ``N >= 3``.
        method: ``"umap"`` (error if umap-learn is missing), ``"pca"``, or ``"auto"`` (UMAP when
            installed, else PCA with a logged notice).
        seed: UMAP random state.
        n_neighbors: UMAP neighbourhood size (capped at ``N - 1``).

    Returns:
        ``(coords (N, 2) float32, method used)``.
    """
    if method not in METHODS:
        raise ValueError(f"embedding method must be one of {METHODS}, got {method!r}")
    if features.ndim != 2 or features.shape[0] < 3 or features.shape[1] < 2:
        raise ValueError(f"embed_2d needs features (N >= 3, D >= 2), got {tuple(features.shape)}")
    have_umap = importlib.util.find_spec("umap") is not None
    if method == "umap" and not have_umap:
        raise ValueError(
            "method 'umap' needs umap-learn: pip install 'ijepa[umap]' (or use method 'pca')"
        )
    if method == "pca" or not have_umap:
        if method == "auto":
            logger.info(
                "umap-learn is not installed; showing a PCA map instead (pip install 'ijepa[umap]')"
            )
        return _pca_2d(features), "pca"
    import umap  # lazily: importing it compiles numba code (seconds)

    n = features.shape[0]
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, n - 1)),
        random_state=seed,
        n_jobs=1,
    )
    coords = reducer.fit_transform(features.double().numpy())
    return torch.as_tensor(coords, dtype=torch.float32), "umap"


def save_embedding_figure(
    coords: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    path: str | Path,
    *,
    title: str = "pooled features",
) -> Path:
    """Scatter plot of 2-D points coloured by label, with a legend of class names (up to 20).

    Args:
        coords: ``(N, 2)``.
        labels: ``(N,)`` int labels indexing ``classes``.
        classes: class names.
        path: output PNG.
        title: figure title.

    Returns:
        ``path``.
    """
    if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != (coords.shape[0],):
        raise ValueError(
            f"coords must be (N, 2) and labels (N,), got {tuple(coords.shape)}, {tuple(labels.shape)}"
        )
    from matplotlib import colormaps

    n_classes = max(len(classes), int(labels.max()) + 1 if labels.numel() else 0)
    cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
    fig = new_figure(6.0, 5.0)
    ax = fig.subplots()
    xy = coords.numpy()
    for k in range(n_classes):
        sel = (labels == k).numpy()
        if not sel.any():
            continue
        name = classes[k] if k < len(classes) else str(k)
        # matplotlib reads "$...$" as mathtext and hides labels starting with "_": show names as is
        name = name.replace("$", r"\$").lstrip("_") or str(k)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(k % cmap.N), label=name, alpha=0.8)
    if n_classes <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    logger.info("wrote embedding figure %s", path)
    return Path(path)
