"""The fault-injection suite's short mode (``fault_suite.py --short``) as tests.

One run of the suite (~1-2 minutes on two loaded cores) is shared by the tests below: one test
per row of its table (a drill that could not run here, e.g. a real tmpfs where ``mount`` is not
permitted, is a skipped test with the reason, never a pass), and one per family of faults.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fault_scenarios import ALL_ROWS, DISK_ROWS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
FULL_DISK = (DISK_ROWS[0], DISK_ROWS[2], DISK_ROWS[3])
"""Rows where torch.save reports the full disk as a RuntimeError wrapping the OSError."""


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("faults")
    proc = subprocess.run(
        [sys.executable, str(HERE / "fault_suite.py"), "--short", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=850,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, (
        f"no JSON line; exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    out = json.loads(lines[-1])
    out["rows"] = {r["fault"]: r for r in out["rows"]}
    return out


def _survived(suite: dict, prefix: str) -> list[dict]:
    """The rows of a family that ran (rows with no trial are the per-row tests' skips)."""
    rows = [r for name, r in suite["rows"].items() if name.startswith(prefix)]
    assert rows, f"no rows starting with {prefix!r}"
    ran = [r for r in rows if r["trials"] > 0]
    for r in ran:
        assert r["survived"] == r["trials"], r
    return ran


def test_the_table_has_every_row(suite):
    assert list(suite["rows"]) == list(ALL_ROWS)


@pytest.mark.parametrize("name", ALL_ROWS)
def test_every_trial_of_the_row_survived(suite, name):
    row = suite["rows"][name]
    if row["trials"] == 0:
        pytest.skip(f"{name}: {row['outcome'] or 'no trial ran'}")
    assert row["survived"] == row["trials"], row


def test_kills_lose_at_most_one_interval_and_resume_exactly(suite):
    rows = _survived(suite, "SIGKILL")
    assert len(rows) == 4 and all(r["trials"] >= 1 for r in rows)
    assert all(r["worst_steps_lost"] <= 4 for r in rows)
    assert suite["kill_trials"] >= 4


def test_failing_checkpoint_writes_stop_clearly_or_retry(suite):
    rows = _survived(suite, "checkpoint write")
    rows += _survived(suite, "read-only folder")
    assert sum(r["trials"] for r in rows) >= 2


def test_full_disk_stops_clearly(suite):
    ran = [suite["rows"][name] for name in FULL_DISK if suite["rows"][name]["trials"]]
    assert len(ran) >= 2  # the injected ones always run; the real tmpfs one is its row's test
    for row in ran:
        assert row["survived"] == row["trials"], row


def test_nonfinite_losses_and_weights(suite):
    rows = _survived(suite, "NaN") + _survived(suite, "Inf") + _survived(suite, "learning rate")
    assert len(rows) == 4


def test_dead_data_loader_worker_is_an_error_not_a_hang(suite):
    assert len(_survived(suite, "data-loader worker")) == 2


def test_hostile_inputs_read_or_skipped_and_logged(suite):
    hostile = suite["hostile"]
    assert hostile["ok"], hostile
    assert len(hostile["inputs"]) >= 15
    assert all("completed: True" in line for line in hostile["runs"])
