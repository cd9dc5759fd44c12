"""Deterministic random generators for mask sampling, and the package's one mask seeding rule.

The masks of a training step must be a pure function of the run's seed and the global step, so
that a resumed run (or another rank replaying a step) sees the same masks. :func:`step_masks` is
the rule that training, :class:`~ijepa.masks.MaskCollator` and the pictures of :mod:`ijepa.viz`
all follow: the whole global batch of a step is sampled from ``make_generator(seed, step)`` and
each rank keeps its own columns, so the masks never depend on the number of processes.
Adding the three numbers (``seed + step``) makes different triples collide (seed 1 step 0 equals
seed 0 step 1); we mix them with the SplitMix64 finaliser instead, a bijection on 64-bit integers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["make_generator", "mix_seed", "step_masks"]

#: A mask sampler: ``(batch_size, generator) -> (masks_enc (nenc, B, Kc), masks_pred (M, B, Kt))``.
Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _splitmix64(x: int) -> int:
    """One SplitMix64 step: a bijective, well-mixing map of a 64-bit integer."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _check_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"make_generator: {name} must be an int, got {type(value).__name__}")
    return value & _MASK64


def mix_seed(seed: int, step: int, rank: int = 0) -> int:
    """Hash ``(seed, step, rank)`` into one 64-bit seed.

    For a fixed ``seed``, distinct ``(step, rank)`` pairs give distinct values (each stage is a
    bijection); across seeds a collision has probability about 2**-64.

    Args:
        seed: The run's seed.
        step: The global training step (or any counter).
        rank: The data-parallel rank.

    Returns:
        An integer in ``[0, 2**64)``.
    """
    h = _splitmix64(_check_int("seed", seed))
    h = _splitmix64(h ^ _check_int("step", step))
    return _splitmix64(h ^ _check_int("rank", rank))


def make_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by a hash of ``(seed, step, rank)``.

    Args:
        seed: The run's seed.
        step: The global training step.
        rank: The data-parallel rank.

    Returns:
        A fresh generator; the same triple always gives the same random stream.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(mix_seed(seed, step, rank))
    return gen


def step_masks(
    sampler: Sampler,
    seed: int,
    step: int,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of ``rank``'s images at global step ``step``: the one mask seeding rule.

    The global batch (``batch_size * world_size`` images) is sampled from
    ``make_generator(seed, step)``; rank ``r`` keeps images ``[r * batch_size, (r + 1) *
    batch_size)``, the same rows of the global batch as its images (see
    :func:`ijepa.train.batches.rank_slice`).

    Args:
        sampler: the mask sampler.
        seed: the run's seed.
        step: the global step (0-based).
        batch_size: images per process.
        rank: this process's rank.
        world_size: number of processes.

    Returns:
        ``masks_enc (nenc, batch_size, Kc)`` and ``masks_pred (M, batch_size, Kt)``.

    Raises:
        ValueError: ``rank`` is not in ``[0, world_size)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"step_masks: rank {rank} is not in [0, world_size={world_size})")
    masks_enc, masks_pred = sampler(batch_size * world_size, make_generator(seed, step))
    if world_size == 1:
        return masks_enc, masks_pred
    mine = slice(rank * batch_size, (rank + 1) * batch_size)
    return masks_enc[:, mine].contiguous(), masks_pred[:, mine].contiguous()
