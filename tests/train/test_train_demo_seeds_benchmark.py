"""``benchmarks/demo_seeds.py``: seed parsing, bad input, and a tiny two-seed run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from benchmark_scripts import benchmark_script, load_benchmark

SCRIPT = benchmark_script("demo_seeds")


def test_parse_seeds():
    parse = load_benchmark("demo_seeds").parse_seeds
    assert parse("0,1,2") == [0, 1, 2]
    assert parse("0-3") == [0, 1, 2, 3]
    assert parse("0-1, 7") == [0, 1, 7]
    with pytest.raises(ValueError):
        parse(" , ")


def test_bad_seeds_exit_with_one_line():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "a-b"], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "--seeds" in proc.stderr and "Traceback" not in proc.stderr


def test_two_tiny_seeds_end_to_end(tmp_path):
    cmd = [
        sys.executable, str(SCRIPT), "--seeds", "0,1", "--parallel", "2", "--out", str(tmp_path),
        "--set", "data.dataset=embedded:256", "--epochs", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["seeds"] == [0, 1] and [r["seed"] for r in last["runs"]] == [0, 1]
    for run in last["runs"]:
        assert run["steps"] == 4 and run["train_processes"] == 1
        assert 0.0 <= run["knn_trained"] <= 1.0 and 0.0 <= run["linear_random"] <= 1.0
    runs = last["runs"]
    gains = [100 * (r["knn_trained"] - max(r["knn_random"], r["knn_raw"])) for r in runs]
    assert last["min_knn_gain_points"] == pytest.approx(min(gains), abs=0.01)
    lin = [100 * (r["linear_trained"] - max(r["linear_random"], r["linear_raw"])) for r in runs]
    assert last["min_linear_gain_points"] == pytest.approx(min(lin), abs=0.01)
    # the two seeds are different runs (different init, data order and masks)
    a, b = ((tmp_path / f"seed{s}" / "metrics.jsonl").read_text() for s in (0, 1))
    assert a != b
