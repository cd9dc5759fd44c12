"""Default-mode multi-block sampling: shapes, sizes, overlap, min_keep, coverage, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from ijepa.masks import MultiBlockMaskGenerator, make_generator

H = W = 14


def _rect(indices: torch.Tensor, width: int) -> tuple[int, int, int, int]:
    """Bounding box ``(top, left, h, w)`` of flat indices."""
    rows, cols = indices // width, indices % width
    top, left = int(rows.min()), int(cols.min())
    return top, left, int(rows.max()) - top + 1, int(cols.max()) - left + 1


def _side_bounds(
    scale: tuple[float, float], aspect: tuple[float, float], n: int, cap: int
) -> tuple[int, int, int, int]:
    """Smallest and largest h and w the size rule can give (rounding is monotone)."""
    lo_n, hi_n = n * scale[0], n * scale[1]
    h_lo = max(1, min(cap, round(math.sqrt(lo_n * aspect[0]))))
    h_hi = max(1, min(cap, round(math.sqrt(hi_n * aspect[1]))))
    w_lo = max(1, min(cap, round(math.sqrt(lo_n / aspect[1]))))
    w_hi = max(1, min(cap, round(math.sqrt(hi_n / aspect[0]))))
    return h_lo, h_hi, w_lo, w_hi


@pytest.mark.parametrize("batch", [1, 5, 16])
@pytest.mark.parametrize("nenc,npred", [(1, 4), (2, 3)])
def test_shapes_dtype_sorted_in_range(batch: int, nenc: int, npred: int) -> None:
    gen = MultiBlockMaskGenerator((H, W), nenc=nenc, npred=npred)
    enc, pred = gen(batch, make_generator(0, 1))
    assert enc.dtype == torch.long and pred.dtype == torch.long
    assert enc.shape[:2] == (nenc, batch) and pred.shape[:2] == (npred, batch)
    for m in (enc, pred):
        assert int(m.min()) >= 0 and int(m.max()) < H * W
        assert bool((m[..., 1:] > m[..., :-1]).all())  # strictly ascending: sorted, no repeats


def test_rectangular_grid_and_int_size() -> None:
    enc, pred = MultiBlockMaskGenerator((6, 10), min_keep=4)(8, make_generator(1, 2))
    assert int(enc.max()) < 60 and int(pred.max()) < 60
    gen = MultiBlockMaskGenerator(14)
    assert gen.input_size == (14, 14)


def test_target_blocks_are_rectangles_with_bounded_sides() -> None:
    scale, aspect = (0.15, 0.2), (0.75, 1.5)
    gen = MultiBlockMaskGenerator((H, W), pred_mask_scale=scale, aspect_ratio=aspect)
    h_lo, h_hi, w_lo, w_hi = _side_bounds(scale, aspect, H * W, H - 1)
    seen_h, seen_w = set(), set()
    for step in range(40):
        _, pred = gen(4, make_generator(0, step))
        k = pred.shape[-1]
        for m in pred.reshape(-1, k):
            _, _, h, w = _rect(m, W)
            assert h * w == k  # the block is returned whole
            assert h_lo <= h <= h_hi and w_lo <= w <= w_hi
            seen_h.add(h)
            seen_w.add(w)
    assert len(seen_h) > 1 and len(seen_w) > 1  # sizes do vary


def test_context_side_is_at_most_grid_minus_one_and_moves() -> None:
    gen = MultiBlockMaskGenerator((H, W), allow_overlap=True, npred=1)
    corners = set()
    for step in range(30):
        enc, _ = gen(8, make_generator(0, step))
        for m in enc[0]:
            top, left, h, w = _rect(m, W)
            assert h == w == H - 1  # scale 0.85-1.0 with aspect 1, shrunk below the grid
            assert len(m) == h * w  # allow_overlap: the context block is whole
            corners.add((top, left))
    assert corners == {(0, 0), (0, 1), (1, 0), (1, 1)}  # the official sampler only gives (0, 0)


@pytest.mark.parametrize("per_image_size", [False, True])
def test_no_overlap_and_min_keep(per_image_size: bool) -> None:
    min_keep = 10
    gen = MultiBlockMaskGenerator((H, W), min_keep=min_keep, per_image_size=per_image_size)
    for step in range(10):
        enc, pred = gen(32, make_generator(2, step))
        assert enc.shape[-1] >= min_keep
        for b in range(enc.shape[1]):
            ctx = set(enc[:, b].flatten().tolist())
            tgt = set(pred[:, b].flatten().tolist())
            assert not ctx & tgt


def test_context_is_block_minus_targets_for_single_image() -> None:
    # with B=1 nothing is dropped: context = (its block) minus (union of targets)
    gen = MultiBlockMaskGenerator((H, W))
    for step in range(20):
        enc, pred = gen(1, make_generator(3, step))
        ctx = set(enc[0, 0].tolist())
        tgt = set(pred[:, 0].flatten().tolist())
        # the context block is 13x13, at one of the 4 corners where it fits
        n = H - 1
        blocks = [
            {(top + i) * W + left + j for i in range(n) for j in range(n)}
            for top in (0, 1)
            for left in (0, 1)
        ]
        assert any(ctx == block - tgt for block in blocks)


def test_per_image_size_equalises_targets_by_random_subset() -> None:
    gen = MultiBlockMaskGenerator((H, W), per_image_size=True)
    _, pred = gen(64, make_generator(0, 0))
    stats = gen.stats
    assert stats is not None
    assert pred.shape[-1] == stats.target_keep < stats.target_mean  # sizes differed, min kept
    # a subsampled target is no longer a full rectangle, but stays inside one of allowed size
    partial = [
        m for m in pred.reshape(-1, pred.shape[-1]) if len(m) < _rect(m, W)[2] * _rect(m, W)[3]
    ]
    assert partial


def test_last_row_and_column_are_reachable() -> None:
    gen = MultiBlockMaskGenerator((H, W))
    last_row = set(range((H - 1) * W, H * W))
    last_col = set(range(W - 1, H * W, W))
    hit_t = {"row": False, "col": False}
    hit_c = {"row": False, "col": False}
    for step in range(20):
        enc, pred = gen(16, make_generator(0, step))
        t, c = set(pred.flatten().tolist()), set(enc.flatten().tolist())
        hit_t["row"] |= bool(t & last_row)
        hit_t["col"] |= bool(t & last_col)
        hit_c["row"] |= bool(c & last_row)
        hit_c["col"] |= bool(c & last_col)
    assert all(hit_t.values()) and all(hit_c.values())


def test_target_coverage_has_no_zero_patch() -> None:
    gen = MultiBlockMaskGenerator((H, W))
    counts = torch.zeros(H * W)
    ctx_counts = torch.zeros(H * W)
    for step in range(50):
        enc, pred = gen(16, make_generator(7, step))
        counts += torch.bincount(pred.flatten(), minlength=H * W)
        ctx_counts += torch.bincount(enc.flatten(), minlength=H * W)
    assert int((counts == 0).sum()) == 0
    assert int((ctx_counts == 0).sum()) == 0
    # corners are covered less than the centre (blocks must fit), but not absurdly so
    grid = counts.reshape(H, W)
    assert float(grid[0, 0]) > 0.01 * float(grid[H // 2, W // 2])  # about 0.03 expected


def test_random_drop_does_not_favour_top_left() -> None:
    # default mode drops a random subset to reach the batch minimum: kept context patches are
    # spread over the rows as much as the sampled contexts are (B=1: nothing dropped)
    gen = MultiBlockMaskGenerator((H, W))
    full_rows, kept_rows = [], []
    for step in range(30):
        enc1, _ = gen(1, make_generator(5, step))
        full_rows.append((enc1 // W).double().mean())
        enc, _ = gen(64, make_generator(5, step))
        assert gen.stats is not None and gen.stats.context_dropped > 0.2
        kept_rows.append((enc // W).double().mean())
    full, kept = torch.stack(full_rows).mean(), torch.stack(kept_rows).mean()
    assert abs(float(kept - full)) < 0.4  # truncation to the first indices would give about -2


def test_same_seed_step_rank_same_masks() -> None:
    gen = MultiBlockMaskGenerator((H, W), per_image_size=True)
    torch.manual_seed(1)  # the global RNG must play no part
    a = gen(16, make_generator(11, 5, 1))
    torch.manual_seed(2)
    b = gen(16, make_generator(11, 5, 1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in (make_generator(11, 6, 1), make_generator(11, 5, 2), make_generator(12, 5, 1)):
        c = gen(16, other)
        assert not (c[0].shape == a[0].shape and torch.equal(c[0], a[0]))
        assert not (c[1].shape == a[1].shape and torch.equal(c[1], a[1]))


def test_independent_scale_and_aspect() -> None:
    gen = MultiBlockMaskGenerator((H, W), npred=1)
    area, ratio = [], []
    for step in range(300):
        _, pred = gen(1, make_generator(0, step))
        _, _, h, w = _rect(pred[0, 0], W)
        area.append(h * w)
        ratio.append(h / w)
    corr = torch.corrcoef(torch.tensor([area, ratio], dtype=torch.float64))[0, 1]
    assert abs(float(corr)) < 0.25  # official mode gives about 0.56


def test_stats_report_sizes() -> None:
    gen = MultiBlockMaskGenerator((H, W))
    assert gen.stats is None
    enc, pred = gen(8, make_generator(0, 0))
    s = gen.stats
    assert s is not None
    assert s.context_keep == enc.shape[-1] and s.target_keep == pred.shape[-1]
    assert s.context_mean >= s.context_keep and 0.0 <= s.context_dropped < 1.0
    assert s.size_draws >= 1 and s.position_rounds >= 1 and s.relaxed == 0
