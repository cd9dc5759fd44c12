"""optimization.time_limit_min: a clean stop at a step boundary, with a checkpoint to resume from."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ijepa import checkpoint as ckpt
from ijepa.config import Config, ConfigError, apply_overrides, validate
from ijepa.recipes import TINY_OVERRIDES
from ijepa.train.loop import train

TINY = [
    *TINY_OVERRIDES,
    "data.batch_size=8",
    "optimization.warmup=0.5",
    "logging.log_every=5",
]
STEPS_PER_EPOCH = 8  # 64 images / batch 8


def _cfg(folder, *extra):
    return apply_overrides(Config(), [*TINY, f"logging.folder={folder}", *extra])


def test_time_limit_stops_early_with_a_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "run"
    planned = 200 * STEPS_PER_EPOCH  # far more than fits in 0.6 s
    t0 = time.perf_counter()
    res = train(_cfg(run, "optimization.epochs=200", "optimization.time_limit_min=0.01"))
    elapsed = time.perf_counter() - t0
    assert res.time_limit_reached
    assert 1 <= res.step < planned
    # it stops at the first step boundary past 0.6 s: one tiny step (+ checkpoint) later at most
    assert elapsed < 0.6 + 30
    state = ckpt.load_checkpoint(ckpt.latest_path(run))
    assert state["step"] == res.step
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == res.step  # the stopping step is logged like a last step
    # the same run without the limit resumes from the stopping step (schedules unchanged)
    more = train(_cfg(run, "optimization.epochs=200", f"optimization.max_steps={res.step + 2}"))
    assert more.step == res.step + 2 and not more.time_limit_reached
    assert ckpt.load_checkpoint(ckpt.latest_path(run))["step"] == res.step + 2


def test_generous_time_limit_changes_nothing(tmp_path):
    res = train(_cfg(tmp_path / "run", "optimization.epochs=1", "optimization.time_limit_min=60"))
    assert res.step == STEPS_PER_EPOCH and not res.time_limit_reached


@pytest.mark.parametrize("value", ["0", "-1"])
def test_time_limit_must_be_positive(value):
    cfg = apply_overrides(Config(), [f"optimization.time_limit_min={value}"])
    with pytest.raises(ConfigError, match="time_limit_min"):
        validate(cfg)


@pytest.mark.distributed
def test_two_ranks_stop_together_at_a_log_step(tmp_path):
    """Each rank's clock differs: they follow rank 0's at log steps, so none waits for the other."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "ijepa",
        "-q",
        "train",
        *TINY,
        "data.batch_size=4",  # x 2 ranks: the same 8 steps per epoch
        f"logging.folder={run}",
        "optimization.epochs=200",
        "optimization.time_limit_min=0.01",
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC"))}
    procs = [
        subprocess.Popen(
            cmd,
            env={
                **base,
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "time_limit_min=0.01 reached" in outs[0][1]
    step = ckpt.load_checkpoint(ckpt.latest_path(run))["step"]
    assert step % 5 == 0 and 5 <= step < 200 * STEPS_PER_EPOCH  # logging.log_every=5
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == step
