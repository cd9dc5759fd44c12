"""Image files in class subfolders: a fault-tolerant ImageFolder and an in-memory loader.

Layout (as torchvision's ``ImageFolder``)::

    root/class_a/x.jpg, root/class_a/sub/y.png, root/class_b/z.jpeg, ...

:class:`ImageFolderDataset` never crashes an epoch on a bad file and never skips one silently:
a file that cannot be decoded (zero bytes, truncated, not an image, unreadable, decompression
bomb, dangling symlink) is logged with ``logger.warning`` naming the file, recorded in
``.skipped`` (path and reason) and replaced by the next good sample (index + 1, + 2, ...,
wrapping around), so the sample an index yields is deterministic. Errors raised by the
*transform* are not caught: they are bugs, not bad data.

Every decoded image is converted to 8-bit RGB: 16-bit and 32-bit integer greyscale is scaled
(PIL's own ``convert`` would clip it to white), float greyscale in [0, 1] is scaled by 255,
palette images go through RGBA, CMYK/YCbCr/LAB/1-bit/L through PIL's conversion; alpha is
dropped (as torchvision's default loader does).

Directory walking follows symlinks but not loops: a directory already visited in the same class
folder, or one that is the dataset root or an ancestor of it, is not entered again (logged and
recorded). Permissions: a file that cannot be opened (``PermissionError``) is skipped like any
other bad file; as root every file is readable, so a ``chmod 000`` file is simply read.

With a multi-process ``DataLoader`` each worker holds its own copy of ``.skipped``; call
:meth:`ImageFolderDataset.verify` in the main process first to find and count every bad file.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.datasets import DatasetFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.vision import VisionDataset

from ijepa.data.spec import DataSpecError

__all__ = ["IMG_EXTENSIONS", "ImageFolderDataset", "SkippedFile", "load_rgb", "to_rgb"]

logger = logging.getLogger(__name__)

#: What decoding a bad file can raise (PIL raises several types for corrupt data).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # unreadable, truncated, UnidentifiedImageError, PermissionError, ELOOP
    ValueError,
    SyntaxError,  # some PIL plugins on malformed headers
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


class SkippedFile(NamedTuple):
    """A file left out of a dataset, and why."""

    path: str
    reason: str


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        if mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            grey = arr.astype(np.uint8)  # 8-bit data stored as 32-bit ints
        else:
            grey = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)  # 16-bit range -> 8 bits
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        farr = np.asarray(img, dtype=np.float64)
        if farr.size and np.nanmax(farr) <= 1.0:
            farr = farr * 255.0
        grey = np.nan_to_num(np.clip(farr, 0.0, 255.0)).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode an image file as RGB.

    A decompression bomb (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels) raises instead of
    warning. Raises one of :data:`DECODE_ERRORS` for any bad file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: truncated data fails here, not later
            return to_rgb(img)


def _reason(err: BaseException) -> str:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb: {err}"
    return f"{type(err).__name__}: {err}"


def _ext_ok(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


class ImageFolderDataset(DatasetFolder):
    """torchvision-``ImageFolder``-compatible dataset that skips and counts bad files.

    Args:
        root: folder with one subfolder per class (subfolders may nest).
        transform: applied to the decoded RGB ``PIL.Image``; ``None`` returns a uint8 tensor
            ``(3, H, W)``.
        target_transform: applied to the label.
        extensions: accepted file name endings (case-insensitive).

    Attributes:
        classes, class_to_idx, samples, targets: as in ``torchvision.datasets.ImageFolder``.
        skipped: list of :class:`SkippedFile` (path, reason), in the order found.

    Raises:
        DataSpecError: ``root`` missing, not a folder, without class subfolders, or without any
            file with an accepted extension.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        target_transform: Callable[[int], Any] | None = None,
        extensions: tuple[str, ...] = IMG_EXTENSIONS,
    ) -> None:
        # DatasetFolder.__init__ walks with os.walk(followlinks=True), which loops on symlink
        # cycles; we set the same attributes ourselves with a loop-safe walk.
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.skipped: list[SkippedFile] = []
        self._bad: set[int] = set()
        self.extensions = tuple(e.lower() for e in extensions)
        self.loader = load_rgb
        self.classes, self.class_to_idx = self.find_classes(self.root)
        self.samples = self._scan(Path(self.root), self.class_to_idx)
        self.targets = [t for _, t in self.samples]
        if not self.samples:
            raise DataSpecError(
                f"image folder {self.root}: class folders {self.classes} hold no file ending in "
                f"{', '.join(self.extensions)}"
            )

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        """Sorted class subfolder names of ``directory`` and their indices."""
        d = Path(directory)
        if not d.is_dir():
            raise DataSpecError(f"image folder {d} does not exist or is not a directory")
        classes = sorted(e.name for e in os.scandir(d) if e.is_dir())
        if not classes:
            raise DataSpecError(f"image folder {d} has no class subfolders")
        return classes, {c: i for i, c in enumerate(classes)}

    def _scan(self, root: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
        real_root = os.path.realpath(root)
        samples: list[tuple[str, int]] = []
        for cls in sorted(class_to_idx):
            for path in self._walk(root / cls, real_root):
                samples.append((path, class_to_idx[cls]))
        return samples

    def _walk(self, top: Path, real_root: str) -> list[str]:
        """Files with an accepted extension under ``top``, sorted, each symlinked folder once."""
        found: list[str] = []
        visited: set[tuple[int, int]] = set()
        stack = [str(top)]
        while stack:
            d = stack.pop()
            try:
                st = os.stat(d)
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as err:  # ELOOP, permission denied, vanished
                self._skip_dir(d, f"{type(err).__name__}: {err}")
                continue
            real = os.path.realpath(d)
            ancestor = real_root == real or real_root.startswith(real.rstrip(os.sep) + os.sep)
            if (st.st_dev, st.st_ino) in visited or (ancestor and d != str(top)):
                self._skip_dir(d, f"symlink loop (folder {real} already walked)")
                continue
            visited.add((st.st_dev, st.st_ino))
            subdirs = []
            for e in entries:
                try:
                    is_dir = e.is_dir()  # follows symlinks
                except OSError as err:
                    self._skip_dir(e.path, f"{type(err).__name__}: {err}")
                    continue
                if is_dir:
                    subdirs.append(e.path)
                elif _ext_ok(e.name, self.extensions):
                    found.append(e.path)  # includes dangling symlinks: they fail to load
            stack.extend(reversed(subdirs))
        return sorted(found)

    def _skip_dir(self, path: str, reason: str) -> None:
        logger.warning("image folder: not entering %s: %s", path, reason)
        self.skipped.append(SkippedFile(path, reason))

    def decode(self, index: int) -> Image.Image | None:
        """Decode sample ``index`` as RGB, or record the skip and return ``None``."""
        if index in self._bad:
            return None
        path = self.samples[index][0]
        try:
            return self.loader(path)
        except DECODE_ERRORS as err:
            reason = _reason(err)
            logger.warning("image folder: skipping %s: %s", path, reason)
            self.skipped.append(SkippedFile(path, reason))
            self._bad.add(index)
            return None

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """``(image, label)`` of sample ``index``, or of the next good sample if it is bad."""
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for step in range(n):
            i = (index + step) % n
            img = self.decode(i)
            if img is None:
                continue
            sample: Any = self.transform(img) if self.transform is not None else pil_to_uint8(img)
            target: Any = self.samples[i][1]
            if self.target_transform is not None:
                target = self.target_transform(target)
            return sample, target
        raise DataSpecError(f"image folder {self.root}: none of its {n} files can be decoded")

    def verify(self) -> list[SkippedFile]:
        """Decode every file once; bad ones are recorded in ``.skipped`` and never tried again.

        Returns:
            The skipped files found so far (``self.skipped``).
        """
        for i in range(len(self.samples)):
            self.decode(i)
        return self.skipped

    @property
    def num_good(self) -> int:
        """Number of samples not known to be bad."""
        return len(self.samples) - len(self._bad)


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor ``(3, H, W)``."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre crop to ``size x size`` (bicubic)."""
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
