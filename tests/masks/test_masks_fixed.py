"""Static mask shapes (``fixed_sizes``): every batch has the same context and target lengths."""

from __future__ import annotations

import pytest
import torch

from ijepa.masks import MaskSamplingError, MultiBlockMaskGenerator, make_generator
from ijepa.masks.fixed import context_sizes, fixed_sizes_for, smallest_target


def _check_batch(enc: torch.Tensor, pred: torch.Tensor, cells: int) -> None:
    for m in (enc, pred):
        assert int(m.min()) >= 0 and int(m.max()) < cells
        assert bool((m[..., 1:] > m[..., :-1]).all())  # sorted, no repeats
    for b in range(enc.shape[1]):
        targets = set(pred[:, b].flatten().tolist())
        for ctx in enc[:, b]:
            assert not targets & set(ctx.tolist())  # no overlap (allow_overlap=False)


@pytest.mark.parametrize(("grid", "min_keep"), [((14, 14), 10), ((7, 7), 4), ((6, 10), 4)])
@pytest.mark.parametrize("per_image_size", [False, True])
def test_every_batch_has_the_same_shapes(
    grid: tuple[int, int], min_keep: int, per_image_size: bool
) -> None:
    gen = MultiBlockMaskGenerator(
        grid, min_keep=min_keep, fixed_sizes=True, per_image_size=per_image_size
    )
    assert gen.fixed_sizes is not None
    kc, kt = gen.fixed_sizes
    assert kc >= min_keep and kt >= 1
    for step in range(12):
        for batch in (1, 8, 32):
            enc, pred = gen(batch, make_generator(0, step))
            assert enc.shape == (1, batch, kc) and pred.shape == (4, batch, kt)
            _check_batch(enc, pred, grid[0] * grid[1])


def test_sizes_follow_the_settings() -> None:
    gen = MultiBlockMaskGenerator((14, 14), min_keep=10, fixed_sizes=True)
    s = gen.settings
    kc, kt = fixed_sizes_for(s)
    assert gen.fixed_sizes == (kc, kt)
    assert kt == smallest_target(s) == 25  # 5 x 5 at scale 0.15, aspect ~1 on 14 x 14
    sizes = context_sizes(s, 4000, torch.Generator().manual_seed(1))
    below = float((sizes < kc).double().mean())
    assert 0.03 < below < 0.2  # a low quantile of the context sizes (0.1 by design)
    # targets are random subsets of whole blocks of at least kt patches
    _, pred = gen(64, make_generator(0, 3))
    rows, cols = pred // 14, pred % 14
    box = (rows.amax(-1) - rows.amin(-1) + 1) * (cols.amax(-1) - cols.amin(-1) + 1)
    assert bool((box >= kt).all()) and bool((box > kt).any())


def test_explicit_sizes_and_errors() -> None:
    gen = MultiBlockMaskGenerator((14, 14), fixed_sizes=(40, 20))
    enc, pred = gen(4, make_generator(0, 0))
    assert enc.shape[-1] == 40 and pred.shape[-1] == 20
    with pytest.raises(MaskSamplingError, match="smallest target"):
        MultiBlockMaskGenerator((14, 14), fixed_sizes=(40, 26))
    with pytest.raises(ValueError, match="mode='default'"):
        MultiBlockMaskGenerator((14, 14), mode="official", fixed_sizes=True)
    with pytest.raises(ValueError, match="pad=True"):
        MultiBlockMaskGenerator((14, 14), pad=True, fixed_sizes=True)


def test_fixed_masks_are_a_pure_function_of_the_generator() -> None:
    a = MultiBlockMaskGenerator((8, 8), min_keep=4, fixed_sizes=True)
    b = MultiBlockMaskGenerator((8, 8), min_keep=4, fixed_sizes=True)
    for x, y in zip(a(16, make_generator(3, 7)), b(16, make_generator(3, 7)), strict=True):
        assert torch.equal(x, y)
