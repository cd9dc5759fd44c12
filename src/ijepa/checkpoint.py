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
import pickletools
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


class CheckpointNotFoundError(CheckpointError):
    """The checkpoint file (or the run folder that should hold one) does not exist."""


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


_ZIP_MAGIC = b"PK\x03\x04"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unpickler_detail(err: BaseException) -> str:
    """The informative line of torch's long ``weights_only`` message (what it refused, and why)."""
    lines = [x.strip() for x in str(err).replace("WeightsUnpickler error:", "\n").splitlines()]
    lines = [x for x in lines if x]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line
    return lines[0] if lines else type(err).__name__


def _pickle_globals(path: Path, limit: int = 64 << 20) -> list[str] | None:
    """The globals (classes, functions) a plain pickle file names, read without running it.

    ``pickletools`` walks the opcodes; nothing is imported or called. None when the file is no
    readable pickle (or is larger than ``limit`` bytes).
    """
    if path.stat().st_size > limit:
        return None
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                found.append(".".join(strings[-2:]))
    except (ValueError, EOFError, IndexError):  # not a pickle, or cut short
        return None
    return found


def _needs_code(err: BaseException) -> bool:
    """Whether torch refused the pickle because it names a global (a class or a function)."""
    return isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err)


def _read_error(path: Path, err: BaseException) -> CheckpointError:
    """What failed when ``torch.load`` could not read ``path``, as a :class:`CheckpointError`.

    The file is looked at, not only the exception type: a zip archive without its end record
    was cut short; a file that is no zip archive at all is not a (current) torch checkpoint;
    pickled data that names a global is refused as possible code; a damaged archive member, or
    an exception whose cause we cannot tell, is reported with torch's own words.
    """
    if _needs_code(err):
        return CheckpointError(
            f"refusing to load {path}: it needs arbitrary unpickling (it may carry code), "
            f"which is never executed. Details: {_unpickler_detail(err)}"
        )
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as os_err:  # permissions, I/O: the file itself cannot be read
        return CheckpointError(f"cannot read checkpoint {path}: {os_err.strerror or os_err}")
    if head == _ZIP_MAGIC and not zipfile.is_zipfile(path):
        return CheckpointError(
            f"checkpoint {path} is truncated or corrupt: a zip archive ({size} bytes) without "
            "its end record, so it was cut short"
        )
    if head[:1] == b"\x80" and head != _ZIP_MAGIC:  # a plain pickle (protocol 2+), no zip archive
        names = _pickle_globals(path)
        if names:
            return CheckpointError(
                f"refusing to load {path}: a plain pickle that names {', '.join(names[:3])} "
                "and so needs arbitrary unpickling (it may carry code), which is never executed"
            )
    if head != _ZIP_MAGIC:
        detail = (
            _unpickler_detail(err) if isinstance(err, pickle.UnpicklingError) else _first_line(err)
        )
        return CheckpointError(
            f"checkpoint {path} is truncated or corrupt: not a torch zip archive (it starts with "
            f"{head!r}, {size} bytes; torch.load said {type(err).__name__}: {detail})"
        )
    if isinstance(err, RuntimeError) and "PytorchStreamReader" in str(err):
        return CheckpointError(
            f"checkpoint {path} is truncated or corrupt: a damaged zip archive member "
            f"({_first_line(err)})"
        )
    if isinstance(err, pickle.UnpicklingError):
        return CheckpointError(
            f"checkpoint {path} is truncated or corrupt: its pickled data is unreadable "
            f"({_unpickler_detail(err)})"
        )
    if isinstance(err, OSError):
        return CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}")
    return CheckpointError(
        f"could not load checkpoint {path}: torch.load raised {type(err).__name__}: "
        f"{_first_line(err)}"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) with clear errors.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: empty, cut short, damaged or not a checkpoint, unreadable (permissions,
            I/O), or carrying pickled code (never executed); the message says which.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        ValueError,
        IndexError,
        KeyError,
    ) as err:
        # torch.load reports a bad file with any of these; _read_error looks at the file to say
        # which failure it was (a bug elsewhere cannot raise here: only torch.load is inside)
        raise _read_error(path, err) from err
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
