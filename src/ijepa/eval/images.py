"""Evaluation on images: an encoder plus a labelled data set in, protocol results out.

The rest of ``ijepa.eval`` holds the protocols on tensors and knows nothing of data sets (and
``ijepa.eval`` does not import this module); this one feeds them from :class:`ijepa.data.ImageSet`
objects through the package's one evaluation transform (:func:`ijepa.data.eval_transform_batch`),
and is what ``ijepa embed``, ``ijepa eval``, the demo, search and the quality benchmark call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ijepa.data import DEFAULT_CROP_PCT, ImageSet, eval_transform_batch
from ijepa.eval import (
    FeatureSet,
    attentive_probe,
    checkpoint_fingerprint,
    extract_features,
    knn_classify,
    linear_probe,
    lowshot_eval,
)

logger = logging.getLogger(__name__)

PROTOCOLS = ("linear", "knn", "lowshot", "attentive")


def eval_batches(
    data: ImageSet,
    size: int,
    *,
    batch_size: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic eval-transformed batches: images (B, C, size, size) float32, labels (B,).

    ``mean``/``std`` default to the set's own statistics (what our training used); ``crop_pct``
    is the evaluation crop (see :func:`ijepa.data.eval_transform_batch`).
    """
    mean = tuple(mean) if mean is not None else data.mean
    std = tuple(std) if std is not None else data.std
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size]
        yield (
            eval_transform_batch(images, size, mean=mean, std=std, crop_pct=crop_pct),
            data.labels[start : start + batch_size],
        )


def encoder_input_size(encoder: nn.Module) -> int:
    """The square image side an encoder was built for."""
    grid = getattr(encoder, "grid_size", None)
    patch = getattr(encoder, "patch_size", None)
    if grid is None or patch is None:
        raise ValueError("cannot tell the encoder's image size; pass img_size explicitly")
    p = patch if isinstance(patch, int) else patch[0]
    return int(grid[0]) * int(p)


