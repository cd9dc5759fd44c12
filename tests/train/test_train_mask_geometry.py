"""mask.geometry=auto: small patch grids get fewer target blocks and a lower min_keep."""

from __future__ import annotations

import torch

from ijepa.config import apply_overrides
from ijepa.masks import SMALL_GRID
from ijepa.recipes import preset
from ijepa.train.build import build_mask_generator, mask_counts


def test_counts_by_grid():
    assert mask_counts("fixed", (7, 7), 4, 10) == (4, 10)
    assert mask_counts("auto", (7, 7), 4, 10) == (2, 4)
    assert mask_counts("auto", (7, 7), 1, 3) == (1, 3)  # only ever lowered
    assert mask_counts("auto", (SMALL_GRID, SMALL_GRID), 4, 10) == (4, 10)


def test_auto_geometry_keeps_a_larger_context_on_a_7x7_grid():
    base = apply_overrides(preset("demo"), ["data.crop_size=28", "mask.patch_size=4"])
    fixed = build_mask_generator(apply_overrides(base, ["mask.geometry=fixed"]))
    auto = build_mask_generator(apply_overrides(base, ["mask.geometry=auto"]))
    sizes = {}
    for name, gen in (("fixed", fixed), ("auto", auto)):
        enc, pred = zip(
            *(gen(64, torch.Generator().manual_seed(i)) for i in range(20)), strict=True
        )
        sizes[name] = (sum(e.shape[-1] for e in enc) / 20, pred[0].shape[0])
    assert sizes["fixed"][1] == 4 and sizes["auto"][1] == 2
    assert sizes["auto"][0] > sizes["fixed"][0] + 5  # patches kept in each context


def test_cpu_presets_adapt_to_the_grid():
    """A user's 28 px data gets 2 target blocks from the CPU presets; 224 px data gets 4."""
    for name in ("demo", "small-cpu"):
        small = apply_overrides(preset(name), ["data.crop_size=28", "mask.patch_size=4"])
        large = apply_overrides(preset(name), ["data.crop_size=224", "mask.patch_size=16"])
        g = torch.Generator().manual_seed(0)
        assert build_mask_generator(small)(8, g)[1].shape[0] == 2
        assert build_mask_generator(large)(8, g)[1].shape[0] == 4
