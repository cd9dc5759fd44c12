"""Every masking strategy: shapes, bounds, disjointness, the paper's geometry, seeds, padding."""

from __future__ import annotations

import pytest
import torch

from ijepa.masks import (
    PAD,
    STRATEGIES,
    MaskCollator,
    MaskSamplingError,
    RasterMaskGenerator,
    make_generator,
    make_mask_sampler,
)
from ijepa.masks.pack import pack_grids, pad_indices

GRIDS = [(7, 7), (8, 8), (14, 14), (6, 10)]


def _sampler(strategy: str, grid: tuple[int, int], pad: bool = False):  # type: ignore[no-untyped-def]
    return make_mask_sampler(strategy, grid, pad=pad, min_keep=2)


def _rows(masks: torch.Tensor) -> list[set[int]]:
    """The patch sets of every (mask, image) row, padding removed."""
    return [set(r[r != PAD].tolist()) for r in masks.reshape(-1, masks.shape[-1])]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("pad", [False, True])
def test_masks_within_bounds_sorted_and_disjoint(
    strategy: str, grid: tuple[int, int], pad: bool
) -> None:
    sampler = _sampler(strategy, grid, pad)
    n = grid[0] * grid[1]
    for step in range(5):
        enc, pred = sampler(6, make_generator(3, step))
        assert enc.dtype == pred.dtype == torch.long
        assert enc.shape[:2] == (sampler.nenc, 6) and pred.shape[:2] == (sampler.npred, 6)
        for m in (enc, pred):
            valid = m[m != PAD]
            assert int(valid.min()) >= 0 and int(valid.max()) < n
            for row in m.reshape(-1, m.shape[-1]):
                k = int((row != PAD).sum())
                assert k >= 1
                assert bool((row[k:] == PAD).all())  # padding only at the end
                assert bool((row[1:k] > row[: k - 1]).all())  # strictly ascending
            if not pad:
                assert not bool((m == PAD).any())
        for b in range(6):
            context = set(enc[:, b][enc[:, b] != PAD].tolist())
            targets = set(pred[:, b][pred[:, b] != PAD].tolist())
            assert context and targets and not (context & targets)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_masks_other_seed_other_masks(strategy: str) -> None:
    a = _sampler(strategy, (14, 14))(8, make_generator(7, 11))
    b = _sampler(strategy, (14, 14))(8, make_generator(7, 11))
    c = _sampler(strategy, (14, 14))(8, make_generator(8, 11))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("grid", GRIDS)
def test_random_targets_are_sixty_percent_and_context_the_rest(grid: tuple[int, int]) -> None:
    n = grid[0] * grid[1]
    enc, pred = _sampler("random", grid)(16, make_generator(0, 0))
    assert pred.shape[-1] == round(0.6 * n) and enc.shape[-1] == n - round(0.6 * n)
    for ctx, tgt in zip(_rows(enc), _rows(pred), strict=True):
        assert ctx | tgt == set(range(n))
    # scattered: positions differ between images
    assert len({tuple(r) for r in pred[0].tolist()}) > 1


def test_random_ratio_range_is_drawn_per_batch() -> None:
    sampler = make_mask_sampler("random", (14, 14))
    sampler.ratio = (0.4, 0.6)
    lengths = {sampler(2, make_generator(0, s))[1].shape[-1] for s in range(20)}
    assert len(lengths) > 1 and all(78 <= k <= 118 for k in lengths)


