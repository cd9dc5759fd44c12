"""Failure policies of the training loop, in process: failing checkpoint writes, NaN/Inf, overflow.

``logging.checkpoint_failure`` (stop | retry) and ``optimization.nan_policy`` (stop | skip); a
checkpoint is never written with non-finite weights. Failures are injected by patching names in
the ijepa modules (``ijepa.checkpoint.open``, ``ijepa.train.step.jepa_loss``).
"""

from __future__ import annotations

import builtins
import errno
import json
import logging
import math
import os

import pytest
import torch
from reliability_support import TINY, one_thread_fixture  # noqa: F401

from ijepa import checkpoint as ckpt
from ijepa.config import Config, ConfigError, apply_overrides
from ijepa.train import step as step_mod
from ijepa.train.guards import TrainingDiverged
from ijepa.train.loop import train


def _cfg(folder, *extra):
    return apply_overrides(Config(), [*TINY, f"logging.folder={folder}", *extra])


def _records(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def _fail_writes(monkeypatch, failing: set[int], code: int = errno.ENOSPC) -> None:
    """Checkpoint write number n (1-based) fails with ``code`` when the temp file is created."""
    real_open = builtins.open
    count = {"n": 0}

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            count["n"] += 1
            if count["n"] in failing:
                raise OSError(code, os.strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ckpt, "open", fake_open, raising=False)


def _finite(state) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for part in ("encoder", "predictor", "target_encoder")
        for t in state[part].values()
        if t.is_floating_point()
    )


def test_failed_checkpoint_stops_clearly_and_keeps_the_previous_one(tmp_path, monkeypatch):
    _fail_writes(monkeypatch, {2})
    with pytest.raises(ckpt.CheckpointError) as info:
        train(_cfg(tmp_path / "run"))
    msg = str(info.value)
    assert "No space left on device" in msg and "training stopped at step 8" in msg
    assert "(step 4), is intact" in msg and "logging.checkpoint_failure=retry" in msg
    state = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "run"))
    assert state["step"] == 4 and _finite(state)
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_retry_keeps_training_and_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, caplog):
    straight = train(_cfg(tmp_path / "straight"))
    _fail_writes(monkeypatch, {2, 3}, errno.EROFS)
    with caplog.at_level(logging.WARNING, logger="ijepa.train"):
        res = train(_cfg(tmp_path / "retry", "logging.checkpoint_failure=retry"))
    assert res.checkpoint_failures == 2
    warned = [r.getMessage() for r in caplog.records if "training continues" in r.getMessage()]
    assert len(warned) == 2 and "Read-only file system" in warned[0]
    assert "next attempt at step 12" in warned[0] and "(step 4)" in warned[1]
    assert any("2 checkpoint write(s) failed" in r.getMessage() for r in caplog.records)
    assert [r["loss"] for r in res.history] == [r["loss"] for r in straight.history]
    a = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "straight"))
    b = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "retry"))
    assert b["step"] == 16
    for key, value in a["target_encoder"].items():
        assert torch.equal(value, b["target_encoder"][key]), key


def test_retry_cannot_skip_the_last_checkpoint(tmp_path, monkeypatch):
    _fail_writes(monkeypatch, {4})  # 16 steps, a checkpoint every 4: write 4 is the last
    with pytest.raises(ckpt.CheckpointError, match="no later step to retry at"):
        train(_cfg(tmp_path / "run", "logging.checkpoint_failure=retry"))
    assert ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "run"))["step"] == 12


def test_checkpoint_failure_choices_are_checked():
    with pytest.raises(ConfigError, match="stop, retry"):
        apply_overrides(Config(), ["logging.checkpoint_failure=sometimes"])


def _bad_loss(monkeypatch, steps: set[int], value: float) -> None:
    real = step_mod.jepa_loss
    calls = {"n": 0}

    def bad(*args, **kwargs):
        loss = real(*args, **kwargs)
        i, calls["n"] = calls["n"], calls["n"] + 1
        return loss * value if i in steps else loss  # call i of a fresh run is step i

    monkeypatch.setattr(step_mod, "jepa_loss", bad)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_loss_stops_naming_the_step(tmp_path, monkeypatch, value):
    _bad_loss(monkeypatch, {9}, value)
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 9\b.*jepa-latest"):
        train(_cfg(tmp_path / "run"))
    state = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "run"))
    assert state["step"] == 8 and _finite(state)


def test_skip_policy_still_writes_checkpoint_and_final_steps(tmp_path, monkeypatch):
    """A skipped step that is also a checkpoint step (8) or the last one (16) still checkpoints."""
    _bad_loss(monkeypatch, {7, 15}, math.nan)
    res = train(_cfg(tmp_path / "run", "optimization.nan_policy=skip"))
    assert res.skipped_steps == 2
    state = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "run"))
    assert state["step"] == 16 and _finite(state)
    recs = _records(tmp_path / "run")
    assert [r["step"] for r in recs] == [s for s in range(1, 16) if s != 8]
    assert all(math.isfinite(r["loss"]) for r in recs)


def test_overflowing_weights_are_never_checkpointed(tmp_path):
    """lr 1e39: the first update makes the weights Inf while its loss was finite."""
    folder = tmp_path / "run"
    extra = ["optimization.lr=1e39", "optimization.start_lr=1e39", "logging.checkpoint_every=1"]
    with pytest.raises(TrainingDiverged, match=r"weights became non-finite .* by step 1\b"):
        train(_cfg(folder, *extra))
    assert not ckpt.latest_path(folder).exists()
    with pytest.raises(TrainingDiverged, match="weights became non-finite"):
        train(_cfg(folder, *extra, "optimization.nan_policy=skip"))
    assert not ckpt.latest_path(folder).exists()


def test_warmup_into_overflow_keeps_the_last_finite_checkpoint(tmp_path):
    folder = tmp_path / "run"
    extra = ["optimization.lr=1e39", "optimization.start_lr=1e-3", "logging.checkpoint_every=1"]
    with pytest.raises(TrainingDiverged, match="non-finite") as info:
        train(_cfg(folder, *extra))
    if ckpt.latest_path(folder).exists():
        state = ckpt.load_checkpoint(ckpt.latest_path(folder))
        assert _finite(state)
        assert str(ckpt.latest_path(folder)) in str(info.value)


class _FullDisk:
    """A binary file that raises ENOSPC once 64 KiB have been written (inside torch.save)."""

    def __init__(self, fh):
        self.fh, self.written = fh, 0

    def write(self, data):
        self.written += len(data)
        if self.written > 65536:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_save_checkpoint_on_a_full_disk(tmp_path, monkeypatch):
    """A disk that fills up inside torch.save: CheckpointError naming ENOSPC, old file intact.

    torch.save turns the file's OSError into a RuntimeError ("unexpected pos ..."), so
    ``save_checkpoint`` must look behind it (see docs/reliability.md).
    """
    path = tmp_path / "jepa-latest.pth.tar"
    ckpt.save_checkpoint({"w": torch.ones(3)}, path)
    real_open = builtins.open
    monkeypatch.setattr(
        ckpt,
        "open",
        lambda p, mode="r", *a, **k: _FullDisk(real_open(p, mode, *a, **k)),
        raising=False,
    )
    with pytest.raises(ckpt.CheckpointError, match="No space left on device"):
        ckpt.save_checkpoint({"w": torch.zeros(100_000)}, path)
    assert torch.equal(ckpt.load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
