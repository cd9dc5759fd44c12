"""Similarity-search pictures: each query next to its nearest neighbours, one row per query."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ijepa.viz.common import new_figure, save_figure, to_display

__all__ = ["draw_neighbours"]


def draw_neighbours(
    queries: torch.Tensor,
    query_titles: Sequence[str],
    neighbours: torch.Tensor,
    neighbour_titles: Sequence[Sequence[str]],
    path: str | Path,
    *,
    matches: torch.Tensor | None = None,
) -> Path:
    """Write a PNG grid: row ``q`` shows query ``q`` then its ``k`` neighbours, best first.

    Args:
        queries: uint8 ``(Q, C, H, W)`` query images.
        query_titles: ``Q`` captions of the queries.
        neighbours: uint8 ``(Q, k, C, H', W')`` neighbour images.
        neighbour_titles: ``Q`` lists of ``k`` captions.
        path: the PNG file to write.
        matches: optional int ``(Q, k)``: 1 (the neighbour's label equals the query's) draws a
            green frame, 0 a red one, -1 (no label to compare) none.

    Returns:
        ``path``.
    """
    if queries.ndim != 4 or neighbours.ndim != 5 or neighbours.shape[0] != queries.shape[0]:
        raise ValueError(
            f"queries must be (Q, C, H, W) and neighbours (Q, k, C, H, W), got "
            f"{tuple(queries.shape)} and {tuple(neighbours.shape)}"
        )
    q, k = int(neighbours.shape[0]), int(neighbours.shape[1])
    if len(query_titles) != q or len(neighbour_titles) != q:
        raise ValueError(f"need {q} query titles and {q} lists of neighbour titles")
    fig = new_figure(1.5 * (k + 1), 1.75 * q)
    axes = fig.subplots(q, k + 1, squeeze=False)
    shown_q = to_display(queries)
    flat = to_display(neighbours.reshape(q * k, *neighbours.shape[2:]))  # (Q * k, H, W, 3)
    shown_n = flat.reshape(q, k, *flat.shape[1:])
    for row in range(q):
        ax = axes[row][0]
        ax.imshow(shown_q[row], interpolation="nearest")
        ax.set_title(query_titles[row], fontsize=7, fontweight="bold")
        for col in range(k):
            ax = axes[row][col + 1]
            ax.imshow(shown_n[row, col], interpolation="nearest")
            ax.set_title(neighbour_titles[row][col], fontsize=7)
            if matches is not None and int(matches[row, col]) >= 0:
                colour = "#2a9d3f" if int(matches[row, col]) > 0 else "#d1342f"
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.5)
    for ax in (a for row_axes in axes for a in row_axes):
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)
