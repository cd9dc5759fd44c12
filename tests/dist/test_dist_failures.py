"""Bad input in a 2-process job: a killed or hung rank, configs that differ, a corrupt checkpoint.

A dead or hung rank must end the job with a clear error within the collective timeout (plus the
short grace period used to name the unresponsive rank), never leave the others waiting.
"""

import json
import math
import os
import re
import signal
import subprocess
import time

import pytest
from dist_helpers import check_ok, launch, train_cmd, worker_cmd

pytestmark = pytest.mark.distributed

TIMEOUT_S = 10  # meta.dist_timeout_s; the naming grace period is min(10 s, timeout)
MARGIN_S = 20  # start-up of the error path on a loaded 2-core machine


def _long_run(folder):
    return train_cmd(
        f"logging.folder={folder}",
        "data.batch_size=4",
        "optimization.epochs=500",
        f"meta.dist_timeout_s={TIMEOUT_S}",
    )


def _stop_rank_one_mid_run(folder, sig, timing):
    """A ``watch`` callback: once rank 0 logged 2 steps, send ``sig`` to rank 1; time rank 0."""

    def watch(procs):
        metrics = folder / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert procs[0].poll() is None and procs[1].poll() is None, "a rank ended early"
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        os.kill(procs[1].pid, sig)
        t0 = time.monotonic()
        try:
            procs[0].wait(timeout=2 * TIMEOUT_S + MARGIN_S + 60)
            timing["rank0_exit_s"] = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            timing["rank0_exit_s"] = math.inf  # reported by the test with rank 0's stderr
        finally:
            if procs[1].poll() is None:
                os.kill(procs[1].pid, signal.SIGKILL)

    return watch


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_dead_or_hung_rank_ends_the_job_with_a_clear_error(tmp_path, sig):
    folder = tmp_path / "run"
    timing = {}
    cmds = [_long_run(folder)] * 2
    results = launch(cmds, timeout=300, watch=_stop_rank_one_mid_run(folder, sig, timing))
    rank0 = results[0]
    tail = rank0.err[-3000:]
    grace = min(10, TIMEOUT_S)
    assert timing["rank0_exit_s"] < TIMEOUT_S + grace + MARGIN_S, tail
    assert rank0.returncode != 0
    # the phase varies (a training step, or the metrics all-gather at a log step); a traceback
    # (DistributedError) or the CLI's one-line error, depending on the CLI's user-error list
    assert re.search(r"rank 0 of 2: .+ failed: rank\(s\) 1 did not respond", tail)
    assert "dead or hung" in tail
    if sig == signal.SIGSTOP:  # a hung peer is only given up after the collective timeout
        assert timing["rank0_exit_s"] >= TIMEOUT_S - 1
        assert "Timed out" in tail


def test_mismatched_configs_and_corrupt_checkpoint_fail_on_every_rank(tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "jepa-latest.pth.tar").write_bytes(b"PK\x03\x04 truncated checkpoint")
    jobs = {
        r: [
            [f"logging.folder={tmp_path / 'mismatch'}", f"data.batch_size={4 if r == 0 else 2}"],
            [f"logging.folder={corrupt}", "data.batch_size=4"],
        ]
        for r in (0, 1)
    }
    results = launch([worker_cmd(jobs[r], mode="codes") for r in (0, 1)], timeout=180)
    check_ok(results)
    for res in results:
        assert json.loads(res.out.strip().splitlines()[-1]) == [2, 2], res.err[-2000:]
        assert "the config differs across ranks" in res.err
        assert "data.batch_size=4 vs 2" in res.err
        assert "truncated or corrupt" in res.err  # rank 1 reports rank 0's finding
    assert not (corrupt / "metrics.jsonl").exists()
