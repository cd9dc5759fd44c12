"""Checkpoint files: atomic writes, safe reads, strict module loads. Depends only on torch.

The one module that reads and writes state files; training (:mod:`ijepa.train.checkpointer`,
:mod:`ijepa.train.resume`), :mod:`ijepa.compat` and :mod:`ijepa.viz` all go through it. A
training checkpoint is a dict in the official layout (``encoder``, ``predictor``,
``target_encoder``, ``opt``, ``scaler``, ``epoch``, ``loss``, ``batch_size``, ``world_size``,
``lr``) plus our keys: ``format_version``, ``step``, ``config`` (the resolved run config),
``model_args`` (enough to rebuild the networks) and ``rng``.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so ``latest`` is always either the old or the new complete file. Loads use
``torch.load(weights_only=True)``: a file that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and the reason."""


def latest_path(folder: str | Path, tag: str = "jepa") -> Path:
    """Path of the rolling ``latest`` checkpoint of a run folder."""
    return Path(folder) / f"{tag}-latest.pth.tar"


def step_path(folder: str | Path, step: int, tag: str = "jepa") -> Path:
    """Path of the numbered checkpoint kept at ``step``."""
    return Path(folder) / f"{tag}-step{step:08d}.pth.tar"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(err: BaseException) -> OSError | None:
    """The ``OSError`` that ``err`` is, or that it was raised from or while handling."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically to ``path`` (temporary file, fsync, rename).

    Raises:
        CheckpointError: the write failed (full disk, read-only folder, ...). The previous file
            at ``path`` is untouched and no temporary file is left behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(dict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write (a full disk) as a RuntimeError ("unexpected pos")
        # raised while handling the file's OSError: find that OSError for the message
        cause = _os_error(err)
        try:
            tmp.unlink(missing_ok=True)
        except OSError as cleanup_err:  # the folder itself may be unwritable
            logger.warning("could not remove temporary file %s: %s", tmp, cleanup_err)
        if cause is None:
            raise  # not an I/O failure: a bug, shown as it is
        reason = cause.strerror or str(cause)
        raise CheckpointError(f"could not write checkpoint {path}: {reason}") from err


def remove_stale_temps(folder: str | Path, tag: str = "jepa") -> list[Path]:
    """Delete the temporary files that killed checkpoint writes left in a run folder.

    Call it only where no other process is writing checkpoints into ``folder`` (at the start of
    a run, on the main process).

    Returns:
        The files removed.
    """
    stale = sorted(Path(folder).glob(f".{tag}-*.tmp-*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
        logger.warning("removed %s, left by an interrupted checkpoint write", tmp)
    return stale


def keep_copy(src: str | Path, dst: str | Path) -> None:
    """Keep a numbered copy of a checkpoint (a hard link where possible, else an atomic copy)."""
    src, dst = Path(src), Path(dst)
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        save_checkpoint(load_checkpoint(src), dst)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) with clear errors.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt file, or one that carries pickled
            code (which is never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it needs arbitrary unpickling (it may carry code), "
            f"which is never executed. Details: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError) as err:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: {str(err).splitlines()[0]}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Remove a DDP/compile prefix (``module.``, ``_orig_mod.``) from every key that has it."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(prefix) or key.startswith("_orig_mod."):
            key = key[len(prefix) :] if key.startswith(prefix) else key[len("_orig_mod.") :]
        out[key] = value
    return out


def load_module_state(module: nn.Module, state_dict: Mapping[str, Any], what: str) -> None:
    """Strict load that reports exactly which keys are missing, unexpected or mis-shaped."""
    sd = strip_prefix(state_dict)
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append("shape mismatch: " + "; ".join(mismatched[:5]))
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
        raise CheckpointError(f"{what} does not match the model architecture: " + " | ".join(parts))
    module.load_state_dict(sd, strict=True)


def rng_state() -> dict[str, Any]:
    """The global RNG states (CPU and, if present, CUDA)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    # RNG states are CPU byte tensors; a checkpoint loaded with ``map_location="cuda"`` holds
    # them on the GPU, where ``torch.set_rng_state`` rejects them.
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU of the saving machine; a machine with fewer GPUs restores the first ones
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
