"""WebDataset shards: tar files of samples, streamed for training or decoded into memory.

A data spec ``webdataset:PATTERN`` names the shards with a brace pattern, e.g.
``webdataset:/data/pets/train-{000000..000099}.tar`` (local files, ``pipe:COMMAND`` or URLs, as
the ``webdataset`` library opens them; several patterns joined with ``::``). A literal
``{split}`` in the pattern is replaced by ``train`` or ``val``, so one spec serves both splits.

A sample is the files of one key in a shard: an image (``jpg``, ``jpeg``, ``png``, ``webp``,
``bmp``, ``ppm``, ``tif``, ``tiff``; the first one present), an integer label in ``cls`` and,
optionally, ``json`` with ``{"class": name, "path": original file}``, which
:func:`ijepa.data.shard_sets.write_imagefolder_shards` writes.

:class:`WebDatasetStream` is an ``IterableDataset``: each epoch the shard list is permuted with
the seed, rank ``r`` of ``R`` takes shards ``r, r + R, ...`` and DataLoader worker ``w`` of ``W``
takes every ``W``-th of those; samples pass through a seeded shuffle buffer. A sample whose image
cannot be decoded is logged with ``logger.warning`` (shard and key), recorded in ``.skipped`` and
left out, as :class:`~ijepa.data.folder.ImageFolderDataset` does with bad files; so is the rest
of a shard that cannot be opened or read to its end (the samples read before the error are kept).
The tar reading, brace expansion and shuffle buffer are the ``webdataset`` library's (the
``webdataset`` extra).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import tarfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from ijepa.data.folder import DECODE_ERRORS, SkippedFile, to_rgb
from ijepa.data.spec import DataSpecError

__all__ = [
    "IMAGE_KEYS",
    "WebDatasetStream",
    "count_samples",
    "decode_sample",
    "expand_pattern",
]

logger = logging.getLogger(__name__)

#: Sample keys holding an image, in the order they are looked for.
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")
#: What decoding a bad sample can raise (a bad image, a missing image or label, a bad label).
_SAMPLE_ERRORS: tuple[type[BaseException], ...] = (*DECODE_ERRORS, KeyError, ValueError)
#: The placeholder replaced by the split name in a pattern.
SPLIT_PLACEHOLDER = "{split}"


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (the recipe of ``ijepa.train.batches.mix_seed``; ``data``
    does not import ``train``)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _wds() -> Any:
    try:
        import webdataset
    except ModuleNotFoundError as err:
        raise DataSpecError(
            "webdataset: data specs need the webdataset package: pip install "
            "'torch-ijepa[webdataset]'"
        ) from err
    return webdataset


def expand_pattern(pattern: str, split: str | None = None) -> list[str]:
    """The shard URLs of a pattern (braces expanded, ``::`` lists joined, ``{split}`` filled).

    Args:
        pattern: e.g. ``"/data/train-{000..009}.tar"``.
        split: ``"train"`` or ``"test"`` (written ``val`` into the pattern); needed only when the
            pattern holds ``{split}``.

    Raises:
        DataSpecError: an empty pattern, ``{split}`` without a split, or local shards that do
            not exist (the message names the first missing ones).
    """
    if not pattern.strip():
        raise DataSpecError("webdataset: empty shard pattern; write 'webdataset:PATTERN'")
    if SPLIT_PLACEHOLDER in pattern:
        if split is None:
            raise DataSpecError(f"webdataset:{pattern}: the pattern holds {{split}}; name a split")
        pattern = pattern.replace(SPLIT_PLACEHOLDER, "train" if split == "train" else "val")
    urls: list[str] = list(_wds().shardlists.expand_urls(pattern))
    local = [u for u in urls if _is_local(u)]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        )
        raise DataSpecError(
            f"webdataset:{pattern}: {len(missing)} of {len(urls)} shard(s) not found: {shown}"
        )
    return urls


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def count_samples(urls: list[str]) -> int:
    """Number of samples (keys with an image) in the shards; local tar files are read by header.

    Raises:
        DataSpecError: a shard that cannot be read.
    """
    total = 0
    for url in urls:
        try:
            if _is_local(url):
                with tarfile.open(url) as tar:
                    names = [m.name for m in tar.getmembers() if m.isreg()]
            else:
                logger.info("webdataset: counting the samples of %s (read once in full)", url)
                with _wds().gopen(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                    names = [m.name for m in tar if m.isreg()]
        except (OSError, tarfile.TarError) as err:
            raise DataSpecError(f"webdataset: cannot read shard {url}: {err}") from err
        split_name = _wds().tariterators.base_plus_ext
        keys = set()
        for name in names:
            key, ext = split_name(name)
            if key is not None and ext.lower() in IMAGE_KEYS:
                keys.add(key)
        total += len(keys)
    return total


def decode_sample(sample: dict[str, Any]) -> tuple[Image.Image, int]:
    """``(RGB image, label)`` of a raw sample (bytes per extension).

    Raises:
        one of :data:`~ijepa.data.folder.DECODE_ERRORS` for a bad image, ``KeyError`` when the
        sample has no image or no ``cls`` label, ``ValueError`` for a label that is not an
        integer.
    """
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise KeyError(f"no image ({', '.join(IMAGE_KEYS)}) among {sorted(sample)}")
    if "cls" not in sample:
        raise KeyError("no 'cls' label")
    label = int(bytes(sample["cls"]).decode().strip())
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(sample[key]))
        img.load()
    return to_rgb(img), label


def _sample_class(sample: dict[str, Any]) -> str | None:
    raw = sample.get("json")
    if raw is None:
        return None
    try:
        info = json.loads(bytes(raw).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    name = info.get("class") if isinstance(info, dict) else None
    return str(name) if name is not None else None


class WebDatasetStream(IterableDataset):
    """``(image, label)`` pairs streamed from shards, split over ranks and DataLoader workers.

    Args:
        urls: shard URLs (:func:`expand_pattern`).
        transform: applied to each decoded RGB image (``None``: the PIL image).
        seed: the run's seed (shard order and shuffle buffer).
        rank, world_size: this process's place in the job.
        shuffle_buffer: samples held by the shuffle buffer (0 or 1: no shuffling).
        cycle: start again (with the next permutation) when this worker's shards run out, so
            that the stream never ends; without it one pass over the shards.

    Attributes:
        skipped: :class:`~ijepa.data.folder.SkippedFile` (``shard:key`` or shard, reason) of the
            samples and shards left out by this process (each worker holds its own).
        epoch: set with :meth:`set_epoch` before iterating.
    """

    def __init__(
        self,
        urls: list[str],
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
        cycle: bool = False,
    ) -> None:
        if not urls:
            raise DataSpecError("webdataset: no shards")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.urls = list(urls)
        self.transform = transform
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.cycle = cycle
        self.epoch = 0
        self.resume_batches = 0
        """Batches the DataLoader already took this epoch (a resume; see decoded_samples)."""
        self.batch_size = 1
        self.skipped: list[SkippedFile] = []

    def set_epoch(self, epoch: int) -> None:
        """Use the shard order and shuffle of ``epoch``."""
        self.epoch = epoch

    def shards_for(self, worker: int, num_workers: int, pass_index: int = 0) -> list[str]:
        """The shards of this rank's ``worker`` in one pass of the current epoch."""
        order = list(self.urls)
        random.Random(_seed(self.seed, 11, self.epoch, pass_index)).shuffle(order)
        mine = order[self.rank :: self.world_size][worker::num_workers]
        if not mine:
            raise DataSpecError(
                f"webdataset: {len(self.urls)} shard(s) cannot feed {self.world_size} rank(s) x "
                f"{num_workers} worker(s): every worker needs a shard. Lower data.num_workers "
                "or write more, smaller shards"
            )
        return mine

    def _tar_error(self, err: BaseException) -> bool:
        where = next((a for a in reversed(err.args) if isinstance(a, str)), "a shard")
        reason = f"{type(err).__name__}: {err.args[0] if err.args else err}"
        logger.warning("webdataset: read error in %s, skipped: %s", where, reason)
        self.skipped.append(SkippedFile(str(where), reason))
        return True  # continue with the next shard

    def raw_samples(self, worker: int = 0, num_workers: int = 1) -> Iterator[dict[str, Any]]:
        """Undecoded samples of this rank's ``worker``, in shuffled order."""
        wds = _wds()
        pass_index = 0
        while True:
            shards = [{"url": u} for u in self.shards_for(worker, num_workers, pass_index)]
            samples = wds.tariterators.tarfile_samples(iter(shards), handler=self._tar_error)
            if self.shuffle_buffer > 1:
                parts = (self.seed, 12, self.epoch, pass_index, self.rank, worker)
                rng = random.Random(_seed(*parts))
                initial = min(100, self.shuffle_buffer)
                shuffle = wds.filters.shuffle(self.shuffle_buffer, initial, rng=rng)
                samples = shuffle(samples)
            yield from samples
            if not self.cycle:
                return
            pass_index += 1

    def decoded(self, sample: dict[str, Any]) -> tuple[Image.Image, int] | None:
        """Decode a raw sample, or record and log why it is left out and return ``None``."""
        try:
            return decode_sample(sample)
        except _SAMPLE_ERRORS as err:
            name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
            reason = f"{type(err).__name__}: {err}"
            logger.warning("webdataset: skipping sample %s: %s", name, reason)
            self.skipped.append(SkippedFile(name, reason))
            return None

    def decoded_samples(self) -> Iterator[tuple[Image.Image, int, str]]:
        """``(RGB image, label, "SHARD:KEY")`` of this rank's DataLoader worker, bad ones left
        out. A resume (``resume_batches`` > 0) first drops, undecoded, the raw samples of the
        ``batch_size``-sample batches its part of the stream gave before: the DataLoader takes
        the ``k``-th batch of an iterator from worker ``k % workers``. (Bad samples dropped earlier in the epoch shift that
        count; the set of images of the epoch stays the same.)"""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # a new DataLoader iterator gives its first batch to worker 0: after a resume at batch
        # i, worker w serves the batches that worker (w + i) % workers served before
        role = (worker + self.resume_batches) % workers
        to_skip = len(range(role, self.resume_batches, workers)) * self.batch_size
        for sample in self.raw_samples(role, workers):
            if to_skip > 0:
                to_skip -= 1
                continue
            item = self.decoded(sample)
            if item is not None:
                yield item[0], item[1], f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        for img, label, _ in self.decoded_samples():
            yield (self.transform(img) if self.transform is not None else img), label
