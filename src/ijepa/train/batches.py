"""Training batches as a pure function of the step: exact resume needs nothing but the step.

Two sources:

- :class:`MemoryBatches`: a labelled set held as uint8 tensors; each epoch is a seeded permutation
  and each batch is augmented in one batched call (no DataLoader, no workers, no per-image Python).
- :class:`FileBatches`: a file dataset (ImageFolder) read by a DataLoader with workers; the order is
  a seeded permutation per epoch, a resume starts the sampler at the right offset, and every
  sample's augmentation is seeded by (seed, epoch, index) so workers do not change the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ijepa.data import ImageSet, train_transform_batch


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts``."""
    g = torch.Generator()
    g.manual_seed(mix_seed(*parts))
    return g


class MemoryBatches:
    """Batches of an in-memory :class:`ImageSet`, sharded over ranks, as a function of the step."""

    def __init__(
        self,
        data: ImageSet,
        *,
        batch_size: int,
        crop_size: int,
        crop_scale: tuple[float, float],
        hflip: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        per_rank = len(data) // world_size
        if per_rank < batch_size:
            raise ValueError(
                f"dataset '{data.name}' has {len(data)} images: too few for batch_size "
                f"{batch_size} x {world_size} process(es)"
            )
        self.data = data
        self.batch_size = batch_size
        self.crop_size = crop_size
        self.crop_scale = crop_scale
        self.hflip = hflip
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.iterations_per_epoch = per_rank // batch_size
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            perm = torch.randperm(len(self.data), generator=seeded_generator(self.seed, 1, epoch))
            self._order = perm[self.rank :: self.world_size]
            self._epoch = epoch
        return self._order

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented images (B, C, S, S) float32 and labels (B,) for global step ``step``."""
        epoch, i = divmod(step, self.iterations_per_epoch)
        idx = self._epoch_order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        images = train_transform_batch(
            self.data.images[idx],
            self.crop_size,
            crop_scale=self.crop_scale,
            hflip=self.hflip,
            mean=self.data.mean,
            std=self.data.std,
            generator=seeded_generator(self.seed, 2, step, self.rank),
        )
        return images, self.data.labels[idx]


class _EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) pairs from a seeded per-epoch permutation, starting at an offset."""

    def __init__(self, n: int, seed: int, rank: int, world_size: int, batch_size: int) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.per_rank = (n // world_size) // batch_size * batch_size
        self.epoch = 0
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = torch.randperm(self.n, generator=seeded_generator(self.seed, 1, self.epoch))
        mine = perm[self.rank :: self.world_size][: self.per_rank].tolist()
        for idx in mine[self.start :]:
            yield self.epoch, idx

    def __len__(self) -> int:
        return self.per_rank - self.start


class _SeededSamples(Dataset):
    """Wraps a file dataset so each sample's augmentation is seeded by (seed, epoch, index)."""

    def __init__(self, dataset: Any, transform: Callable, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, idx = key
        image, label = self.dataset[idx]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, 3, epoch, idx))
            return self.transform(image), label


class FileBatches:
    """Batches of a file dataset through a DataLoader; deterministic and resumable by step."""

    def __init__(
        self,
        dataset: Any,
        transform: Callable,
        *,
        batch_size: int,
        seed: int,
        num_workers: int,
        pin_memory: bool,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(dataset) // world_size < batch_size:
            raise ValueError(
                f"dataset has {len(dataset)} images: too few for batch_size {batch_size} x "
                f"{world_size} process(es)"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = _EpochSampler(len(dataset), seed, rank, world_size, batch_size)
        self.iterations_per_epoch = self.sampler.per_rank // batch_size
        self.loader = DataLoader(
            _SeededSamples(dataset, transform, seed),
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=True,
            persistent_workers=False,
        )
        self._it: Iterator | None = None
        self._next_step = -1

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for global step ``step`` (sequential access is fast; a jump restarts)."""
        epoch, i = divmod(step, self.iterations_per_epoch)
        if self._it is None or step != self._next_step or i == 0:
            self.sampler.epoch = epoch
            self.sampler.start = i * self.batch_size
            self._it = iter(self.loader)
        images, labels = next(self._it)
        self._next_step = step + 1
        return images, labels
