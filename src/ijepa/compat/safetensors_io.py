"""safetensors files: encoder weights with their architecture, written atomically, read safely.

safetensors holds only tensors and a string-to-string header, so nothing in it can run code. Our
encoder files use the official/timm parameter names and put an :class:`EncoderMeta` (architecture,
which encoder, normalisation) as JSON under the header key ``ijepa``; the key ``format: pt`` is
what transformers and timm expect. Sharded HF folders (``model.safetensors.index.json``) are read
too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ijepa.compat.arch import ConversionError, EncoderMeta

__all__ = [
    "META_KEY",
    "load_tensors",
    "read_header",
    "read_keys",
    "read_meta",
    "save_tensors",
]

logger = logging.getLogger(__name__)

META_KEY = "ijepa"


def _detach_for_save(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no shared storage (safetensors refuses aliasing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"cannot save '{key}': a {type(value).__name__}, not a tensor")
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()
        seen.add(ptr)
        out[key] = t
    return out


def save_tensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | Path,
    meta: EncoderMeta | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` to a safetensors file atomically (temporary file, then rename).

    Args:
        tensors: name -> tensor; non-contiguous or aliased tensors are copied.
        path: destination file.
        meta: stored as JSON under the header key ``ijepa``.
        extra: more string header entries.

    Raises:
        ConversionError: the file cannot be written.
    """
    path = Path(path)
    header = {"format": "pt", **(extra or {})}
    if meta is not None:
        header[META_KEY] = json.dumps(meta.to_json(), sort_keys=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_detach_for_save(tensors), str(tmp), metadata=header)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConversionError(f"could not write {path}: {err.strerror or err}") from err
    logger.debug("wrote %d tensors to %s", len(tensors), path)


def read_header(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty dict if it has none)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ConversionError(f"cannot read safetensors file {path}: {err}") from err


def read_keys(path: str | Path) -> list[str]:
    """The tensor names of a safetensors file, without reading the tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return list(fh.keys())
    except (SafetensorError, OSError) as err:
        raise ConversionError(f"cannot read safetensors file {path}: {err}") from err


def read_meta(path: str | Path) -> EncoderMeta | None:
    """The :class:`EncoderMeta` stored by :func:`save_tensors`, or ``None``."""
    raw = read_header(path).get(META_KEY)
    if raw is None:
        return None
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: malformed '{META_KEY}' metadata: {err}") from err
    return EncoderMeta.from_json(data, str(path))


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ConversionError(f"cannot read safetensors file {path}: {err}") from err


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or of a sharded set given its ``*.index.json``."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"weights file not found: {path}")
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as err:
            raise ConversionError(f"{path}: not a safetensors shard index ({err})") from err
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            out.update(_load_one(path.parent / shard))
        missing = sorted(set(weight_map) - set(out))
        if missing:
            raise ConversionError(
                f"{path}: shards lack {len(missing)} indexed tensors: {missing[:5]}"
            )
        return out
    return _load_one(path)
