"""FSDP2 on 2 CPU processes (gloo) against DDP: same weights and losses after several steps.

The FSDP run also turns on activation checkpointing. Its checkpoints (sharded, one folder per
checkpoint: see tests/dist/test_dist_dcp.py) must resume both under FSDP and on one process, and
hold the same weights and optimizer state as DDP's single-file checkpoints.
"""

import shutil

import pytest
from dist_helpers import TINY, check_ok, launch, losses, max_rel_diff, worker_cmd

from ijepa import checkpoint as ckpt
from ijepa import sharded_checkpoint as sharded
from ijepa.config import apply_overrides
from ijepa.recipes import preset
from ijepa.train.loop import train
from ijepa.train.sharded import sharded_to_state

pytestmark = pytest.mark.distributed

REL = 1e-5


def test_fsdp_matches_ddp_and_checkpoints_move_between_modes(tmp_path):
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    fsdp_args = [
        f"logging.folder={fsdp}",
        "meta.parallel=fsdp",
        "meta.activation_checkpointing=true",
    ]
    jobs = [
        [f"logging.folder={ddp}", "data.batch_size=4", "optimization.max_steps=3"],
        [*fsdp_args, "data.batch_size=4", "optimization.max_steps=3", "logging.keep_every=3"],
        [*fsdp_args, "data.batch_size=4", "optimization.max_steps=4"],  # resume under FSDP
    ]
    check_ok(launch([worker_cmd(jobs)] * 2, timeout=480))

    a = sharded_to_state(sharded.step_dir(fsdp, 3))
    b = ckpt.load_checkpoint(ckpt.latest_path(ddp))
    assert a["step"] == b["step"] == 3
    for key in ("encoder", "predictor", "target_encoder"):
        assert set(a[key]) == set(b[key]), key  # plain names: no FSDP or recompute prefixes
        assert max_rel_diff(a[key], b[key]) < REL, key
    # the optimizer state converts to the single-process (id-keyed) layout
    assert set(a["opt"]["state"]) == set(b["opt"]["state"])
    for i, st in b["opt"]["state"].items():
        assert a["opt"]["state"][i]["exp_avg"].shape == st["exp_avg"].shape

    # step 4: FSDP resumed under FSDP, DDP's and FSDP's checkpoints resumed on one process
    fsdp_then_one = tmp_path / "fsdp_then_one"
    fsdp_then_one.mkdir()
    shutil.copytree(sharded.step_dir(fsdp, 3), sharded.step_dir(fsdp_then_one, 3))
    sharded.latest_dir(fsdp_then_one).symlink_to(sharded.step_dir(fsdp_then_one, 3).name)
    for folder in (ddp, fsdp_then_one):
        one = [f"logging.folder={folder}", "data.batch_size=8", "optimization.max_steps=4"]
        train(apply_overrides(preset("small-cpu"), [*TINY, *one]))
    assert len(losses(fsdp)) == len(losses(ddp)) == 4
    assert losses(fsdp) == pytest.approx(losses(ddp), rel=REL)
    assert losses(fsdp_then_one) == pytest.approx(losses(ddp)[3:], rel=REL)
    end = sharded_to_state(sharded.latest_dir(fsdp))
    # a one-process run without meta.parallel=fsdp goes on in the single-file format
    assert ckpt.latest_path(fsdp_then_one).is_file()
    for other in (ddp, fsdp_then_one):
        ref = ckpt.load_checkpoint(ckpt.latest_path(other))
        for key in ("encoder", "predictor", "target_encoder"):
            assert max_rel_diff(end[key], ref[key]) < REL, (other.name, key)
