"""MaskCollator: collation, per-step seeding, resume, and DataLoader workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ijepa.masks import MaskCollator, MultiBlockMaskGenerator, make_generator, step_masks


class _Images(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((3, 8, 8), float(i)), i


def _gen() -> MultiBlockMaskGenerator:
    return MultiBlockMaskGenerator((7, 7), min_keep=4)


def test_collates_and_matches_make_generator() -> None:
    gen = _gen()
    col = MaskCollator(gen, seed=3)
    samples = [_Images(5)[i] for i in range(5)]
    (images, labels), enc, pred = col(samples)
    assert images.shape == (5, 3, 8, 8) and labels.tolist() == [0, 1, 2, 3, 4]
    assert enc.shape[:2] == (1, 5) and pred.shape[:2] == (4, 5)
    ref_enc, ref_pred = gen(5, make_generator(3, 0))
    assert torch.equal(enc, ref_enc) and torch.equal(pred, ref_pred)
    assert col.step == 1
    _, enc2, _ = col(samples)
    assert torch.equal(enc2, gen(5, make_generator(3, 1))[0])


def test_ranks_take_their_columns_of_the_global_batch() -> None:
    """The one seeding rule: two ranks' masks are the columns of one process's global batch."""
    gen = _gen()
    samples = [_Images(5)[i] for i in range(5)]
    ranks = [MaskCollator(gen, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for step in range(3):
        (_, e0, p0), (_, e1, p1) = (col(samples) for col in ranks)
        ref_enc, ref_pred = gen(10, make_generator(3, step))
        assert torch.equal(torch.cat([e0, e1], dim=1), ref_enc)
        assert torch.equal(torch.cat([p0, p1], dim=1), ref_pred)
        assert torch.equal(e1, step_masks(gen, 3, step, 5, rank=1, world_size=2)[0])
    with pytest.raises(ValueError, match="rank 2 is not in"):
        MaskCollator(gen, seed=0, rank=2, world_size=2)


def test_state_round_trip_resumes_sequence() -> None:
    samples = [_Images(4)[i] for i in range(4)]
    full = MaskCollator(_gen(), seed=0)
    run = [full(samples)[1:] for _ in range(6)]
    first = MaskCollator(_gen(), seed=0)
    for _ in range(3):
        first(samples)
    state = first.state_dict()
    assert state["step"] == 3
    resumed = MaskCollator(_gen(), seed=0)
    resumed.load_state_dict(state)
    for k in range(3, 6):
        enc, pred = resumed(samples)[1:]
        assert torch.equal(enc, run[k][0]) and torch.equal(pred, run[k][1])


def test_load_state_checks_seed_and_step() -> None:
    col = MaskCollator(_gen(), seed=0, rank=2, world_size=4)
    col.load_state_dict({"step": 7, "seed": 0, "rank": 0})  # another rank's state is fine
    assert col.step == 7
    with pytest.raises(ValueError, match="seed"):
        col.load_state_dict({"step": 1, "seed": 5})
    with pytest.raises(KeyError, match="step"):
        col.load_state_dict({"seed": 0})


def _check_workers(context: str | None) -> None:
    data = _Images(40)
    ref = [b[1:] for b in DataLoader(data, batch_size=4, collate_fn=MaskCollator(_gen(), seed=1))]
    col = MaskCollator(_gen(), seed=1)
    loader = DataLoader(
        data, batch_size=4, collate_fn=col, num_workers=2, multiprocessing_context=context
    )
    got = [b[1:] for b in loader]
    assert len(got) == len(ref) == 10
    for (e, p), (re, rp) in zip(got, ref, strict=True):
        assert torch.equal(e, re) and torch.equal(p, rp)
    # the main-process copy sees the workers' progress, and the next epoch continues from it
    assert col.step == 10 and col.state_dict()["step"] == 10
    second = [b[1:] for b in loader]
    for k, (e, p) in enumerate(second):
        re, rp = _gen()(4, make_generator(1, 10 + k, 0))
        assert torch.equal(e, re) and torch.equal(p, rp)
    assert col.step == 20


@pytest.mark.timeout(120)
def test_dataloader_fork_workers_give_single_process_masks() -> None:
    _check_workers("fork")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dataloader_spawn_workers_give_single_process_masks() -> None:
    _check_workers("spawn")


@pytest.mark.timeout(120)
def test_partial_epoch_with_workers_skips_but_never_repeats() -> None:
    col = MaskCollator(_gen(), seed=2)
    loader = DataLoader(_Images(40), batch_size=4, collate_fn=col, num_workers=2)
    it = iter(loader)
    first = [next(it)[1:] for _ in range(3)]
    for k, (e, _) in enumerate(first):
        assert torch.equal(e, _gen()(4, make_generator(2, k, 0))[0])
    del it
    saved = col.state_dict()["step"]
    # batches prefetched but not consumed count too (2 workers x prefetch_factor 2)
    assert 3 <= saved <= 3 + 2 * 2
    enc, pred = next(iter(loader))[1:]
    ref_enc, ref_pred = _gen()(4, make_generator(2, saved, 0))
    assert torch.equal(enc, ref_enc) and torch.equal(pred, ref_pred)
