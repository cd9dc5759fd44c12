"""``benchmarks/sweep.py``: one tiny job end to end, its table, and ``--reevaluate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ijepa.recipes import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "sweep.py"


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    tiny = " ".join(o for o in TINY_OVERRIDES if not o.startswith("data.dataset="))
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--data",
            "embedded:192",
            "--seeds",
            "0",
            "--steps",
            "3",
            "--test-images",
            "100",
            "--readouts",
            "avg",
            "--config",
            f"tiny={tiny} data.batch_size=16",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_sweep_runs_a_job_prints_its_row_and_reevaluates_it(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    first = _sweep(out)
    assert first.returncode == 0, first.stderr[-3000:]
    path = out / "tiny" / "embedded_192" / "seed0.json"
    rec = json.loads(path.read_text())
    assert rec["steps"] == 3 and rec["train_images"] == 192 and rec["test_images"] == 100
    for who in ("trained", "random"):
        assert 0.0 <= rec[who]["avg"]["knn"] <= 1.0 and 0.0 <= rec[who]["avg"]["linear"] <= 1.0
    assert 0.0 <= rec["raw"]["knn"] <= 1.0
    assert "| tiny | embedded:192 | avg | 1 |" in first.stdout
    # a second call finds the job done and trains nothing
    again = _sweep(out)
    assert again.returncode == 0 and "1 jobs, 0 to run" in again.stderr
    # --reevaluate: evaluated again from the checkpoint, same scores, training facts kept
    re = _sweep(out, "--reevaluate")
    assert re.returncode == 0, re.stderr[-3000:]
    assert "1 jobs, 1 to run" in re.stderr
    new = json.loads(path.read_text())
    assert "reevaluated" in new and new["steps"] == 3 and new["collapse"] == rec["collapse"]
    assert json.loads(path.with_suffix(".first.json").read_text()) == rec
    for who in ("trained", "random"):
        assert new[who]["avg"] == pytest.approx(rec[who]["avg"], abs=1e-3)
    assert new["raw"] == pytest.approx(rec["raw"], abs=1e-3)