@pytest.mark.parametrize("grid", GRIDS)
def test_block_is_one_rectangle_of_about_sixty_percent(grid: tuple[int, int]) -> None:
    H, W = grid
    n = H * W
    for step in range(10):
        enc, pred = _sampler("block", grid)(8, make_generator(1, step))
        for ctx, tgt in zip(_rows(enc), _rows(pred), strict=True):
            rows = {i // W for i in tgt}
            cols = {i % W for i in tgt}
            assert len(tgt) == len(rows) * len(cols)  # a full rectangle
            assert max(rows) - min(rows) + 1 == len(rows) < H
            assert max(cols) - min(cols) + 1 == len(cols) < W
            assert 0.3 * n <= len(tgt) <= 0.8 * n  # 0.6 of the grid, up to rounding and caps
            assert ctx | tgt == set(range(n))


@pytest.mark.parametrize("grid", GRIDS)
def test_raster_context_is_a_quadrant_and_targets_the_other_three(grid: tuple[int, int]) -> None:
    H, W = grid
    quads = []
    for r0, r1 in ((0, H // 2), (H // 2, H)):
        for c0, c1 in ((0, W // 2), (W // 2, W)):
            quads.append({r * W + c for r in range(r0, r1) for c in range(c0, c1)})
    seen = set()
    enc, pred = _sampler("raster", grid, pad=True)(32, make_generator(2, 0))
    for b in range(32):
        ctx = _rows(enc[:, b])[0]
        tgts = _rows(pred[:, b])
        q = quads.index(ctx)
        seen.add(q)
        assert tgts == [quads[i] for i in range(4) if i != q]  # in grid order, whole
    assert seen == {0, 1, 2, 3}


def test_raster_odd_grid_subsamples_unless_padded() -> None:
    enc, pred = RasterMaskGenerator(7)(16, make_generator(0, 0))
    assert enc.shape[-1] == pred.shape[-1] == 9  # the smallest quadrant, 3x3
    sampler = RasterMaskGenerator(7, pad=True)
    enc, pred = sampler(16, make_generator(0, 0))
    assert enc.shape[-1] == 16 and pred.shape[-1] == 16  # the largest, 4x4
    assert sampler.stats is not None and sampler.stats.context_dropped == 0.0
    assert sampler.stats.context_padding > 0.0
    covered = [_rows(enc[:, b])[0] | set().union(*_rows(pred[:, b])) for b in range(16)]
    assert all(c == set(range(49)) for c in covered)  # padded: no patch lost


def test_multiblock_pad_keeps_every_context_patch() -> None:
    plain = make_mask_sampler("multiblock", (14, 14))
    padded = make_mask_sampler("multiblock", (14, 14), pad=True)
    e0, p0 = plain(8, make_generator(5, 1))
    e1, p1 = padded(8, make_generator(5, 1))
    assert torch.equal(p0, p1)  # the same draws up to packing
    assert plain.stats is not None and padded.stats is not None
    assert plain.stats.context_dropped > 0.0 and padded.stats.context_dropped == 0.0
    assert e1.shape[-1] == max(len(r) for r in _rows(e1)) > e0.shape[-1]
    for b in range(8):  # the subsampled context is a subset of the full one
        assert _rows(e0[:, b])[0] <= _rows(e1[:, b])[0]
    sizes = sorted(len(r) for r in _rows(e1))
    assert abs(sum(sizes) / len(sizes) - padded.stats.context_mean) < 1e-9


def test_multiblock_pad_with_per_image_sizes_pads_targets() -> None:
    sampler = make_mask_sampler("multiblock", (14, 14), pad=True, per_image_size=True)
    _, pred = sampler(16, make_generator(0, 3))
    sizes = {len(r) for r in _rows(pred)}
    assert len(sizes) > 1 and pred.shape[-1] == max(sizes)
    assert sampler.stats is not None and sampler.stats.target_padding > 0.0


def test_pad_not_with_official_mode() -> None:
    with pytest.raises(ValueError, match="pad=True"):
        make_mask_sampler("multiblock", (14, 14), pad=True, mode="official")


def test_bad_strategy_and_infeasible_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown mask strategy 'grid'.*multiblock"):
        make_mask_sampler("grid", (14, 14))
    with pytest.raises(MaskSamplingError, match="at least 2x2"):
        make_mask_sampler("raster", (1, 8))
    with pytest.raises(MaskSamplingError, match="min_keep"):
        make_mask_sampler("random", (4, 4), min_keep=10)
    with pytest.raises(MaskSamplingError, match="min_keep"):
        make_mask_sampler("block", (4, 4), min_keep=10)
    with pytest.raises(ValueError, match="batch_size"):
        make_mask_sampler("block", (8, 8))(0, make_generator(0, 0))


def test_collator_drives_any_strategy_deterministically() -> None:
    samples = [(torch.zeros(1, 8, 8), 0)] * 4
    for strategy in STRATEGIES:
        a = MaskCollator(_sampler(strategy, (8, 8)), seed=3)
        b = MaskCollator(_sampler(strategy, (8, 8)), seed=3)
        for _ in range(3):
            _, ea, pa = a(samples)
            _, eb, pb = b(samples)
            assert torch.equal(ea, eb) and torch.equal(pa, pb)


def test_pack_helpers() -> None:
    mask = torch.tensor([[True, False, True, True], [False, True, False, False]])
    assert pad_indices(mask).tolist() == [[0, 2, 3], [1, PAD, PAD]]
    assert pad_indices(mask, 4).tolist() == [[0, 2, 3, PAD], [1, PAD, PAD, PAD]]
    with pytest.raises(ValueError, match="shorter"):
        pad_indices(mask, 2)
    g = torch.Generator().manual_seed(0)
    idx, stats = pack_grids(mask[None], pad=False, generator=g)
    assert idx.shape == (1, 2, 1) and stats.keep == 1 and stats.dropped == pytest.approx(0.5)
    idx, stats = pack_grids(mask[None], pad=True, generator=g)
    assert idx.shape == (1, 2, 3) and stats.padding == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="at least one patch"):
        pack_grids(torch.zeros(1, 1, 4, dtype=torch.bool), pad=True, generator=g)
