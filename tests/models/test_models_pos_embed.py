"""The fixed 2-D sin-cos table matches the official layout, entry by entry."""

from __future__ import annotations

import math

import pytest
import torch

from ijepa.models import get_1d_sincos_pos_embed, get_2d_sincos_pos_embed


def spec_entry(dim: int, row: int, col: int) -> list[float]:
    """[sin(c*w), cos(c*w), sin(r*w), cos(r*w)] with w_k = 10000^(-k/(D/4)), in float64."""
    quarter = dim // 4
    w = [10000.0 ** (-k / quarter) for k in range(quarter)]
    return (
        [math.sin(col * wk) for wk in w]
        + [math.cos(col * wk) for wk in w]
        + [math.sin(row * wk) for wk in w]
        + [math.cos(row * wk) for wk in w]
    )


def test_hand_computed_entry() -> None:
    # D = 8: w = (1, 0.01). Patch at row 2, column 3 of a 3 x 4 grid is row-major index 11.
    table = get_2d_sincos_pos_embed(8, (3, 4), dtype=torch.float64)
    expected = [
        math.sin(3.0), math.sin(0.03), math.cos(3.0), math.cos(0.03),
        math.sin(2.0), math.sin(0.02), math.cos(2.0), math.cos(0.02),
    ]  # fmt: skip
    assert table.shape == (12, 8)
    torch.testing.assert_close(table[11], torch.tensor(expected, dtype=torch.float64))
    # The origin patch: all sines 0, all cosines 1.
    torch.testing.assert_close(
        table[0], torch.tensor([0, 0, 1, 1, 0, 0, 1, 1.0], dtype=torch.float64)
    )


@pytest.mark.parametrize(("dim", "grid"), [(192, 14), (1280, 16), (384, (3, 5))])
def test_whole_table_matches_formula(dim: int, grid: int | tuple[int, int]) -> None:
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    table = get_2d_sincos_pos_embed(dim, grid)
    assert table.dtype == torch.float32
    assert table.shape == (rows * cols, dim)
    # Check a handful of patches, including the last row and column, against float64 math.
    for r, c in [(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1), (rows // 2, 1)]:
        expected = torch.tensor(spec_entry(dim, r, c), dtype=torch.float64).float()
        torch.testing.assert_close(table[r * cols + c], expected, atol=1e-7, rtol=0)


def test_first_half_encodes_column_second_half_row() -> None:
    table = get_2d_sincos_pos_embed(16, (4, 4)).view(4, 4, 16)
    # Along a row (fixed r), only the first half changes; along a column only the second half.
    assert torch.equal(table[2, :, 8:], table[2, :1, 8:].expand(4, 8))
    assert torch.equal(table[:, 1, :8], table[:1, 1, :8].expand(4, 8))
    assert not torch.equal(table[2, 0, :8], table[2, 3, :8])


def test_1d_table_layout() -> None:
    emb = get_1d_sincos_pos_embed(4, torch.tensor([0.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(
        emb[1],
        torch.tensor(
            [math.sin(5), math.sin(0.05), math.cos(5), math.cos(0.05)], dtype=torch.float64
        ),
    )


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        get_2d_sincos_pos_embed(6, 4)
    with pytest.raises(ValueError, match="grid_size"):
        get_2d_sincos_pos_embed(8, (0, 4))
