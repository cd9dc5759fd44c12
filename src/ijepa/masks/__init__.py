"""Mask sampling for I-JEPA: pure, seeded, returns patch indices; depends only on torch.

``MultiBlockMaskGenerator`` samples context and target blocks, ``make_generator`` seeds it from
``(seed, step, rank)``, and ``MaskCollator`` wraps both as a DataLoader ``collate_fn``.
"""

from ijepa.masks.collator import MaskCollator
from ijepa.masks.multiblock import MultiBlockMaskGenerator
from ijepa.masks.rng import make_generator, mix_seed
from ijepa.masks.settings import MaskSamplingError, MaskStats

__all__ = [
    "MaskCollator",
    "MaskSamplingError",
    "MaskStats",
    "MultiBlockMaskGenerator",
    "make_generator",
    "mix_seed",
]
