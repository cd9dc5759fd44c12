"""Sharded checkpoints: one folder per checkpoint, written by every rank with torch's
distributed checkpoint (DCP), published atomically, readable under any world size.

Layout of a run folder using them (``meta.parallel=fsdp`` with several processes)::

    jepa-step00000100.dcp/      one checkpoint: DCP's .metadata and __R_0.distcp shard files,
        ijepa.json              plus the run facts (step, config, model_args, batch sizes, ...)
        rng.pt                  and every rank's RNG state (rank 0 writes both)
    jepa-latest.dcp -> jepa-step00000100.dcp     a symlink: the checkpoint to resume from

Kill safety, as the single-file writer's temporary file + rename: every rank writes into
``.jepa-step00000100.dcp.tmp``; once all have finished, rank 0 writes ``ijepa.json`` (last, so
a folder with it is complete), fsyncs, renames the folder to its final name, then atomically
replaces the ``latest`` symlink (a new symlink renamed over the old one) and only then removes
the checkpoint ``latest`` pointed to before (unless a ``logging.keep_every`` copy). A kill at any
moment leaves ``latest`` on a complete checkpoint; leftover ``.tmp`` folders are removed at the
next start.

The tensors are whatever state dict the caller gives (FSDP's sharded DTensors, or plain tensors
on one process); DCP reshards them on load into the template the loading job builds, so a
checkpoint written by 2 ranks loads on 1 or 4. Only this module and :mod:`ijepa.checkpoint` do
file I/O for training state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ijepa.checkpoint import CheckpointError

__all__ = [
    "META_FILE",
    "is_sharded",
    "latest_dir",
    "load_sharded",
    "read_sharded_meta",
    "remove_stale_sharded_temps",
    "step_dir",
    "write_sharded",
]

logger = logging.getLogger(__name__)

#: The run facts of a sharded checkpoint (JSON), written last.
META_FILE = "ijepa.json"
#: Every rank's RNG state, a list in rank order (``torch.save``, loaded with weights_only).
RNG_FILE = "rng.pt"


def latest_dir(folder: str | Path, tag: str = "jepa") -> Path:
    """The ``latest`` symlink of a run folder's sharded checkpoints."""
    return Path(folder) / f"{tag}-latest.dcp"


