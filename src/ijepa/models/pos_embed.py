"""Fixed 2-D sine-cosine positional tables for patch grids.

Layout per patch at (row ``r``, column ``c``), with ``D`` the embedding width and
``w_k = 10000 ** (-k / (D / 4))`` for ``k = 0 .. D/4 - 1``::

    [sin(c * w), cos(c * w), sin(r * w), cos(r * w)]

i.e. the first half of the vector encodes the column and the second half the row. This is the
convention of the official I-JEPA (and MAE) code; the table is computed in float64 and rounded
once to the requested dtype, so it matches the ``pos_embed`` stored in official checkpoints.
"""

from __future__ import annotations

import torch

__all__ = ["get_1d_sincos_pos_embed", "get_2d_sincos_pos_embed", "to_2tuple"]


def to_2tuple(value: int | tuple[int, int] | list[int], name: str = "size") -> tuple[int, int]:
    """Return ``(value, value)`` for an int, or the pair itself for a 2-sequence.

    Raises:
        ValueError: if ``value`` is neither a positive int nor a pair of positive ints.
    """
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def get_1d_sincos_pos_embed(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sine-cosine features of 1-D positions.

    Args:
        embed_dim: output width ``E`` (even).
        positions: positions, any shape with ``M`` elements (flattened).

    Returns:
        Tensor ``(M, E)`` = ``[sin(p * w), cos(p * w)]`` with ``w_k = 10000 ** (-k / (E / 2))``,
        in the dtype of ``positions``.
    """
    if embed_dim <= 0 or embed_dim % 2 != 0:
        raise ValueError(f"embed_dim must be a positive even number, got {embed_dim}")
    half = embed_dim // 2
    exponent = torch.arange(half, dtype=positions.dtype, device=positions.device) / half
    omega = 1.0 / (10000.0**exponent)  # (E/2,)
    angles = positions.reshape(-1, 1) * omega.reshape(1, -1)  # (M, E/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def get_2d_sincos_pos_embed(
    embed_dim: int,
    grid_size: int | tuple[int, int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = "cpu",
) -> torch.Tensor:
    """Fixed 2-D sine-cosine table for a patch grid (no class token).

    Args:
        embed_dim: width ``D``; must be divisible by 4.
        grid_size: ``Hp`` (square grid) or ``(Hp, Wp)`` patches.
        dtype: dtype of the returned table (computed in float64, then rounded once).
        device: device of the returned table.

    Returns:
        Tensor ``(Hp * Wp, D)``; row ``r * Wp + c`` (row-major patch order) holds
        ``[sin(c*w), cos(c*w), sin(r*w), cos(r*w)]``.
    """
    if embed_dim % 4 != 0:
        raise ValueError(
            f"embed_dim must be divisible by 4 for a 2-D sin-cos table, got {embed_dim}"
        )
    rows, cols = to_2tuple(grid_size, "grid_size")
    # Always compute on the CPU in float64: exact, independent of any default-device context.
    r = torch.arange(rows, dtype=torch.float64, device="cpu")
    c = torch.arange(cols, dtype=torch.float64, device="cpu")
    rr, cc = torch.meshgrid(r, c, indexing="ij")  # (Hp, Wp) each
    emb_col = get_1d_sincos_pos_embed(embed_dim // 2, cc)  # (Hp*Wp, D/2), first half: column
    emb_row = get_1d_sincos_pos_embed(embed_dim // 2, rr)  # (Hp*Wp, D/2), second half: row
    table = torch.cat([emb_col, emb_row], dim=1)
    return table.to(device=device, dtype=dtype)
