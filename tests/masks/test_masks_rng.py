"""make_generator: deterministic, and distinct for distinct (seed, step, rank) triples."""

from __future__ import annotations

import itertools

import pytest
import torch

from ijepa.masks import make_generator, mix_seed


def _draw(seed: int, step: int, rank: int = 0) -> torch.Tensor:
    return torch.rand(8, generator=make_generator(seed, step, rank))


def test_same_triple_same_stream() -> None:
    assert torch.equal(_draw(3, 17, 2), _draw(3, 17, 2))


def test_distinct_triples_distinct_seeds() -> None:
    triples = list(itertools.product(range(6), range(6), range(4)))
    seeds = {mix_seed(*t) for t in triples}
    assert len(seeds) == len(triples)


def test_not_additive() -> None:
    # seed + step would make these collide
    assert mix_seed(1, 0) != mix_seed(0, 1)
    assert not torch.equal(_draw(1, 0), _draw(0, 1))
    assert not torch.equal(_draw(0, 0, 1), _draw(0, 1, 0))


def test_rank_default_is_zero_and_large_values_ok() -> None:
    assert torch.equal(_draw(5, 9), _draw(5, 9, 0))
    assert 0 <= mix_seed(2**70, -1, 10**12) < 2**64


@pytest.mark.parametrize("bad", [1.5, "1", None, True])
def test_rejects_non_int(bad: object) -> None:
    with pytest.raises(TypeError, match="step"):
        make_generator(0, bad, 0)  # type: ignore[arg-type]
