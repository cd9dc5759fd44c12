"""A safetensors cache for extracted features, keyed by metadata so a stale cache is never reused.

The metadata is a flat JSON-able dict that identifies how the features were made: the checkpoint
(``checkpoint_fingerprint`` gives its resolved path, mtime and size), the encoder choice
(context or target), the poolings, the data spec and split, the image size, ... It is stored in
the safetensors header. ``load_features`` raises ``StaleFeatureCacheError`` when the stored
metadata differs from the expected one; ``FeatureSet.get_or_compute`` catches that, logs which
keys differ, recomputes and overwrites the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

logger = logging.getLogger(__name__)

_META_KEY = "ijepa_feature_meta"


class StaleFeatureCacheError(ValueError):
    """The cached features were made under different settings than the ones expected."""


def _normalise(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so tuples/lists and int/str keys compare the way they are stored."""
    try:
        out: dict[str, Any] = json.loads(json.dumps(dict(meta), sort_keys=True))
    except TypeError as err:
        raise ValueError(f"feature cache metadata must be JSON-serialisable: {err}") from err
    return out


def checkpoint_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identify a checkpoint by resolved path, modification time (ns) and size (bytes).

    A sharded checkpoint (a ``.dcp`` folder, possibly behind the ``latest`` symlink) is identified
    by its resolved folder, the newest modification time and the total size of its files.
    """
    p = Path(path)
    if p.is_dir():
        files = [f for f in sorted(p.resolve().rglob("*")) if f.is_file()]
        if not files:
            raise FileNotFoundError(f"checkpoint folder holds no files: {p}")
        stats = [f.stat() for f in files]
        return {
            "checkpoint": str(p.resolve()),
            "checkpoint_mtime_ns": max(s.st_mtime_ns for s in stats),
            "checkpoint_size": sum(s.st_size for s in stats),
        }
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    stat = p.stat()
    return {
        "checkpoint": str(p.resolve()),
        "checkpoint_mtime_ns": stat.st_mtime_ns,
        "checkpoint_size": stat.st_size,
    }


def save_features(
    path: str | os.PathLike[str], feats: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> None:
    """Write features and their metadata to a safetensors file (atomically, via a temp file).

    Args:
        path: Output file.
        feats: ``{name: tensor}``, e.g. the dict returned by ``extract_features``.
        meta: JSON-serialisable description of how the features were made.
    """
    if not feats:
        raise ValueError("save_features got no tensors to save")
    header = {_META_KEY: json.dumps(_normalise(meta), sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in feats.items()}, str(tmp), metadata=header
    )
    os.replace(tmp, path)


def read_feature_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata stored in a feature file (reads only the header)."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if _META_KEY not in header:
        raise StaleFeatureCacheError(f"{path} has no ijepa feature metadata; not a feature cache")
    meta: dict[str, Any] = json.loads(header[_META_KEY])
    return meta


def load_features(
    path: str | os.PathLike[str], expect_meta: Mapping[str, Any] | None = None
) -> dict[str, Tensor]:
    """Load features, refusing a file made under other settings.

    Args:
        path: A file written by ``save_features``.
        expect_meta: The metadata the caller needs; ``None`` skips the check.

    Returns:
        ``{name: tensor}`` on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StaleFeatureCacheError: the stored metadata differs from ``expect_meta`` (the message
            lists the differing keys).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"feature cache not found: {path}")
    if expect_meta is not None:
        stored = read_feature_meta(path)
        wanted = _normalise(expect_meta)
        if stored != wanted:
            diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            details = "; ".join(
                f"{k}: cached {stored.get(k)!r}, wanted {wanted.get(k)!r}" for k in diff
            )
            raise StaleFeatureCacheError(f"feature cache {path} is stale ({details})")
    out: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
            out[key] = f.get_tensor(key)
    return out


class FeatureSet:
    """A feature cache file bound to the metadata it must match.

    Example:
        >>> cache = FeatureSet("runs/x/feats_train.safetensors", meta)  # doctest: +SKIP
        >>> feats = cache.get_or_compute(lambda: extract_features(enc, batches, ("avg", "avg4")))

    Args:
        path: The safetensors file.
        meta: JSON-serialisable description of how the features are made.
    """

    def __init__(self, path: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.meta = _normalise(meta)

    def load(self) -> dict[str, Tensor] | None:
        """The cached features, or ``None`` when the file is missing or stale (logged)."""
        if not self.path.is_file():
            return None
        try:
            return load_features(self.path, self.meta)
        except StaleFeatureCacheError as err:
            logger.warning("%s; recomputing", err)
            return None

    def save(self, feats: Mapping[str, Tensor]) -> None:
        """Write ``feats`` with this set's metadata."""
        save_features(self.path, feats, self.meta)

    def get_or_compute(self, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """Return the cached features if fresh, else call ``compute()``, save and return them."""
        feats = self.load()
        if feats is not None:
            logger.info("loaded cached features from %s", self.path)
            return feats
        feats = compute()
        self.save(feats)
        logger.info("saved features to %s", self.path)
        return feats
