"""``benchmarks/ablations.py``: verdicts, the summary and table, bad input, a tiny run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmark_scripts import REPO, benchmark_script, load_benchmark

SCRIPT = benchmark_script("ablations")


ab = load_benchmark("ablations")


def test_verdict_follows_every_seed() -> None:
    assert ab.verdict("lower", [-3.0, -0.5, -1.0]) == "yes"
    assert ab.verdict("lower", [2.0, 0.5, 1.0]) == "no (reversed)"
    assert ab.verdict("lower", [-2.0, 0.5, -1.0]) == "mixed"
    assert ab.verdict("higher", [2.0, 0.5]) == "yes"
    assert ab.verdict("higher", [0.0, 1.0]) == "mixed"  # a tie is no evidence either way
    assert ab.verdict(None, [5.0]) == "no claim"
    assert ab.verdict("lower", []) == "no baseline"


def _record(seed: int, linear: float, ips: float = 100.0) -> dict[str, Any]:
    rec: dict[str, Any] = {"img_per_s": ips, "steps": 50 + seed}
    for prefix in ("", "random_", "raw_"):
        for metric in ("knn", "linear", "lowshot_1pct"):
            rec[prefix + metric] = linear if prefix == "" else 0.1
            rec[prefix + metric + "_std"] = 0.0
    return rec


def test_summary_pairs_seeds_with_the_baseline_and_writes_a_table() -> None:
    base, pixels = ab.BY_NAME["i-jepa"], ab.BY_NAME["pixels"]
    cells = [ab.Cell("embedded", v, s) for s in (0, 1) for v in (base, pixels)]
    records = [_record(0, 0.60), _record(0, 0.50, 50.0), _record(1, 0.70), _record(1, 0.65, 50.0)]
    summary = ab.summarise(cells, records)
    row = summary["embedded"]["pixels"]
    assert row["delta_linear_points"] == [-10.0, -5.0]
    assert row["reproduced"] == "yes" and row["paper_direction"] == "lower"
    assert row["linear"] == pytest.approx(0.575) and row["img_per_s_ratio"] == 0.5
    assert summary["embedded"]["i-jepa"]["reproduced"] == "baseline"
    meta = {
        "minutes": 2.5, "threads": 1, "jobs": 2, "seeds": [0, 1], "train_images": 10,
        "test_images": 5, "cpu": "test CPU", "torch": "x", "command": "c", "date": "d",
        "wall_minutes": 1.0,
    }  # fmt: skip
    text = ab.markdown(summary, meta)
    assert "2.5 min of pretraining per run" in text and "test CPU" in text
    assert (
        "| pixels | `meta.target=pixels` `meta.target_layers=1` | 0.575 ± 0.106 | 0.575 ± 0.106 |"
        in text
    )
    assert "-7.5 | below baseline | yes |" in text
    assert "*raw pixels*" in text and "reproduced yes" in text


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--variants", "i-jepa,nope"], "unknown variant(s) ['nope']"),
        (["--minutes", "0"], "--minutes must be > 0"),
        (["--seeds", "a"], "--seeds: 'a'"),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--variants", "pixels,pixels"], "twice"),
    ],
)
def test_bad_input_is_one_line(argv: list[str], needle: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_two_variants_end_to_end_and_reuse(tmp_path: Path) -> None:
    cmd = [
        sys.executable, str(SCRIPT), "--quick", "--data", "embedded",
        "--variants", "i-jepa,raster", "--minutes", "1.0", "--train-images", "1000",
        "--test-images", "200", "--out", str(tmp_path), "--nice", "0",
        "--set", "data.batch_size=16",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = last["summary"]["embedded"]
    assert set(rows) == {"i-jepa", "raster"}
    assert rows["raster"]["paper_direction"] == "lower"
    assert rows["raster"]["reproduced"] in ("yes", "no (reversed)", "mixed")
    assert (tmp_path / "ablations.md").exists() and (tmp_path / "ablations.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "reusing 2 finished cell(s)" in again.stderr


def test_mask_padding_benchmark_quick() -> None:
    script = REPO / "benchmarks" / "mask_padding.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--preset", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])["rows"][0]
    assert row["preset"] == "demo" and row["grid"] == [8, 8]
    assert row["step_ms_padded"] > 0 and row["step_ms_subsampled"] > 0
    # padding keeps every real context patch: at least as long as the mean real size
    assert row["context_len_padded"] >= row["context_real_mean"] >= row["context_len_subsampled"]
    assert 0.0 <= row["context_dropped_by_subsampling"] < 1.0
    bad = subprocess.run(
        [sys.executable, str(script), "--preset", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown --preset" in bad.stderr


@pytest.mark.parametrize("preset_name", ["demo", "small-cpu"])
def test_every_variant_is_a_valid_config_of_every_preset(preset_name: str) -> None:
    """Each row's overrides on the presets the script uses pass the config checks (the
    small-cpu preset averages every block, which pixel targets and no teacher must undo)."""
    from ijepa.config import apply_overrides, validate
    from ijepa.recipes import preset

    for variant in load_benchmark("ablations").VARIANTS:
        validate(apply_overrides(preset(preset_name), list(variant.overrides)))
