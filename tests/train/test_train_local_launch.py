"""Local multi-process training (``launch_local``): batch split, results, and a failing rank."""

from __future__ import annotations

import json

import pytest

from ijepa import checkpoint as ckpt
from ijepa.config import Config, ConfigError, apply_overrides
from ijepa.recipes import TINY_OVERRIDES
from ijepa.train.local_launch import LaunchError, launch_local, split_batch


def _cfg(folder, *extra):
    return apply_overrides(
        Config(),
        [
            *TINY_OVERRIDES,
            "data.batch_size=8",
            "optimization.epochs=1",
            "optimization.warmup=1",
            "logging.log_every=1",
            f"logging.folder={folder}",
            *extra,
        ],
    )


def test_split_batch():
    assert split_batch(64, 2) == 32 and split_batch(7, 1) == 7
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        split_batch(64, 3)
    with pytest.raises(ValueError, match="procs must be >= 1"):
        split_batch(64, 0)


def test_invalid_config_fails_before_any_rank_starts(tmp_path):
    cfg = _cfg(tmp_path / "bad", "data.crop_size=18")  # not a multiple of the patch size
    with pytest.raises(ConfigError):
        launch_local(cfg, 2)
    assert not (tmp_path / "bad" / "launch_config.yaml").exists()


@pytest.mark.distributed
def test_two_ranks_train_with_the_global_batch(tmp_path):
    run = launch_local(_cfg(tmp_path / "run"), 2)
    # 64 images / global batch 8 = 8 steps, each rank taking 4 images a step
    state = ckpt.load_checkpoint(ckpt.latest_path(run))
    assert state["step"] == 8
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 9))
    assert "batch_size: 4" in (run / "launch_config.yaml").read_text()


@pytest.mark.distributed
def test_a_failing_rank_stops_the_launch_with_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path / "run", f"data.dataset=imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(LaunchError, match=r"rank \d of 2 exited with code 2"):
        launch_local(cfg, 2, poll_s=0.1)
