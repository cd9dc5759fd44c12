"""WebDataset shards in memory (:func:`load_webdataset`) and from an ImageFolder
(:func:`write_imagefolder_shards`); the streaming side is :mod:`ijepa.data.shards`."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch

from ijepa.data.imageset import ImageSet
from ijepa.data.shards import WebDatasetStream, _sample_class, _wds, expand_pattern
from ijepa.data.spec import DataSpecError

__all__ = ["load_webdataset", "write_imagefolder_shards"]

logger = logging.getLogger(__name__)


def write_imagefolder_shards(
    root: str | Path, pattern: str, *, max_count: int = 10_000, shuffle_seed: int | None = 0
) -> list[str]:
    """Write an ImageFolder (``root/CLASS/...``) as WebDataset shards.

    Each sample holds the original image bytes (``jpg``/``png``/... by the file's extension),
    ``cls`` (the class index, as :class:`~ijepa.data.folder.ImageFolderDataset` numbers classes)
    and ``json`` (``{"class": name, "path": path relative to root}``).

    Args:
        root: the class folders.
        pattern: output names with one ``%d``-style field, e.g. ``"out/train-%06d.tar"``.
        max_count: samples per shard.
        shuffle_seed: shuffle the files before writing (shards then mix classes, as streaming
            training wants), or ``None`` to keep the folder order.

    Returns:
        The shard files written.
    """
    from ijepa.data.folder import ImageFolderDataset

    wds = _wds()
    ds = ImageFolderDataset(root)
    order = list(range(len(ds.samples)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with wds.ShardWriter(pattern, maxcount=max_count, verbose=0) as sink:
        for n, i in enumerate(order):
            path, label = ds.samples[i]
            ext = Path(path).suffix.lower().lstrip(".") or "jpg"
            ext = "jpg" if ext == "jpeg" else ext
            rel = str(Path(path).relative_to(ds.root))
            sink.write(
                {
                    "__key__": f"{n:09d}",
                    ext: Path(path).read_bytes(),
                    "cls": str(label).encode(),
                    "json": json.dumps({"class": ds.classes[label], "path": rel}).encode(),
                }
            )
            if sink.fname not in written:
                written.append(sink.fname)
    return written


def load_webdataset(
    pattern: str,
    split: str,
    *,
    image_size: int = 64,
    grayscale: bool = False,
    max_images: int = 100_000,
) -> ImageSet:
    """Decode every sample of the shards into memory at ``image_size`` (in shard order).

    Bad samples are skipped with a warning, as in :func:`~ijepa.data.load.load_imagefolder`.
    Class names come from the samples' ``json`` (``"class"``) when present, else the labels.

    Returns:
        ImageSet with uint8 ``(N, 3 or 1, image_size, image_size)`` images, ImageNet statistics,
        and ``paths`` naming each sample ``SHARD:KEY``.
    """
    import numpy as np

    from ijepa.data.folder import fit_square
    from ijepa.data.hf import stack_images

    urls = expand_pattern(pattern, split)
    stream = WebDatasetStream(urls, shuffle_buffer=0)
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[str] = []
    names: dict[int, str] = {}
    for sample in stream.raw_samples():
        item = stream.decoded(sample)
        if item is None:
            continue
        if len(arrays) >= max_images:
            raise DataSpecError(
                f"webdataset:{pattern}: more than max_images={max_images} samples for an "
                "in-memory set; stream it for training or raise max_images"
            )
        img, label = item
        img = fit_square(img, image_size)
        arrays.append(np.asarray(img.convert("L") if grayscale else img, dtype=np.uint8))
        labels.append(label)
        paths.append(f"{sample['__url__']}:{sample['__key__']}")
        name = _sample_class(sample)
        if name is not None:
            names.setdefault(label, name)
    if not arrays:
        raise DataSpecError(f"webdataset:{pattern}: no decodable sample in {len(urls)} shard(s)")
    if stream.skipped:
        logger.warning("webdataset:%s %s: skipped %d bad sample(s)", pattern, split,
                       len(stream.skipped))  # fmt: skip
    if min(labels) < 0:
        raise DataSpecError(f"webdataset:{pattern}: negative class label {min(labels)}")
    images, mean, std = stack_images(arrays, grayscale)
    return ImageSet(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=[names.get(i, str(i)) for i in range(max(labels) + 1)],
        mean=mean,
        std=std,
        name=f"webdataset:{pattern}:{split}",
        paths=paths,
    )
