"""Shared pieces of the pictures: Agg figures without pyplot, image display, patch geometry.

Figures are made with :class:`matplotlib.figure.Figure` on an explicit Agg canvas, never through
``pyplot``: nothing changes matplotlib's global backend, so the functions work the same in a
script, on a headless server and inside a notebook.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ijepa.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "encoder_patch_size",
    "figure_png",
    "new_figure",
    "patch_grid",
    "patch_rc",
    "save_figure",
    "to_display",
]


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure attached to an Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def figure_png(fig: Figure) -> bytes:
    """The PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def to_display(
    images: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """Images as float RGB arrays in ``[0, 1]`` for ``imshow``.

    Args:
        images: ``(B, C, H, W)`` with ``C`` in ``{1, 3}``: uint8, or floats normalised with
            ``mean``/``std`` (when given) or already in ``[0, 1]``.
        mean: per-channel mean used for normalisation (undone here).
        std: per-channel std used for normalisation.

    Returns:
        ``(B, H, W, 3)`` float32 in ``[0, 1]`` (grey images are repeated over 3 channels).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"to_display: images must be (B, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}"
        )
    x = images.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = x.float()
        if mean is not None and std is not None:
            m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
            s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
            x = x * s + m
    x = x.clamp(0.0, 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def encoder_patch_size(encoder: object) -> int:
    """The ``patch_size`` attribute of a ViT encoder, checked."""
    size = getattr(encoder, "patch_size", None)
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"{type(encoder).__name__} has no integer patch_size; a ViT is needed")
    return size


def patch_grid(images: torch.Tensor, patch_size: int) -> tuple[int, int]:
    """The patch grid ``(Hp, Wp)`` of images ``(B, C, H, W)``; sides must divide evenly."""
    h, w = int(images.shape[-2]), int(images.shape[-1])
    if patch_size <= 0 or h % patch_size or w % patch_size:
        raise UsageError(f"image size {h}x{w} is not divisible by patch_size {patch_size}")
    return h // patch_size, w // patch_size


def patch_rc(patch: int | tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """``(row, col)`` of a patch given as a flat row-major index or as ``(row, col)``."""
    hp, wp = grid
    if isinstance(patch, int):
        if not 0 <= patch < hp * wp:
            raise UsageError(f"patch index {patch} outside the {hp}x{wp} grid")
        return divmod(patch, wp)
    r, c = (int(v) for v in patch)
    if not (0 <= r < hp and 0 <= c < wp):
        raise UsageError(f"patch (row, col) = ({r}, {c}) outside the {hp}x{wp} grid")
    return r, c
