"""Training batches streamed from WebDataset shards (``data.dataset=webdataset:PATTERN``).

Unlike :class:`~ijepa.train.batches.FileBatches`, a stream has no random access: each epoch
the shards are permuted with the seed and split over ranks, then over DataLoader workers, and
each worker's samples pass through a seeded shuffle buffer
(:class:`~ijepa.data.WebDatasetStream`). An epoch is ``samples // global batch`` steps (the
samples are counted once at the start, from the tar headers); a rank or worker whose shards run
out goes on with the next pass over them, so every rank takes the same number of steps.

Each sample's augmentation is seeded by (seed, epoch, its shard and key), so it does not depend
on the worker that decoded it. A resume restarts the epoch's stream and every worker drops,
without decoding them, the samples of the batches it gave before the checkpoint. Batches are
deterministic for a given world size and ``data.num_workers``; unlike the in-memory and
ImageFolder sources, another world size sees the epoch's images in another order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from ijepa.data import WebDatasetStream
from ijepa.data.spec import DataSpecError
from ijepa.train.batches import Stream, mix_seed

__all__ = ["StreamBatches"]


def _name_seed(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


class _SeededStream(IterableDataset):
    """Each decoded sample transformed under a generator seeded by (seed, epoch, shard:key)."""

    def __init__(self, stream: WebDatasetStream, transform: Callable, seed: int) -> None:
        self.stream, self.transform, self.seed = stream, transform, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        epoch = self.stream.epoch
        for img, label, name in self.stream.decoded_samples():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(
                    mix_seed(self.seed, Stream.SAMPLE_AUGMENT, epoch, _name_seed(name))
                )
                yield self.transform(img), label


class StreamBatches:
    """This rank's batches of a WebDataset stream, by step (sequential, resumable).

    Args:
        stream: the shards, split for this rank (its ``cycle`` is switched on here).
        num_samples: samples in all the shards (the epoch length).
        transform: per-image augmentation (PIL image -> tensor).
        batch_size, seed, num_workers, pin_memory, world_size: as for ``FileBatches``.
    """

    def __init__(
        self,
        stream: WebDatasetStream,
        num_samples: int,
        transform: Callable,
        *,
        batch_size: int,
        seed: int,
        num_workers: int,
        pin_memory: bool,
        world_size: int = 1,
    ) -> None:
        self.batch_size = batch_size
        self.global_batch_size = batch_size * world_size
        self.iterations_per_epoch = num_samples // self.global_batch_size
        if self.iterations_per_epoch < 1:
            raise DataSpecError(
                f"webdataset: {num_samples} samples are too few for a global batch of "
                f"{self.global_batch_size} ({batch_size} x {world_size} process(es))"
            )
        stream.cycle = True
        stream.batch_size = batch_size
        self.stream = stream
        self.loader = DataLoader(
            _SeededStream(stream, transform, seed),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,
        )
        self._it: Iterator[Any] | None = None
        self._next_step = -1

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's batch of step ``step`` (sequential access; a jump restarts the epoch)."""
        epoch, i = divmod(step, self.iterations_per_epoch)
        if self._it is None or step != self._next_step or i == 0:
            self.stream.set_epoch(epoch)
            self.stream.resume_batches = i
            self._it = iter(self.loader)
        images, labels = next(self._it)
        self._next_step = step + 1
        return images, labels
