"""``benchmarks/feature_directions.py``: its two statistics, and a run read end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from benchmark_scripts import benchmark_script, load_benchmark

SCRIPT = benchmark_script("feature_directions")


def test_eta_squared_and_r_squared():
    mod = load_benchmark("feature_directions")
    labels = torch.arange(4).repeat(50)  # (200,)
    by_class = labels.float() * 2.0 + 1.0
    assert mod.eta_squared(by_class, labels) == pytest.approx(1.0)
    within = torch.tensor([-1.0, 1.0]).repeat_interleave(4).repeat(25)  # same mean in each class
    assert mod.eta_squared(within, labels) == pytest.approx(0.0, abs=1e-9)
    x = torch.randn(200, generator=torch.Generator().manual_seed(0))
    assert mod.r_squared(x, 3 * x - 2) == pytest.approx(1.0)
    assert mod.r_squared(x, torch.zeros(200)) == 0.0


def test_a_tiny_run_end_to_end(tmp_path):
    from ijepa.config import Config, apply_overrides
    from ijepa.recipes import TINY_OVERRIDES
    from ijepa.train.loop import train

    train(
        apply_overrides(
            Config(),
            [*TINY_OVERRIDES, f"logging.folder={tmp_path}", "optimization.max_steps=2",
             "data.batch_size=8", "meta.input_norm=image"],
        )
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--data", "embedded:64", "--components", "3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["0", "1", "2"]
    shares = [float(row[1]) for row in rows]
    assert shares == sorted(shares, reverse=True) and 0.0 < sum(shares) <= 1.0 + 1e-6
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--components", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "--components" in bad.stderr and "Traceback" not in bad.stderr
