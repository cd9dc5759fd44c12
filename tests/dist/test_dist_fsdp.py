"""FSDP2 on 2 CPU processes (gloo) against DDP: same weights and losses after several steps.

The FSDP run also turns on activation checkpointing. Its checkpoints (gathered full state dicts)
must resume both under FSDP (weights broadcast then sharded, optimizer state resharded) and on one
process.
"""

import shutil

import pytest
from dist_helpers import TINY, check_ok, launch, losses, max_rel_diff, worker_cmd

from ijepa import checkpoint as ckpt
from ijepa.config import Config, apply_overrides
from ijepa.train.loop import train

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

    a = ckpt.load_checkpoint(ckpt.step_path(fsdp, 3))
    b = ckpt.load_checkpoint(ckpt.latest_path(ddp))
    assert a["step"] == b["step"] == 3
    for key in ("encoder", "predictor", "target_encoder"):
        assert set(a[key]) == set(b[key]), key  # plain names: no FSDP or recompute prefixes
        assert max_rel_diff(a[key], b[key]) < REL, key
    # the optimizer state was gathered into the single-process (id-keyed) layout
    assert set(a["opt"]["state"]) == set(b["opt"]["state"])
    for i, st in b["opt"]["state"].items():
        assert a["opt"]["state"][i]["exp_avg"].shape == st["exp_avg"].shape

    # step 4: FSDP resumed under FSDP, DDP's and FSDP's checkpoints resumed on one process
    fsdp_then_one = tmp_path / "fsdp_then_one"
    fsdp_then_one.mkdir()
    shutil.copy(ckpt.step_path(fsdp, 3), ckpt.latest_path(fsdp_then_one))
    for folder in (ddp, fsdp_then_one):
        one = [f"logging.folder={folder}", "data.batch_size=8", "optimization.max_steps=4"]
        train(apply_overrides(Config(), [*TINY, *one]))
    assert len(losses(fsdp)) == len(losses(ddp)) == 4
    assert losses(fsdp) == pytest.approx(losses(ddp), rel=REL)
    assert losses(fsdp_then_one) == pytest.approx(losses(ddp)[3:], rel=REL)
    end = ckpt.load_checkpoint(ckpt.latest_path(fsdp))
    for other in (ddp, fsdp_then_one):
        ref = ckpt.load_checkpoint(ckpt.latest_path(other))
        for key in ("encoder", "predictor", "target_encoder"):
            assert max_rel_diff(end[key], ref[key]) < REL, (other.name, key)
