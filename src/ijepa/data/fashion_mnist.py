"""Fashion-MNIST from its gzipped idx files: a small idx parser, file search and download.

Where the files are looked for, in order:

1. the directory given in the spec (``"fashion-mnist:DIR"``): only there;
2. :data:`SYSTEM_DIR` (the Debian package ``dataset-fashion-mnist`` installs them there);
3. the cache directory (``root`` argument, default ``~/.cache/ijepa``) under ``fashion-mnist/``;
4. download into that cache directory from :data:`URL` (when ``download=True``, the default).

idx format (big-endian): two zero bytes, a dtype code (``0x08`` = uint8), the number of
dimensions, one uint32 per dimension, then the data. Images: ``0x00000803`` (N, 28, 28);
labels: ``0x00000801`` (N,).
"""

from __future__ import annotations

import gzip
import logging
import urllib.error
from pathlib import Path

import numpy as np
import torch

from ijepa.data.imageset import ImageSet
from ijepa.data.spec import DataSpecError

__all__ = [
    "CLASSES",
    "FILES",
    "MEAN",
    "STD",
    "SYSTEM_DIR",
    "URL",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
]

logger = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: split -> (images file, labels file)
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: MD5 of the canonical downloads (the Debian package recompresses, so its files differ).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Per-channel statistics of the 60 000 training images, in [0, 1] units (measured on them).
MEAN: tuple[float, ...] = (0.2860,)
STD: tuple[float, ...] = (0.3530,)

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # ndim -> magic for uint8 data


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a (gzipped) uint8 idx file with ``ndim`` dimensions.

    Args:
        path: ``.gz`` (or uncompressed) idx file.
        ndim: expected number of dimensions (1 for labels, 3 for images).

    Returns:
        uint8 array of the stored shape.

    Raises:
        DataSpecError: unreadable or corrupt file, wrong magic number, or size mismatch.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataSpecError(f"cannot read idx file {path}: {err}") from err
    if len(raw) < 4:
        raise DataSpecError(f"idx file {path} is too short ({len(raw)} bytes) to hold a header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataSpecError(
            f"idx file {path}: magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
            f"(uint8, {ndim} dimension{'s' if ndim > 1 else ''}); is it the right file?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataSpecError(f"idx file {path}: truncated header ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataSpecError(
            f"idx file {path}: header says shape {dims} ({expected} bytes with header) "
            f"but the file holds {len(raw)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _has_files(d: Path, split: str) -> bool:
    return all((d / name).is_file() for name in FILES[split])


def find_fashion_mnist(
    split: str,
    directory: str | Path | None = None,
    *,
    root: str | Path | None = None,
    download: bool = True,
) -> Path:
    """Return the directory holding ``split``'s two idx files, downloading them if needed.

    Raises:
        DataSpecError: files not found (message lists where it looked) or download failed.
    """
    if directory is not None:
        d = Path(directory).expanduser()
        if _has_files(d, split):
            return d
        missing = [n for n in FILES[split] if not (d / n).is_file()]
        raise DataSpecError(
            f"fashion-mnist: {d} lacks {', '.join(missing)}; put the gzipped idx files there "
            f"(from {URL}) or use 'fashion-mnist' without a directory to search the defaults"
        )
    cache = Path(root).expanduser() if root is not None else Path.home() / ".cache" / "ijepa"
    cache = cache / "fashion-mnist"
    for d in (SYSTEM_DIR, cache):
        if _has_files(d, split):
            return d
    if not download:
        raise DataSpecError(
            f"fashion-mnist: files for split {split!r} not found in {SYSTEM_DIR} or {cache}, "
            f"and download=False; install the Debian package dataset-fashion-mnist or put "
            f"{', '.join(FILES[split])} in one of those folders"
        )
    _download(split, cache)
    return cache


def _download(split: str, cache: Path) -> None:
    from torchvision.datasets.utils import download_url

    cache.mkdir(parents=True, exist_ok=True)
    for name in FILES[split]:
        if (cache / name).is_file():
            continue
        logger.info("downloading %s%s to %s", URL, name, cache)
        try:
            download_url(URL + name, str(cache), filename=name, md5=MD5[name])
        except (OSError, urllib.error.URLError, RuntimeError) as err:
            raise DataSpecError(
                f"fashion-mnist: could not download {URL}{name} into {cache} ({err}). "
                f"Without network access, install the Debian package dataset-fashion-mnist "
                f"(files in {SYSTEM_DIR}) or copy the four .gz files into {cache} "
                f"or a folder DIR and use 'fashion-mnist:DIR'"
            ) from err


def load_fashion_mnist(
    split: str, directory: str | None = None, *, root: str | None = None, download: bool = True
) -> ImageSet:
    """Load a Fashion-MNIST split as an ImageSet of uint8 ``(N, 1, 28, 28)`` images.

    Raises:
        DataSpecError: files missing or corrupt, or images and labels disagree.
    """
    d = find_fashion_mnist(split, directory, root=root, download=download)
    img_file, lab_file = FILES[split]
    images = read_idx(d / img_file, 3)
    labels = read_idx(d / lab_file, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataSpecError(
            f"fashion-mnist in {d}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= len(CLASSES):
        raise DataSpecError(f"fashion-mnist in {d}: label {int(labels.max())} out of range 0-9")
    logger.debug("fashion-mnist %s: %d images from %s", split, images.shape[0], d)
    return ImageSet(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(CLASSES),
        mean=MEAN,
        std=STD,
        name=f"fashion-mnist:{split}",
    )
