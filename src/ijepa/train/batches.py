"""Training batches as a pure function of the step: exact resume needs nothing but the step.

The *global* batch of a step (``batch_size x world_size`` images) is the same set of images,
augmented the same way, whatever the number of processes: each epoch is one seeded permutation of
the whole data set, cut into consecutive global batches, and rank ``r`` takes the ``r``-th
contiguous slice of ``batch_size`` images (:func:`rank_slice`). So 2 processes with batch ``b``
see exactly the images of 1 process with batch ``2b``, and a run can resume on another world size
as long as the global batch stays the same.

Two sources:

- :class:`MemoryBatches`: a labelled set held as uint8 tensors; each global batch is augmented in
  one batched call from a generator keyed by (seed, step), and each rank keeps its slice (no
  DataLoader, no workers, no per-image Python). Each rank augments the whole global batch, so this
  cost grows with the world size: it is meant for small in-memory sets.
- :class:`FileBatches`: a file dataset (ImageFolder) read by a DataLoader with workers; a resume
  starts the sampler at the right iteration, and every sample's augmentation is seeded by
  (seed, epoch, index), so neither workers nor the world size change the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ijepa.data import ImageSet, train_transform_batch
from ijepa.errors import ConfigError


class DataLoaderError(RuntimeError):
    """A data-loader worker died (killed, out of memory, crashed); the message says what to try."""


class Stream(IntEnum):
    """The random streams of a run's data, each mixed with the seed into its own generators.

    (Masks follow their own rule, :func:`ijepa.masks.step_masks`; value 4 was their old stream.)
    """

    EPOCH_ORDER = 1
    """The permutation of the data set in each epoch: ``(seed, EPOCH_ORDER, epoch)``."""
    BATCH_AUGMENT = 2
    """The batched augmentation of an in-memory global batch: ``(seed, BATCH_AUGMENT, step, 0)``."""
    SAMPLE_AUGMENT = 3
    """One file sample's augmentation: ``(seed, SAMPLE_AUGMENT, epoch, index)``."""
    DROP_PATH = 5
    """The global torch RNG of ranks other than 0 (it drives only drop path)."""


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts``."""
    g = torch.Generator()
    g.manual_seed(mix_seed(*parts))
    return g


def rank_slice(rank: int, batch_size: int) -> slice:
    """Rows of the global batch that belong to ``rank`` (``batch_size`` rows per rank)."""
    return slice(rank * batch_size, (rank + 1) * batch_size)


def _check_size(n: int, batch_size: int, world_size: int, what: str) -> None:
    if batch_size < 1 or world_size < 1:
        raise ConfigError(
            f"data.batch_size ({batch_size}) and the world size ({world_size}) must be >= 1"
        )
    if n < batch_size * world_size:
        raise ConfigError(
            f"{what} has {n} images: too few for data.batch_size {batch_size} x {world_size} "
            f"process(es) = a global batch of {batch_size * world_size}"
        )


class MemoryBatches:
    """Batches of an in-memory :class:`ImageSet`, sharded over ranks, as a function of the step.

    Args:
        data: the training images.
        batch_size: images per step on each process.
        crop_size, crop_scale, hflip: the batched RandomResizedCrop (+ flip) augmentation.
        seed: the run's seed.
        rank, world_size: this process's place in the data-parallel job.
    """

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
        _check_size(len(data), batch_size, world_size, f"dataset '{data.name}'")
        self.data = data
        self.batch_size = batch_size
        self.global_batch_size = batch_size * world_size
        self.crop_size = crop_size
        self.crop_scale = crop_scale
        self.hflip = hflip
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.iterations_per_epoch = len(data) // self.global_batch_size
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            self._order = torch.randperm(
                len(self.data), generator=seeded_generator(self.seed, Stream.EPOCH_ORDER, epoch)
            )
            self._epoch = epoch
        return self._order

    def global_indices(self, step: int) -> torch.Tensor:
        """Data-set indices ``(batch_size * world_size,)`` of the global batch of ``step``."""
        epoch, i = divmod(step, self.iterations_per_epoch)
        g = self.global_batch_size
        return self._epoch_order(epoch)[i * g : (i + 1) * g]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's augmented images (B, C, S, S) float32 and labels (B,) for ``step``."""
        idx = self.global_indices(step)
        # The whole global batch is augmented (one generator per step), then sliced: the crops
        # depend on the batch as a whole, so slicing first would depend on the world size.
        images = train_transform_batch(
            self.data.images[idx],
            self.crop_size,
            crop_scale=self.crop_scale,
            hflip=self.hflip,
            mean=self.data.mean,
            std=self.data.std,
            generator=seeded_generator(self.seed, Stream.BATCH_AUGMENT, step, 0),
        )
        mine = rank_slice(self.rank, self.batch_size)
        return images[mine].contiguous(), self.data.labels[idx[mine]]


class _EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) pairs of this rank's slices of the global batches of one epoch.

    The epoch's order is one seeded permutation of the whole data set; iteration ``i`` covers its
    ``i``-th global batch, of which this rank takes slice ``rank``. ``start`` is the first
    iteration to yield (for a resume in the middle of an epoch).
    """

    def __init__(self, n: int, seed: int, rank: int, world_size: int, batch_size: int) -> None:
        self.n, self.seed, self.rank, self.batch_size = n, seed, rank, batch_size
        self.global_batch_size = batch_size * world_size
        self.iterations = n // self.global_batch_size
        self.epoch = 0
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = torch.randperm(
            self.n, generator=seeded_generator(self.seed, Stream.EPOCH_ORDER, self.epoch)
        )
        mine = rank_slice(self.rank, self.batch_size)
        for i in range(self.start, self.iterations):
            chunk = perm[i * self.global_batch_size : (i + 1) * self.global_batch_size]
            for idx in chunk[mine].tolist():
                yield self.epoch, idx

    def __len__(self) -> int:
        return (self.iterations - self.start) * self.batch_size


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
            torch.manual_seed(mix_seed(self.seed, Stream.SAMPLE_AUGMENT, epoch, idx))
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
        _check_size(len(dataset), batch_size, world_size, "dataset")
        self.dataset = dataset
        self.batch_size = batch_size
        self.global_batch_size = batch_size * world_size
        self.sampler = _EpochSampler(len(dataset), seed, rank, world_size, batch_size)
        self.iterations_per_epoch = self.sampler.iterations
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
        """This rank's batch of step ``step`` (sequential access is fast; a jump restarts)."""
        epoch, i = divmod(step, self.iterations_per_epoch)
        if self._it is None or step != self._next_step or i == 0:
            self.sampler.epoch = epoch
            self.sampler.start = i
            self._it = iter(self.loader)
        images, labels = next(self._it)
        self._next_step = step + 1
        return images, labels
