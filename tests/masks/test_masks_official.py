"""Official mode: the official sampler's sizes and biases, but seeded and bounded."""

from __future__ import annotations

import logging

import pytest
import torch

from ijepa.masks import MaskSamplingError, MultiBlockMaskGenerator, make_generator
from ijepa.masks.blocks import official_block_size

H = W = 14


def _rect(indices: torch.Tensor, width: int) -> tuple[int, int, int, int]:
    rows, cols = indices // width, indices % width
    top, left = int(rows.min()), int(cols.min())
    return top, left, int(rows.max()) - top + 1, int(cols.max()) - left + 1


def test_official_size_formula() -> None:
    # 14x14, scale (0.15, 0.2), aspect (0.75, 1.5): the same u drives both
    # u=0: n=int(29.4)=29, h=round(sqrt(29*0.75))=5, w=round(sqrt(29/0.75))=6
    assert official_block_size(0.0, (0.15, 0.2), (0.75, 1.5), H, W) == (5, 6)
    # u->1: n=int(39.2)=39, h=round(sqrt(58.5))=8, w=round(sqrt(26))=5
    assert official_block_size(0.999999, (0.15, 0.2), (0.75, 1.5), H, W) == (8, 5)
    # the context (aspect 1, scale 0.85-1.0) is always shrunk to 13x13
    for u in (0.0, 0.5, 0.999):
        assert official_block_size(u, (0.85, 1.0), (1.0, 1.0), H, W) == (13, 13)


def test_one_target_size_per_batch_and_full_rectangles() -> None:
    gen = MultiBlockMaskGenerator((H, W), mode="official")
    for step in range(10):
        _, pred = gen(16, make_generator(0, step))
        k = pred.shape[-1]
        shapes = {_rect(m, W)[2:] for m in pred.reshape(-1, k)}
        assert len(shapes) == 1  # one (h, w) for the whole batch
        h, w = shapes.pop()
        assert h * w == k and k > gen.settings.min_keep


def test_scale_and_aspect_are_correlated() -> None:
    gen = MultiBlockMaskGenerator((H, W), mode="official", npred=1)
    area, ratio = [], []
    for step in range(300):
        _, pred = gen(1, make_generator(0, step))
        _, _, h, w = _rect(pred[0, 0], W)
        area.append(h * w)
        ratio.append(h / w)
    corr = torch.corrcoef(torch.tensor([area, ratio], dtype=torch.float64))[0, 1]
    assert float(corr) > 0.35  # default mode gives about 0


def test_last_row_and_column_never_used() -> None:
    # the exclusive corner bound: no block reaches the last row or column (flaws 3 and 6)
    gen = MultiBlockMaskGenerator((H, W), mode="official")
    used = torch.zeros(H * W)
    for step in range(40):
        enc, pred = gen(16, make_generator(1, step))
        used += torch.bincount(torch.cat([enc.flatten(), pred.flatten()]), minlength=H * W)
    grid = used.reshape(H, W)
    assert float(grid[-1].sum()) == 0 and float(grid[:, -1].sum()) == 0
    assert int((grid[:-1, :-1] == 0).sum()) == 0  # everything else is used


def test_context_block_pinned_top_left_and_truncated_to_smallest_indices() -> None:
    gen = MultiBlockMaskGenerator((H, W), mode="official")
    top_left = {r * W + c for r in range(H - 1) for c in range(W - 1)}
    truncated = 0
    for step in range(10):
        enc, pred = gen(32, make_generator(4, step))
        assert gen.stats is not None
        if gen.stats.relaxed:
            continue
        kc = enc.shape[-1]
        for b in range(enc.shape[1]):
            full = sorted(top_left - set(pred[:, b].flatten().tolist()))
            assert enc[0, b].tolist() == full[:kc]  # truncation keeps the first indices
            truncated += len(full) > kc
    assert truncated > 0


def test_strictly_more_than_min_keep() -> None:
    for min_keep in (10, 29):  # 29: the smallest target block has 30 patches
        gen = MultiBlockMaskGenerator((H, W), mode="official", min_keep=min_keep)
        for step in range(5):
            enc, pred = gen(8, make_generator(0, step))
            assert enc.shape[-1] > min_keep and pred.shape[-1] > min_keep


def test_tolerance_relaxation_lets_context_overlap(caplog: pytest.LogCaptureFixture) -> None:
    # 8x8 grid, two 5x5 targets inside a 7x7 context pinned at (0, 0): with one or both targets
    # removed the context keeps at most 24 patches, not more than min_keep=24, so only the fully
    # relaxed context is valid
    gen = MultiBlockMaskGenerator(
        (8, 8),
        enc_mask_scale=(1.0, 1.0),
        pred_mask_scale=(0.45, 0.45),
        aspect_ratio=(1.0, 1.0),
        npred=2,
        min_keep=24,
        mode="official",
    )
    with caplog.at_level(logging.WARNING, logger="ijepa.masks"):
        enc, pred = gen(4, make_generator(0, 0))
        gen(4, make_generator(0, 1))
    assert gen.stats is not None and gen.stats.relaxed == 4
    assert gen.stats.position_rounds == 2 * 20 + 1
    assert enc.shape == (1, 4, 49)
    assert set(enc[0, 0].tolist()) & set(pred[:, 0].flatten().tolist())
    assert sum("relaxation" in r.getMessage() for r in caplog.records) == 1  # warned once


def test_deterministic_with_generator() -> None:
    gen = MultiBlockMaskGenerator((H, W), mode="official")
    torch.manual_seed(1)  # unlike the official code, positions do not use the global RNG
    a = gen(8, make_generator(9, 3))
    torch.manual_seed(2)
    b = gen(8, make_generator(9, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = gen(8, make_generator(9, 4))
    assert not (c[1].shape == a[1].shape and torch.equal(c[1], a[1]))


def test_small_grid_official_settings_raise_instead_of_hanging() -> None:
    # 28 px images with patch 4: most target sizes (6-9 patches) are not more than min_keep=10,
    # and the official sampler would loop forever on those batches (issue #68)
    with pytest.raises(MaskSamplingError, match=r"loop forever.*input_size=\(7, 7\).*min_keep=10"):
        MultiBlockMaskGenerator((7, 7), mode="official", min_keep=10)
    enc, pred = MultiBlockMaskGenerator((7, 7), mode="official", min_keep=4)(
        32, make_generator(0, 0)
    )
    assert enc.shape[:2] == (1, 32) and pred.shape[:2] == (4, 32)


def test_per_image_size_rejected() -> None:
    with pytest.raises(ValueError, match="per_image_size"):
        MultiBlockMaskGenerator((H, W), mode="official", per_image_size=True)
