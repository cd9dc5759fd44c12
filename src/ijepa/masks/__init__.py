"""Mask sampling for I-JEPA: pure, seeded, returns patch indices; depends only on torch.

``MultiBlockMaskGenerator`` samples context and target blocks (the paper's strategy); the
ablation strategies ``random``, ``block`` and ``raster`` live in :mod:`ijepa.masks.strategies`
and ``make_mask_sampler`` builds any of them by name. ``step_masks`` is the one seeding rule (the
global batch of a step sampled from ``make_generator(seed, step)``, each rank keeping its
columns) that training, ``MaskCollator`` (a DataLoader ``collate_fn``) and the viz follow. Masks are
subsampled to one length per batch, or padded with ``PAD`` (-1) when asked to keep every patch.
"""

from ijepa.masks.collator import MaskCollator
from ijepa.masks.multiblock import MultiBlockMaskGenerator
from ijepa.masks.pack import PAD
from ijepa.masks.rng import make_generator, mix_seed, step_masks
from ijepa.masks.settings import (
    SMALL_GRID,
    SMALL_GRID_MIN_KEEP,
    SMALL_GRID_TARGETS,
    MaskSamplingError,
    MaskStats,
)
from ijepa.masks.strategies import (
    STRATEGIES,
    BlockMaskGenerator,
    MaskSampler,
    RandomMaskGenerator,
    RasterMaskGenerator,
    make_mask_sampler,
)

__all__ = [
    "PAD",
    "SMALL_GRID",
    "SMALL_GRID_MIN_KEEP",
    "SMALL_GRID_TARGETS",
    "STRATEGIES",
    "BlockMaskGenerator",
    "MaskCollator",
    "MaskSampler",
    "MaskSamplingError",
    "MaskStats",
    "MultiBlockMaskGenerator",
    "RandomMaskGenerator",
    "RasterMaskGenerator",
    "make_generator",
    "make_mask_sampler",
    "mix_seed",
    "step_masks",
]
