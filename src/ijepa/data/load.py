"""`load_imageset`: from a data spec string and a split to an in-memory ImageSet.

Options (keyword arguments) per kind; an unknown option raises :class:`DataSpecError`:

- ``embedded``: ``size``, ``image_size`` (32), ``label`` ("shape" | "count"), ``seed`` (0),
  ``layout`` ("shapes" | "object" | "scene"), and for the scene layout ``max_distractors`` (3)
  and ``background`` ("textured" | "plain"). ``"embedded:N"`` sets ``size``, ``"embedded:LAYOUT"``
  the layout (see :func:`ijepa.data.spec.embedded_options`).
- ``fashion-mnist``: ``download`` (True).
- ``imagefolder``: ``image_size`` (64), ``grayscale`` (False), ``max_images`` (100 000).
- ``hf``: ``image_column``, ``label_column`` ("label"), ``image_size``, ``grayscale``, ``mean``,
  ``std``.
- ``webdataset``: ``image_size`` (64), ``grayscale`` (False), ``max_images`` (100 000).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ijepa.data.embedded import EmbeddedConfig, load_embedded
from ijepa.data.fashion_mnist import load_fashion_mnist
from ijepa.data.folder import ImageFolderDataset, fit_square
from ijepa.data.hf import load_hf, stack_images
from ijepa.data.imageset import ImageSet
from ijepa.data.spec import DataSpecError, embedded_options, normalize_split, parse_spec

__all__ = ["OPTIONS", "load_imagefolder", "load_imageset"]

logger = logging.getLogger(__name__)

#: Keyword options each kind accepts.
OPTIONS: dict[str, tuple[str, ...]] = {
    "embedded": (
        "size",
        "image_size",
        "label",
        "seed",
        "layout",
        "max_distractors",
        "background",
    ),
    "fashion-mnist": ("download",),
    "imagefolder": ("image_size", "grayscale", "max_images"),
    "hf": ("image_column", "label_column", "image_size", "grayscale", "mean", "std"),
    "webdataset": ("image_size", "grayscale", "max_images"),
}


def load_imageset(
    spec: str, split: str = "train", *, root: str | None = None, **opts: Any
) -> ImageSet:
    """Load a labelled image set into memory.

    Args:
        spec: data spec, e.g. ``"embedded"``, ``"embedded:2000"``, ``"fashion-mnist"``,
            ``"fashion-mnist:DIR"``, ``"imagefolder:DIR"``, ``"hf:PATH"``,
            ``"webdataset:PATTERN"``.
        split: ``"train"`` or ``"test"`` (``"val"`` is an alias of ``"test"``).
        root: cache folder for downloadable sets (default ``~/.cache/ijepa``).
        **opts: options of the kind (see the module docstring).

    Returns:
        An :class:`ImageSet` with uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``.

    Raises:
        DataSpecError: bad spec, split or option, or missing/corrupt data.
    """
    kind, arg = parse_spec(spec)
    split = normalize_split(split)
    unknown = sorted(set(opts) - set(OPTIONS[kind]))
    if unknown:
        raise DataSpecError(
            f"unknown option(s) {unknown} for data kind '{kind}'; valid: {list(OPTIONS[kind])}"
        )
    if kind == "embedded":
        for key, value in embedded_options(arg, spec).items() if arg is not None else ():
            if key in opts and opts[key] != value:
                raise DataSpecError(f"spec {spec!r} and {key}={opts[key]!r} disagree")
            opts[key] = value
        return load_embedded(split, EmbeddedConfig(**opts))
    if kind == "fashion-mnist":
        return load_fashion_mnist(split, arg, root=root, **opts)
    if kind == "imagefolder":
        assert arg is not None  # parse_spec guarantees a path
        return load_imagefolder(arg, split, **opts)
    if kind == "webdataset":
        from ijepa.data.shard_sets import load_webdataset

        assert arg is not None
        return load_webdataset(arg, split, **opts)
    assert kind == "hf" and arg is not None
    return load_hf(arg, split, **opts)


def _split_folder(directory: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("val", "test", "validation")
    for name in names:
        if (directory / name).is_dir():
            return directory / name
    raise DataSpecError(
        f"imagefolder:{directory}: no {' or '.join(names)} subfolder for split {split!r}"
    )


def load_imagefolder(
    directory: str,
    split: str,
    *,
    image_size: int = 64,
    grayscale: bool = False,
    max_images: int = 100_000,
) -> ImageSet:
    """Decode ``DIR/train`` or ``DIR/val`` (``DIR/test``) into memory at ``image_size``.

    Each image is resized (shorter side) and centre-cropped to ``image_size``; bad files are
    skipped with a warning (see :class:`ImageFolderDataset`). Only for small sets: more than
    ``max_images`` files raise. Test classes must equal train classes (when ``DIR/train``
    exists), so that label indices agree.

    Returns:
        ImageSet with uint8 ``(N, 3 or 1, image_size, image_size)`` images, ImageNet statistics.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataSpecError(f"imagefolder: {root} does not exist or is not a directory")
    ds = ImageFolderDataset(_split_folder(root, split))
    if split == "test" and (root / "train").is_dir():
        train_classes, _ = ds.find_classes(root / "train")
        if train_classes != ds.classes:
            raise DataSpecError(
                f"imagefolder:{root}: test classes {ds.classes} differ from train classes "
                f"{train_classes}; labels would not agree"
            )
    if len(ds.samples) > max_images:
        raise DataSpecError(
            f"imagefolder:{root}: {len(ds.samples)} files exceed max_images={max_images} for an "
            f"in-memory set; stream it with ImageFolderDataset or raise max_images"
        )
    arrays, labels, paths = [], [], []
    for i, (path, target) in enumerate(ds.samples):
        img = ds.decode(i)
        if img is None:
            continue
        img = fit_square(img, image_size)
        arrays.append(np.asarray(img.convert("L") if grayscale else img, dtype=np.uint8))
        labels.append(target)
        paths.append(path)
    if not arrays:
        raise DataSpecError(
            f"imagefolder:{root}: none of the {len(ds.samples)} files can be decoded"
        )
    if ds.skipped:
        logger.warning("imagefolder:%s %s: skipped %d bad file(s)", root, split, len(ds.skipped))
    images, mean, std = stack_images(arrays, grayscale)
    return ImageSet(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=list(ds.classes),
        mean=mean,
        std=std,
        name=f"imagefolder:{root}:{split}",
        paths=paths,
    )
