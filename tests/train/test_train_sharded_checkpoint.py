"""Sharded checkpoint folders in one process: publish, keep, and what a failure or a kill at
each moment of a write leaves behind (``latest`` always on a complete checkpoint)."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from ijepa import sharded_checkpoint as sharded
from ijepa.checkpoint import CheckpointError


def _state(value: float) -> dict:
    return {"models": {"w": torch.full((4, 3), value)}, "optim": {"step": torch.tensor(value)}}


def _write(folder, step: int, value: float, keep: bool = False):
    return sharded.write_sharded(
        _state(value), {"step": step}, [{"torch": torch.zeros(2)}], folder=folder, step=step,
        keep=keep,
    )  # fmt: skip


def _read(folder) -> float:
    template = _state(0.0)
    sharded.load_sharded(sharded.latest_dir(folder), template)
    return float(template["models"]["w"][0, 0])


def test_publish_replaces_latest_and_removes_the_previous(tmp_path) -> None:
    latest = _write(tmp_path, 2, 2.0, keep=True)
    assert latest.is_symlink() and os.readlink(latest) == "jepa-step00000002.dcp"
    _write(tmp_path, 4, 4.0)
    _write(tmp_path, 6, 6.0)
    names = sorted(p.name for p in tmp_path.iterdir())
    # step 2 was kept; step 4 went when step 6 replaced it
    assert names == ["jepa-latest.dcp", "jepa-step00000002.dcp", "jepa-step00000006.dcp"]
    assert _read(tmp_path) == 6.0
    meta = sharded.read_sharded_meta(sharded.latest_dir(tmp_path))
    assert meta["step"] == 6 and torch.equal(meta["rng_ranks"][0]["torch"], torch.zeros(2))
    _write(tmp_path, 6, 7.0)  # the same step again (a resumed run re-saving it)
    assert _read(tmp_path) == 7.0 and sharded.step_dir(tmp_path, 2).is_dir()


def test_a_failed_write_keeps_latest(tmp_path, monkeypatch) -> None:
    _write(tmp_path, 2, 2.0)
    import torch.distributed.checkpoint as dcp

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dcp, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        _write(tmp_path, 4, 4.0)
    monkeypatch.undo()
    assert _read(tmp_path) == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "jepa-latest.dcp",
        "jepa-step00000002.dcp",
    ]  # no temporary folder left


@pytest.mark.parametrize("moment", ["before_rename", "before_link_swap"])
def test_a_kill_while_publishing_leaves_latest_complete(tmp_path, monkeypatch, moment) -> None:
    _write(tmp_path, 2, 2.0)

    class Killed(BaseException):
        pass

    real_replace, real_symlink = os.replace, os.symlink

    def replace(src, dst, *a, **k):
        if moment == "before_rename" and str(src).endswith(".dcp.tmp"):
            raise Killed
        return real_replace(src, dst, *a, **k)

    def symlink(*a, **k):
        if moment == "before_link_swap":
            raise Killed
        return real_symlink(*a, **k)

    monkeypatch.setattr(sharded.os, "replace", replace)
    monkeypatch.setattr(sharded.os, "symlink", symlink)
    with pytest.raises(Killed):
        _write(tmp_path, 4, 4.0)
    monkeypatch.undo()
    assert _read(tmp_path) == 2.0  # latest still the complete step-2 checkpoint
    # the next start removes what the kill left, and the run goes on from step 2
    sharded.remove_stale_sharded_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "jepa-latest.dcp",
        "jepa-step00000002.dcp",
    ]  # the temporary folder, or the complete but unpublished step-4 folder, is gone
    _write(tmp_path, 4, 4.0)
    assert _read(tmp_path) == 4.0


def test_incomplete_or_foreign_folders_are_refused(tmp_path) -> None:
    _write(tmp_path, 2, 2.0)
    folder = sharded.step_dir(tmp_path, 2)
    (folder / sharded.META_FILE).unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        sharded.read_sharded_meta(folder)
    with pytest.raises(CheckpointError, match="not a sharded checkpoint"):
        sharded.read_sharded_meta(tmp_path)
    wrong = {"models": {"w": torch.zeros(5, 3)}, "optim": {"step": torch.tensor(0.0)}}
    with pytest.raises(CheckpointError, match="does not fit"):
        sharded.load_sharded(folder, wrong)
