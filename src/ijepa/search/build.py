"""From what a user has to a search index and its queries.

An index is built from a checkpoint and a data spec (the encoder embeds every image of one
split), or read from the features ``ijepa embed`` wrote (``.safetensors``, or ``.npy`` with its
``.labels.npy``). Queries are data-set indices (their indexed features are reused, and the item
itself is left out of its own answer) or image files (embedded with the same encoder, size and
normalisation as the index).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ijepa.data import DataSpecError, ImageSet, load_imageset, load_rgb
from ijepa.data.folder import DECODE_ERRORS, fit_square
from ijepa.search.index import SearchError, SimilarityIndex

__all__ = [
    "SearchSource",
    "embed_images",
    "index_from_checkpoint",
    "index_from_features",
    "read_feature_file",
    "read_query_images",
]

logger = logging.getLogger(__name__)

#: Poolings a search index can use (one vector per image).
SEARCH_POOLINGS = ("avg", "avg4")


@dataclass
class SearchSource:
    """A search index and what is needed to query it and to draw its items.

    Attributes:
        index: the feature index.
        data: the indexed images (row ``i`` of the index is image ``i``), or ``None`` when
            unknown (features read without their data spec).
        encoder: the encoder that made the features (needed to embed image files), or ``None``.
        img_size: the encoder's input side.
        mean, std: the normalisation the features were made with.
        pooling: ``avg`` or ``avg4``.
        info: where the index came from (checkpoint, encoder, data spec, split), for reports.
    """

    index: SimilarityIndex
    data: ImageSet | None = None
    encoder: nn.Module | None = None
    img_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pooling: str = "avg"
    info: dict[str, Any] = field(default_factory=dict)


def _check_pooling(pooling: str) -> None:
    if pooling not in SEARCH_POOLINGS:
        raise SearchError(f"pooling must be one of {', '.join(SEARCH_POOLINGS)}, got {pooling!r}")


def _load_encoder(
    checkpoint: str | Path, which: str, device: str | torch.device, img_size: int | None
) -> tuple[nn.Module, tuple[float, ...] | None, tuple[float, ...] | None, int]:
    from ijepa.compat import read_encoder
    from ijepa.eval.images import encoder_input_size

    encoder, meta = read_encoder(checkpoint, which=which, device=str(device))
    size = encoder_input_size(encoder)
    if img_size is not None and img_size != size:
        encoder.resize_pos_embed(img_size)
        size = img_size
    encoder.eval()
    logger.info("search encoder: the %s encoder of %s", meta.which or "(only)", checkpoint)
    return encoder, meta.mean, meta.std, size


def _features(
    encoder: nn.Module,
    data: ImageSet,
    *,
    pooling: str,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    progress: bool,
) -> Tensor:
    from ijepa.eval.images import features_of

    feats = features_of(
        encoder,
        data,
        poolings=(pooling,),
        img_size=size,
        batch_size=batch_size,
        device=next(encoder.parameters()).device,
        mean=mean,
        std=std,
        progress=progress,
    )
    return feats[pooling]


def index_from_checkpoint(
    checkpoint: str | Path,
    data_spec: str,
    *,
    split: str = "train",
    which: str = "target",
    pooling: str = "avg",
    img_size: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    faiss_factory: str = "Flat",
    progress: bool = True,
) -> SearchSource:
    """Embed every image of ``data_spec``'s ``split`` with a checkpoint's encoder and index it.

    The normalisation is the checkpoint's recorded one, else the data set's own statistics
    (as ``ijepa embed`` and ``ijepa eval`` do).
    """
    _check_pooling(pooling)
    encoder, mean, std, size = _load_encoder(checkpoint, which, device, img_size)
    data = load_imageset(data_spec, split)
    if mean is None or std is None:
        mean, std = data.mean, data.std
    feats = _features(
        encoder,
        data,
        pooling=pooling,
        size=size,
        mean=mean,
        std=std,
        batch_size=batch_size,
        progress=progress,
    )
    index = SimilarityIndex(
        feats,
        data.labels,
        classes=data.classes,
        names=data.paths,
        backend=backend,
        faiss_factory=faiss_factory,
    )
    info = {"checkpoint": str(checkpoint), "encoder": which, "data": data_spec, "split": split}
    return SearchSource(index, data, encoder, size, tuple(mean), tuple(std), pooling, info)


def read_feature_file(path: str | Path) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """Features, labels and metadata from ``ijepa embed``'s output.

    Args:
        path: ``FILE.safetensors`` (tensors ``features`` and ``labels`` and the checkpoint, encoder
            and data in its metadata) or ``FILE.npy`` (labels from ``FILE.labels.npy`` if there).

    Returns:
        ``(features (N, D) float32, labels (N,) int64 or None, metadata)``.
    """
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"feature file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = set(fh.keys())
                if "features" not in keys:
                    raise SearchError(
                        f"{path} holds {sorted(keys)}, not the 'features' tensor of ijepa embed"
                    )
                feats = fh.get_tensor("features")
                labels = fh.get_tensor("labels") if "labels" in keys else None
                meta = dict(fh.metadata() or {})
        except (SafetensorError, OSError) as err:
            raise SearchError(f"cannot read features from {path}: {err}") from err
    elif path.suffix == ".npy":
        try:
            feats = torch.from_numpy(np.load(path, allow_pickle=False))
            label_file = path.with_suffix(".labels.npy")
            labels = (
                torch.from_numpy(np.load(label_file, allow_pickle=False))
                if label_file.is_file()
                else None
            )
        except (OSError, ValueError) as err:
            raise SearchError(f"cannot read features from {path}: {err}") from err
        meta = {}
    else:
        raise SearchError(f"feature file must end in .safetensors or .npy, got {path}")
    if feats.ndim != 2:
        raise SearchError(
            f"{path}: features must be (N, D), got {tuple(feats.shape)} (embed with "
            "--pooling avg or avg4, not tokens)"
        )
    return feats.float(), (labels.long() if labels is not None else None), meta


def index_from_features(
    path: str | Path,
    *,
    data_spec: str | None = None,
    split: str | None = None,
    checkpoint: str | Path | None = None,
    which: str | None = None,
    img_size: int | None = None,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    faiss_factory: str = "Flat",
) -> SearchSource:
    """An index over the features ``ijepa embed`` wrote.

    The data spec, split, checkpoint and encoder default to what the file's metadata records;
    the data (for pictures and class names) and the encoder (for image-file queries) are loaded
    only when known. The data must have one image per feature row.
    """
    feats, labels, meta = read_feature_file(path)
    data_spec = data_spec or meta.get("data")
    split = split or meta.get("split") or "train"
    checkpoint = checkpoint or meta.get("checkpoint")
    which = which or meta.get("encoder") or "target"
    pooling = meta.get("pooling", "avg")
    data = None
    if data_spec:
        data = load_imageset(data_spec, split)
        if len(data) != feats.shape[0]:
            raise SearchError(
                f"{path} holds {feats.shape[0]} feature rows but {data_spec} ({split}) has "
                f"{len(data)} images; name the split they were made from with --split"
            )
        if labels is not None and not torch.equal(labels, data.labels):
            raise SearchError(f"{path}: its labels differ from those of {data_spec} ({split})")
    encoder, mean, std, size = None, None, None, None
    if checkpoint is not None and Path(checkpoint).exists():
        encoder, mean, std, size = _load_encoder(checkpoint, which, device, img_size)
        if (mean is None or std is None) and data is not None:
            mean, std = data.mean, data.std
    index = SimilarityIndex(
        feats,
        labels if labels is not None else (data.labels if data is not None else None),
        classes=data.classes if data is not None else None,
        names=data.paths if data is not None else None,
        backend=backend,
        faiss_factory=faiss_factory,
    )
    info = {"features": str(path), "checkpoint": checkpoint, "encoder": which}
    info.update(data=data_spec, split=split if data_spec else None)
    return SearchSource(index, data, encoder, size, mean, std, pooling, info)


def read_query_images(paths: Sequence[str | Path], *, channels: int, size: int) -> Tensor:
    """Decode image files for querying: uint8 ``(Q, channels, size, size)``.

    Each file is decoded as RGB (greyscale when ``channels == 1``), its shorter side resized to
    ``size`` and centre-cropped.

    Raises:
        DataSpecError: a file is missing or cannot be decoded (the message names it).
    """
    if channels not in (1, 3):
        raise SearchError(f"channels must be 1 or 3, got {channels}")
    out = []
    for path in paths:
        try:
            img = load_rgb(path)
        except DECODE_ERRORS as err:
            raise DataSpecError(f"query image {path}: {type(err).__name__}: {err}") from err
        img = fit_square(img, size)
        arr = np.asarray(img.convert("L") if channels == 1 else img, dtype=np.uint8)
        t = torch.from_numpy(arr.copy())
        out.append(t[None] if channels == 1 else t.permute(2, 0, 1))
    return torch.stack(out).contiguous()


def embed_images(source: SearchSource, images: Tensor, *, progress: bool = False) -> Tensor:
    """Features ``(Q, D)`` of uint8 images ``(Q, C, H, W)``, made as the index's were."""
    if source.encoder is None or source.img_size is None:
        raise SearchError(
            "querying with image files needs the encoder that made the index: give --checkpoint"
        )
    if source.mean is None or source.std is None:
        raise SearchError(
            "the normalisation of the indexed features is unknown (the checkpoint records none): "
            "give the data spec the features were made from (--data)"
        )
    queries = ImageSet(
        images=images,
        labels=torch.zeros(images.shape[0], dtype=torch.long),
        classes=["query"],
        mean=source.mean,
        std=source.std,
        name="queries",
    )
    return _features(
        source.encoder,
        queries,
        pooling=source.pooling,
        size=source.img_size,
        mean=source.mean,
        std=source.std,
        batch_size=256,
        progress=progress,
    )


def describe(source: SearchSource) -> str:
    """One line naming an index's origin."""
    return json.dumps({k: v for k, v in source.info.items() if v is not None})