def features_of(
    encoder: nn.Module,
    data: ImageSet,
    *,
    poolings: Sequence[str] = ("avg",),
    img_size: int | None = None,
    batch_size: int = 256,
    bf16: bool = False,
    device: str | torch.device = "cpu",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float = DEFAULT_CROP_PCT,
    cache: FeatureSet | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Frozen features of every image of ``data`` (see :func:`ijepa.eval.extract_features`)."""
    if cache is not None:
        hit = cache.load()
        if hit is not None:
            logger.info("features for '%s' read from cache %s", data.name, cache.path)
            return hit
    size = img_size or encoder_input_size(encoder)
    n_batches = (len(data) + batch_size - 1) // batch_size
    feats = extract_features(
        encoder,
        eval_batches(data, size, batch_size=batch_size, mean=mean, std=std, crop_pct=crop_pct),
        poolings=tuple(poolings),
        device=device,
        bf16=bf16,
        progress=progress,
        total=n_batches,
    )
    if cache is not None:
        cache.save(feats)
    return feats


def feature_cache(
    folder: str | Path | None,
    *,
    checkpoint: str | Path,
    which: str,
    data_spec: str,
    split: str,
    poolings: Sequence[str],
    img_size: int,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> FeatureSet | None:
    """A feature cache keyed by checkpoint, encoder choice, data, split, pooling, size and crop."""
    if folder is None:
        return None
    meta = {
        "checkpoint": checkpoint_fingerprint(checkpoint),
        "encoder": which,
        "data": data_spec,
        "split": split,
        "poolings": list(poolings),
        "img_size": img_size,
        "crop_pct": crop_pct,
    }
    name = f"{Path(str(checkpoint)).name}-{which}-{split}-{'_'.join(poolings)}-{img_size}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return FeatureSet(Path(folder) / f"{safe}.safetensors", meta)


def run_protocol(
    protocol: str,
    train: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    **options: Any,
) -> dict[str, Any]:
    """Run one protocol on cached features (``train``/``test`` from :func:`features_of`).

    kNN reads the ``"avg"`` entry and the attentive probe ``"tokens"``; the linear and low-shot
    grids use every entry. Raw-pixel features (:func:`pixel_features`) carry ``"pixels"`` (and
    ``"patches"``) instead, and are read in their place.
    """
    ytr, yte = train["labels"], test["labels"]
    if protocol == "knn":
        key = "avg" if "avg" in train else "pixels"
        return knn_classify(train[key], ytr, test[key], yte, **options)
    if protocol == "linear":
        return linear_probe(train, ytr, test, yte, **options)
    if protocol == "lowshot":
        return lowshot_eval(train, ytr, test, yte, **options)
    if protocol == "attentive":
        key = "tokens" if "tokens" in train else "patches"
        return attentive_probe(train[key], ytr, test[key], yte, **options)
    raise ValueError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")


def poolings_for(protocol: str, *, depth: int | None = None) -> tuple[str, ...]:
    """The poolings a protocol needs (the linear grid uses last-1 and last-4 layers)."""
    if protocol == "attentive":
        return ("tokens",)
    if protocol in ("linear", "lowshot"):
        return ("avg", "avg4") if depth is None or depth >= 4 else ("avg",)
    return ("avg",)


def pixel_features(
    data: ImageSet,
    *,
    img_size: int | None = None,
    patch_size: int | None = None,
    batch_size: int = 4096,
) -> dict[str, torch.Tensor]:
    """Raw pixels as features (the trivial baseline every encoder must beat).

    Args:
        data: the labelled images.
        img_size: eval-transform them to this size first (default: their own size).
        patch_size: also return the pixels cut into non-overlapping patches, as tokens.

    Returns:
        ``{"pixels": (N, C*S*S) float32, "labels": (N,)}``: the images after the eval transform,
        ``(x/255 - mean)/std`` with the set's statistics, flattened; with ``patch_size`` also
        ``"patches"``: ``(N, (S/p)^2, C*p*p)`` float16, the raw counterpart of patch tokens.
    """
    size = img_size or min(data.images.shape[-2:])
    parts, patches, labels = [], [], []
    for images, y in eval_batches(data, size, batch_size=batch_size):
        parts.append(images.flatten(1))
        if patch_size is not None:
            cut = torch.nn.functional.unfold(images, patch_size, stride=patch_size)
            patches.append(cut.transpose(1, 2).half())  # (B, patches, C*p*p)
        labels.append(y)
    out = {"pixels": torch.cat(parts), "labels": torch.cat(labels)}
    if patch_size is not None:
        out["patches"] = torch.cat(patches)
    return out


#: Readouts of frozen features that :func:`quick_probe` knows: the paper's average pooling of the
#: last layer, a 2 x 2 spatial grid of averages, all tokens concatenated (see
#: :mod:`ijepa.eval.features`).
READOUTS = ("avg", "grid", "flat")


def probe_features(
    train: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    key: str,
    *,
    lowshot: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """kNN (k=20, cosine), linear-probe (and 1 % low-shot) top-1 of one feature entry."""
    ytr, yte = train["labels"], test["labels"]
    out = {
        "knn": float(knn_classify(train[key], ytr, test[key], yte)["top1"]),
        "linear": float(linear_probe(train, ytr, test, yte, keys=(key,), seed=seed)["top1"]),
    }
    if lowshot:
        res = lowshot_eval(train, ytr, test, yte, fraction=0.01, keys=(key,), seed=seed)
        out["lowshot_1pct"] = float(res["mean"])
    return out


def quick_probe(
    encoder: nn.Module,
    train_set: ImageSet,
    test_set: ImageSet,
    *,
    img_size: int | None = None,
    progress: bool = True,
    lowshot: bool = False,
    readouts: Sequence[str] = ("avg",),
) -> dict[str, dict[str, float]]:
    """kNN, linear (and optionally 1 % low-shot) top-1 of an encoder's frozen features.

    Returns:
        ``{readout: {"knn": ..., "linear": ...[, "lowshot_1pct": ...]}}`` for each readout.
    """
    kw: dict[str, Any] = {"poolings": tuple(readouts), "img_size": img_size, "progress": progress}
    tr = features_of(encoder, train_set, **kw)
    te = features_of(encoder, test_set, **kw)
    return {r: probe_features(tr, te, r, lowshot=lowshot) for r in readouts}


def raw_probe(
    train_set: ImageSet, test_set: ImageSet, *, lowshot: bool = False
) -> dict[str, float]:
    """The same protocols as :func:`quick_probe` on raw pixels (:func:`pixel_features`)."""
    return probe_features(
        pixel_features(train_set), pixel_features(test_set), "pixels", lowshot=lowshot
    )
