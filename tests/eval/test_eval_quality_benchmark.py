"""``benchmarks/quality.py``: the budget planning, bad input, and the ``--quick`` run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from benchmark_scripts import benchmark_script, load_benchmark

from ijepa.data import ImageSet
from ijepa.train import budget
from ijepa.train.build import schedules_for

SCRIPT = benchmark_script("quality")
ACCURACIES = [
    f"{prefix}{name}"
    for prefix in ("", "raw_", "random_")
    for name in ("linear", "knn", "lowshot_1pct")
]


quality = load_benchmark("quality")


@pytest.mark.parametrize(("steps", "ipe"), [(1, 31), (45, 31), (31, 31), (937, 937), (8011, 937)])
def test_budget_config_spans_exactly_the_planned_steps(tmp_path, steps, ipe):
    cfg, _ = quality.build_config("embedded", None, [], seed=0, train_images=None, progress=False)
    warm_frac = cfg.optimization.warmup / cfg.optimization.epochs
    out = budget.budget_config(cfg, steps, ipe, folder=tmp_path, limit_min=2.5)
    o = out.optimization
    sched = schedules_for(out, ipe)  # the loop's own schedules
    assert sched.total_steps == steps
    assert sched.warmup_steps == round(warm_frac * steps)  # the preset's warm-up fraction
    assert o.time_limit_min == 2.5 and o.max_steps is None
    assert out.logging.folder == str(tmp_path)


def test_plan_steps_fits_the_measured_costs():
    cal = budget.Calibration(
        step_s=0.2, log_s=0.1, startup_s=2.0, checkpoint_s=0.5, seconds=5.0, steps=12
    )
    n = budget.plan_steps(cal, 100.0, log_every=10, ipe=50)
    per_step = 0.2 + 0.1 / 10 + 0.5 / 50
    assert n == int((budget.PLAN_MARGIN * 100.0 - 2.0 - 0.5) / per_step)
    predicted = 2.0 + 0.5 + n * per_step  # the most steps that fit in the planned share
    assert predicted <= budget.PLAN_MARGIN * 100.0 < predicted + per_step
    assert budget.plan_steps(cal, 1.0, log_every=10, ipe=50) == 0  # start-up alone is longer


def test_lowshot_check_needs_two_labels_per_class():
    def imageset(per_class: list[int]) -> ImageSet:
        labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
        images = torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8)
        names = [f"c{c}" for c in range(len(per_class))]
        return ImageSet(images, labels, names, (0.5,), (0.5,), "toy")

    quality.check_lowshot(imageset([150, 200]))  # 1 % rounds to 2 in each class
    with pytest.raises(quality.QualityError, match="class 'c1' with 149 image"):
        quality.check_lowshot(imageset([200, 149]))
    with pytest.raises(quality.QualityError, match="class 'c2' with 0 image"):
        quality.check_lowshot(imageset([200, 200, 0]))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data", "embedded", "--minutes", "0"], "--minutes must be > 0"),
        (["--data", "embedded", "--minutes", "-1"], "--minutes must be > 0"),
        (["--data", "nosuchkind", "--quick"], "unknown data kind 'nosuchkind'"),
        (["--data", "fashion-mnist:/nonexistent/fmnist", "--quick"], "lacks"),
        (["--data", "embedded:300", "--quick"], "low-shot needs"),
        (["--data", "embedded", "--quick", "--preset", "nope"], "unknown --preset 'nope'"),
        (["--data", "embedded", "--quick", "--set", "data.bach_size=3"], "batch_size"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, needle, capsys):
    assert quality.main([*argv, "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quality.py: error: ")
    assert needle in lines[0]


@pytest.mark.slow  # ~7 s, mostly importing torch in a fresh interpreter
def test_bad_input_exit_code_from_the_command_line():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", "embedded", "--minutes", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["quality.py: error: --minutes must be > 0, got 0.0"]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_quick_run_reports_every_figure_within_the_budget(tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--data",
            "embedded",
            "--quick",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ACCURACIES:
        assert 0.0 <= record[key] <= 1.0, key
    assert record["minutes"] > 0 and record["budget_minutes"] == quality.QUICK["minutes"]
    # the hard stop ends pretraining one step (plus a checkpoint) after the budget at most
    assert record["minutes"] <= record["budget_minutes"] + 0.25
    assert record["minutes"] >= record["calibration_minutes"] + record["train_minutes"] - 1e-3
    assert 1 <= record["steps"] <= record["planned_steps"]
    assert record["train_images"] == 2000 and record["test_images"] == 500
    assert record["threads"] == 1 and record["preset"] == "demo"
    assert record["protocol"]["lowshot"]["fraction"] == 0.01
    assert record["protocol"]["lowshot"]["draws"] == 5
    assert record["protocol"]["knn"]["k"] == 20
    assert wall / 60 >= record["minutes"] + record["eval_minutes"] - 1e-3
    assert json.loads((out / "quality.json").read_text()) == record
    assert (out / "metrics.jsonl").exists() and (out / "config.yaml").exists()
    # --evaluate: the finished run evaluated again, without training, gives the same scores
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "--evaluate", str(out), "--threads", "1", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["steps"] == record["steps"] and second["reevaluated"]["threads"] == 1
    for key in ACCURACIES:
        assert second[key] == pytest.approx(record[key], abs=1e-3), key
    assert json.loads((out / "quality-reevaluated.json").read_text()) == second


def test_evaluate_needs_a_finished_run(tmp_path, capsys):
    assert quality.main(["--evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "quality.json is missing (not a finished run)" in err
