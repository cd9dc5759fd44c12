"""`ImageSet`: a labelled image set held in memory as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageSet", "channel_stats"]


@dataclass
class ImageSet:
    """A labelled image set held in memory.

    Attributes:
        images: uint8 ``(N, C, H, W)``, ``C`` in ``{1, 3}``.
        labels: int64 ``(N,)``, values in ``[0, len(classes))``.
        classes: class names, index = label.
        mean: per-channel mean for normalisation, in ``[0, 1]`` units (length ``C``).
        std: per-channel standard deviation, in ``[0, 1]`` units (length ``C``).
        name: a short name of the set (spec and split), for logs and reports.
        paths: the file each image was decoded from (sets read from files), or ``None``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        im, lab = self.images, self.labels
        if self.paths is not None and len(self.paths) != im.shape[0]:
            raise ValueError(
                f"ImageSet {self.name!r}: {len(self.paths)} paths for {im.shape[0]} images"
            )
        if im.dtype != torch.uint8 or im.ndim != 4 or im.shape[1] not in (1, 3):
            raise ValueError(
                f"ImageSet {self.name!r}: images must be uint8 (N, C, H, W) with C in {{1, 3}}, "
                f"got {im.dtype} {tuple(im.shape)}"
            )
        if lab.dtype != torch.int64 or lab.shape != (im.shape[0],):
            raise ValueError(
                f"ImageSet {self.name!r}: labels must be int64 ({im.shape[0]},), "
                f"got {lab.dtype} {tuple(lab.shape)}"
            )
        if len(self.mean) != im.shape[1] or len(self.std) != im.shape[1]:
            raise ValueError(
                f"ImageSet {self.name!r}: mean/std need {im.shape[1]} values, "
                f"got {self.mean} / {self.std}"
            )
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= len(self.classes)):
            raise ValueError(
                f"ImageSet {self.name!r}: labels span [{int(lab.min())}, {int(lab.max())}] "
                f"but there are {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, idx: torch.Tensor) -> ImageSet:
        """The images and labels at ``idx`` (int64 indices or a bool mask of length N).

        Classes, normalisation statistics and name are kept (and the paths of the rows kept).
        """
        paths = None
        if self.paths is not None:
            rows = torch.arange(len(self))[idx].reshape(-1).tolist()
            paths = [self.paths[i] for i in rows]
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            mean=self.mean,
            std=self.std,
            name=self.name,
            paths=paths,
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in ``[0, 1]`` units.

    Args:
        images: uint8 ``(N, C, H, W)``.

    Returns:
        ``(mean, std)``, each a tuple of ``C`` floats.
    """
    if images.numel() == 0:
        raise ValueError("channel_stats: no images")
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for chunk in images.split(4096):  # bounded memory for large sets
        x = chunk.transpose(0, 1).reshape(c, -1).to(torch.float64)
        total += x.sum(dim=1)
        total_sq += (x * x).sum(dim=1)
    count = images.numel() // c
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    std = var.sqrt().clamp_min(1e-3)
    return tuple(float(v) / 255.0 for v in mean), tuple(float(v) / 255.0 for v in std)
