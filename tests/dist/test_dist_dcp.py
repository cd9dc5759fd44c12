"""Sharded (DCP) checkpoints of ``meta.parallel=fsdp``: 2 gloo ranks write one folder per
checkpoint, the job is killed (SIGKILL) mid-run, and the run resumes on 1 rank with the losses
of an uninterrupted 2-rank run; ``ijepa convert`` turns a sharded checkpoint into one file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from dist_helpers import TINY, check_ok, launch, losses, max_rel_diff, worker_cmd

from ijepa import checkpoint as ckpt
from ijepa import sharded_checkpoint as sharded
from ijepa.cli import main as cli_main
from ijepa.config import apply_overrides
from ijepa.recipes import preset
from ijepa.train.loop import train
from ijepa.train.sharded import sharded_to_state

pytestmark = pytest.mark.distributed

REL = 1e-5
FSDP = ["meta.parallel=fsdp", "data.batch_size=4", "logging.checkpoint_every=2"]


def _kill_after_checkpoint(run: Path, step: int, timeout: float = 400) -> object:
    """A ``launch`` watcher: SIGKILL every rank once ``latest`` holds ``step`` or later."""

    def watch(procs: list[subprocess.Popen]) -> None:
        deadline = time.monotonic() + timeout
        latest = sharded.latest_dir(run)
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if latest.is_symlink() and int(os.readlink(latest)[-12:-4]) >= step:
                break
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)

    return watch


def test_sharded_checkpoints_survive_a_kill_and_resume_on_one_rank(tmp_path) -> None:
    run, ref = tmp_path / "killed", tmp_path / "ref"
    # the uninterrupted 2-rank reference, 8 steps
    check_ok(
        launch([worker_cmd([[*FSDP, f"logging.folder={ref}", "optimization.max_steps=8"]])] * 2,
               timeout=600)
    )  # fmt: skip
    # the same run (16 steps planned), killed once a checkpoint of step 4 or later is published
    job = [*FSDP, f"logging.folder={run}", "logging.keep_every=4"]
    results = launch([worker_cmd([job])] * 2, timeout=600, watch=_kill_after_checkpoint(run, 4))
    assert all(r.returncode == -signal.SIGKILL for r in results), [r.err[-500:] for r in results]

    latest = sharded.latest_dir(run)
    killed_at = sharded.read_sharded_meta(latest)["step"]
    assert killed_at >= 4 and not ckpt.latest_path(run).exists()  # nothing gathered to one file
    assert (latest / "__0_0.distcp").is_file() and (latest / "__1_0.distcp").is_file()
    facts = sharded.read_sharded_meta(latest)
    assert facts["world_size"] == 2 and len(facts["rng_ranks"]) == 2
    assert sharded.step_dir(run, 4).is_dir()  # kept (logging.keep_every=4)

    # resume on one process, same global batch (8 = 2 x 4), to step 8
    one = [*TINY, *FSDP, "data.batch_size=8", f"logging.folder={run}", "optimization.max_steps=8"]
    result = train(apply_overrides(preset("small-cpu"), one))
    assert result.step == 8
    assert not list(run.glob(".*.tmp"))  # a write the kill cut short was cleaned up
    got, want = losses(run), losses(ref)
    assert len(got) == len(want) == 8
    assert got[:killed_at] == want[:killed_at]  # the killed run's own records, kept
    assert got[killed_at:] == pytest.approx(want[killed_at:], rel=REL)  # continued on 1 rank

    # the 1-rank continuation wrote step 8 sharded too; both convert to the same weights
    a, b = sharded_to_state(latest), sharded_to_state(sharded.latest_dir(ref))
    assert a["step"] == b["step"] == 8 and a["world_size"] == 1 and b["world_size"] == 2
    for key in ("encoder", "predictor", "target_encoder"):
        assert max_rel_diff(a[key], b[key]) < REL, key
    assert set(a["opt"]["state"]) == set(b["opt"]["state"])

    # ijepa convert: the single-file checkpoint, which resumes like any other
    whole = tmp_path / "whole" / "jepa-latest.pth.tar"
    assert cli_main(["convert", "--to", "ours", str(latest), str(whole)]) == 0
    state = ckpt.load_checkpoint(whole)
    assert state["step"] == 8 and max_rel_diff(state["encoder"], b["encoder"]) < REL
    nine = [
        *TINY,
        "data.batch_size=8",
        f"logging.folder={whole.parent}",
        "optimization.max_steps=9",
    ]
    assert train(apply_overrides(preset("small-cpu"), nine)).step == 9
    ckpt.load_checkpoint(whole)  # the single-file run kept its format