def step_dir(folder: str | Path, step: int, tag: str = "jepa") -> Path:
    """The folder of the sharded checkpoint of ``step``."""
    return Path(folder) / f"{tag}-step{step:08d}.dcp"


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` is (or links to) a sharded checkpoint folder."""
    p = Path(path)
    return p.is_dir() and (p / ".metadata").is_file()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_sharded_temps(folder: str | Path, tag: str = "jepa") -> list[Path]:
    """Delete what killed sharded writes left (main process, at the start of a run).

    That is the ``.tmp`` folders, and complete checkpoints newer than ``latest`` that a kill
    stopped before they were published (unless written as ``logging.keep_every`` copies).

    Returns:
        The folders removed.
    """
    folder = Path(folder)
    stale = sorted(folder.glob(f".{tag}-step*.dcp.tmp"))
    latest = latest_dir(folder, tag)
    if latest.is_symlink():
        current = latest.resolve()
        newer = [
            p
            for p in sorted(folder.glob(f"{tag}-step*.dcp"))
            if p.is_dir() and p.name > current.name and not _kept(p)
        ]
        stale += newer
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        logger.warning("removed %s, left by an interrupted sharded checkpoint write", path)
    return stale


def write_sharded(
    state: dict[str, Any],
    meta: dict[str, Any],
    rng_ranks: list[Any] | None,
    *,
    folder: str | Path,
    step: int,
    tag: str = "jepa",
    keep: bool = False,
    is_main: bool = True,
    all_gather: Callable[[Any], list[Any]] = lambda obj: [obj],
) -> Path:
    """Write one sharded checkpoint with every rank and publish it as ``latest``.

    A collective: every rank calls it with its own shards in ``state``.

    Args:
        state: nested dict of tensors (DTensors under FSDP); DCP writes each rank's shards.
        meta: JSON-able run facts (step, config, ...), written by the main process.
        rng_ranks: every rank's RNG state (the main process writes it).
        folder: the run folder.
        step: the checkpoint's step (names its folder).
        keep: keep this checkpoint when a later one replaces it as ``latest``.
        is_main: this process writes the metadata and publishes.
        all_gather: gathers one object from every rank (the process group's
            ``all_gather_object``; the default is for one process).

    Returns:
        The ``latest`` symlink.

    Raises:
        CheckpointError: the write failed on some rank (every rank raises); ``latest`` still
            points at the previous checkpoint.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    def first_error(mine: str | None) -> None:
        errors = [e for e in all_gather(mine) if e]
        if errors:
            if is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(errors[0])

    folder = Path(folder)
    final = step_dir(folder, step, tag)
    tmp = final.with_name(f".{final.name}.tmp")
    latest = latest_dir(folder, tag)
    error = None
    if is_main:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        except OSError as err:
            error = f"could not create {tmp}: {err.strerror or err}"
    first_error(error)
    try:
        # every rank writes its shards (no_dist: one process, no process group to join)
        with _single_process_is_meant():
            dcp.save(state, checkpoint_id=str(tmp), no_dist=not _distributed())
    except (OSError, RuntimeError, CheckpointException) as err:  # a full disk, a read-only folder
        error = f"could not write sharded checkpoint {final}: {_first_line(err)}"
    first_error(error)
    if is_main:
        try:
            _publish(tmp, final, latest, meta, rng_ranks, keep=keep)
        except OSError as err:
            error = f"could not publish sharded checkpoint {final}: {err.strerror or err}"
    first_error(error)
    return latest


@contextlib.contextmanager
def _single_process_is_meant() -> Iterator[None]:
    """Silence DCP's warning that it assumes one process: here that is what we ask for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable")
        yield


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _publish(
    tmp: Path, final: Path, latest: Path, meta: dict[str, Any], rng: Any, *, keep: bool
) -> None:
    """Main process: metadata, fsync, rename the folder, swap the ``latest`` link, clean up."""
    torch.save(rng, tmp / RNG_FILE)
    meta_tmp = tmp / f".{META_FILE}.tmp"
    meta_tmp.write_text(json.dumps({**meta, "keep": keep}, indent=1, sort_keys=True) + "\n")
    os.replace(meta_tmp, tmp / META_FILE)
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    previous = latest.resolve() if latest.is_symlink() else None
    if final.exists():  # the same step written again (a resumed run that re-saves it)
        if previous is not None and previous == final.resolve():
            previous = None  # about to be replaced below; nothing else to remove
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = latest.with_name(f".{latest.name}.link-tmp")
    link_tmp.unlink(missing_ok=True)
    os.symlink(final.name, link_tmp)  # relative: the run folder can move
    os.replace(link_tmp, latest)
    _fsync(final.parent)
    stale = previous is not None and previous != final.resolve() and previous.is_dir()
    if stale and previous is not None and not _kept(previous):
        shutil.rmtree(previous, ignore_errors=True)


def _kept(path: Path) -> bool:
    try:
        return bool(json.loads((path / META_FILE).read_text()).get("keep", False))
    except (OSError, json.JSONDecodeError):
        return False


def read_sharded_meta(path: str | Path) -> dict[str, Any]:
    """The run facts (``ijepa.json``) and RNG states (key ``rng_ranks``) of a checkpoint folder.

    Raises:
        CheckpointError: not a complete sharded checkpoint.
    """
    p = Path(path)
    if not is_sharded(p):
        raise CheckpointError(f"{p} is not a sharded checkpoint folder (no DCP .metadata)")
    try:
        meta = json.loads((p / META_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"sharded checkpoint {p} is incomplete (no {META_FILE})") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"sharded checkpoint {p}: unreadable {META_FILE}: {err}") from err
    rng_file = p / RNG_FILE
    if rng_file.is_file():
        try:
            meta["rng_ranks"] = torch.load(rng_file, weights_only=True)
        except (RuntimeError, OSError, EOFError) as err:
            raise CheckpointError(f"sharded checkpoint {p}: unreadable {RNG_FILE}: {err}") from err
    return meta


def load_sharded(
    path: str | Path, template: dict[str, Any], *, this_process_only: bool = False
) -> None:
    """Fill ``template`` in place from a sharded checkpoint (a collective with several ranks).

    ``template`` holds tensors shaped (and sharded) as this job wants them; DCP reads and
    reshards the saved ones into them. Keys missing from the checkpoint, or of another shape,
    raise. ``this_process_only``: read without the process group (whole tensors, on one rank).

    Raises:
        CheckpointError: unreadable, or not matching the template.
    """
    import torch.distributed.checkpoint as dcp

    p = Path(path)
    if not is_sharded(p):
        raise CheckpointError(f"{p} is not a sharded checkpoint folder (no DCP .metadata)")
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _single_process_is_meant():
            no_dist = this_process_only or not _distributed()
            dcp.load(template, checkpoint_id=str(p), no_dist=no_dist)
    except (RuntimeError, ValueError, KeyError, OSError, CheckpointException) as err:
        raise CheckpointError(
            f"sharded checkpoint {p} does not fit this run: {_first_line(err)}"
        ) from err
