"""Deterministic random generators for mask sampling, keyed by ``(seed, step, rank)``.

The masks of a training step must be a pure function of the run's seed, the global step and the
data-parallel rank, so that a resumed run (or another rank replaying a step) sees the same masks.
Adding the three numbers (``seed + step``) makes different triples collide (seed 1 step 0 equals
seed 0 step 1); we mix them with the SplitMix64 finaliser instead, a bijection on 64-bit integers.
"""

from __future__ import annotations

import torch

__all__ = ["make_generator", "mix_seed"]

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
