"""Hugging Face datasets saved with ``save_to_disk``, loaded into an ImageSet.

``datasets`` is an optional dependency (``pip install 'ijepa[datasets]'``), imported only when an
``"hf:PATH"`` spec is loaded. ``PATH`` holds a ``DatasetDict`` (splits ``train`` and ``test``,
``validation``/``val`` accepted for test) or a single ``Dataset`` (then usable as the train split
only). Images (PIL images, ``{"bytes", "path"}`` dicts or arrays) are decoded to RGB (or L with
``grayscale=True``); labels may be a ``ClassLabel``, integers or strings.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from ijepa.data.folder import fit_square, to_rgb
from ijepa.data.imageset import ImageSet
from ijepa.data.spec import DataSpecError

__all__ = ["GREY_MEAN", "GREY_STD", "load_hf"]

logger = logging.getLogger(__name__)

#: Single-channel statistics used for greyscale sets (average of the ImageNet channels).
GREY_MEAN: tuple[float, ...] = (0.449,)
GREY_STD: tuple[float, ...] = (0.226,)

_SPLIT_NAMES = {"train": ("train",), "test": ("test", "validation", "val", "valid")}


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise DataSpecError(
            "'hf:PATH' specs need the Hugging Face 'datasets' package: "
            "pip install 'ijepa[datasets]' (or pip install datasets)"
        ) from err
    return datasets


def load_hf(
    path: str,
    split: str,
    *,
    image_column: str | None = None,
    label_column: str = "label",
    image_size: int | None = None,
    grayscale: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageSet:
    """Load split ``split`` of the dataset saved at ``path``.

    Args:
        path: folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.
        split: ``"train"`` or ``"test"``.
        image_column: column with the images (default: the first ``Image`` feature, else
            ``"image"`` or ``"img"``).
        label_column: column with the labels.
        image_size: resize (shorter side) and centre crop every image to this size; required
            when images differ in size.
        grayscale: keep one channel (L) instead of RGB.
        mean, std: normalisation statistics (default ImageNet's, or :data:`GREY_MEAN`).

    Returns:
        ImageSet with uint8 ``(N, C, H, W)`` images.
    """
    datasets = _import_datasets()
    try:
        obj = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataSpecError(f"hf:{path}: cannot load a saved dataset there ({err})") from err
    if isinstance(obj, datasets.DatasetDict):
        names = [n for n in _SPLIT_NAMES[split] if n in obj]
        if not names:
            raise DataSpecError(
                f"hf:{path} has splits {list(obj.keys())}, none of {list(_SPLIT_NAMES[split])}"
            )
        ds = obj[names[0]]
        all_splits = list(obj.values())
    else:
        if split != "train":
            raise DataSpecError(
                f"hf:{path} is a single Dataset without splits, usable as 'train' only; "
                f"save a DatasetDict with 'train' and 'test' to evaluate"
            )
        ds, all_splits = obj, [obj]
    col = image_column or _find_image_column(ds, datasets)
    for c in (col, label_column):
        if c not in ds.column_names:
            raise DataSpecError(f"hf:{path}: no column {c!r}; columns are {ds.column_names}")
    classes, to_index = _label_mapping(
        ds.features[label_column], all_splits, label_column, datasets
    )
    arrays, labels = [], []
    shapes: set[tuple[int, ...]] = set()
    for row in ds:
        img = to_rgb(_to_pil(row[col], path))
        img = img.convert("L") if grayscale else img
        if image_size is not None:
            img = fit_square(img, image_size)
        arr = np.asarray(img, dtype=np.uint8)
        shapes.add(arr.shape)
        if len(shapes) > 1:
            raise DataSpecError(
                f"hf:{path}: images differ in size ({sorted(shapes)}); pass image_size=N"
            )
        arrays.append(arr)
        labels.append(to_index(row[label_column]))
    if not arrays:
        raise DataSpecError(f"hf:{path}: split {split!r} is empty")
    images, default_mean, default_std = stack_images(arrays, grayscale)
    logger.debug("hf:%s %s: %d images", path, split, len(arrays))
    return ImageSet(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=classes,
        mean=tuple(mean) if mean is not None else default_mean,
        std=tuple(std) if std is not None else default_std,
        name=f"hf:{path}:{split}",
    )


def stack_images(
    arrays: list[np.ndarray], grayscale: bool
) -> tuple[torch.Tensor, tuple[float, ...], tuple[float, ...]]:
    """Decoded same-size uint8 arrays -> ``(N, C, H, W)`` uint8 images and default statistics.

    Args:
        arrays: ``(H, W)`` arrays if ``grayscale``, else ``(H, W, 3)``.
        grayscale: one channel (grey statistics) or three (ImageNet statistics).

    Returns:
        ``(images, mean, std)``; shared by the in-memory ImageFolder, WebDataset and HF loaders.
    """
    from ijepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    stacked = torch.from_numpy(np.stack(arrays))
    if grayscale:
        return stacked[:, None], GREY_MEAN, GREY_STD
    return stacked.permute(0, 3, 1, 2).contiguous(), IMAGENET_MEAN, IMAGENET_STD


def _find_image_column(ds: Any, datasets: Any) -> str:
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            return str(name)
    for name in ("image", "img"):
        if name in ds.column_names:
            return name
    raise DataSpecError(f"no image column found among {ds.column_names}; pass image_column=...")


def _label_mapping(
    feature: Any, all_splits: list[Any], column: str, datasets: Any
) -> tuple[list[str], Any]:
    """Class names and a value -> index function, consistent across all splits."""
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), int
    values = {v for s in all_splits for v in s[column]}
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise DataSpecError(f"label column {column!r} has negative labels")
        return [str(i) for i in range(int(max(values)) + 1)], int
    names = sorted(str(v) for v in values)
    lookup = {n: i for i, n in enumerate(names)}
    return names, lambda v: lookup[str(v)]


def _to_pil(value: Any, path: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        src = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        img = Image.open(src)
        img.load()
        return img
    arr = np.asarray(value)
    if arr.ndim in (2, 3) and arr.size:
        if arr.dtype != np.uint8:
            scale = 255.0 if arr.max() <= 1.0 else 1.0
            arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr if arr.ndim == 2 or arr.shape[2] != 1 else arr[:, :, 0])
    raise DataSpecError(f"hf:{path}: cannot read an image from a {type(value).__name__}")
