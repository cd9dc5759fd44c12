"""The speed benchmarks run end to end on a tiny workload (``--quick``): ``throughput.py`` with
fixed mask sizes and the shared-context predictor, the official-step driver's refusal to run
without an official work tree (the official code itself is not part of this repository), and
``gpu_check.sh``'s CPU dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(
    *args: str, program: str = sys.executable, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``program args...`` in the repository, one thread, ``src`` importable, plus ``extra_env``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **extra_env}
    return subprocess.run(
        [program, *args], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )


@pytest.mark.slow
def test_throughput_quick_with_speed_options() -> None:
    proc = _run(
        "benchmarks/throughput.py",
        "--quick",
        "--dtypes",
        "fp32",
        "--threads",
        "1",
        "--set",
        "mask.fixed_sizes=true",
        "--set",
        "meta.pred_shared_context=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    assert row["img_per_s"] > 0 and row["gflop_per_step"] > 0
    assert row["peak_rss_mb"] <= row["peak_rss_with_count_mb"]
    assert len(row["every_step_s"]) == row["steps"] + row["warmup"]


def test_vs_official_needs_the_official_tree(tmp_path: Path) -> None:
    proc = _run("benchmarks/vs_official.py", "--official", str(tmp_path))
    assert proc.returncode != 0
    assert "facebookresearch/ijepa work tree" in proc.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu_prints_its_table(tmp_path: Path) -> None:
    """``benchmarks/gpu_check.sh`` end to end on the CPU (its documented dry run, eager only):
    every step runs, the logs and JSON rows land in ``GPU_CHECK_OUT``, and the table has a
    measured row per batch and dtype."""
    proc = _run(
        "benchmarks/gpu_check.sh",
        program="bash",
        PYTHON=sys.executable,
        GPU_CHECK_DEVICE="cpu",
        GPU_CHECK_COMPILE="0",
        GPU_CHECK_SLOW="6",
        GPU_CHECK_BUDGET_S="900",
        GPU_CHECK_OUT=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("b8_eager", "big_eager"):
        assert (tmp_path / f"{name}.status").read_text().startswith("ok"), name
        rows = [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert {r["dtype"] for r in rows} == {"fp32", "bf16"}
        assert all(r["img_per_s"] > 0 and r["device"] == "cpu" for r in rows)
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    measured = [line for line in table[1:] if "| ok in" in line]
    assert len(measured) == 4, proc.stdout[-3000:]  # batches 8 and 16, fp32 and bf16, eager
    assert {line.split("|")[1].strip() for line in measured} == {"8", "16"}
