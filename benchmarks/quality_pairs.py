"""Two training variants at equal compute, side by side: quality per CPU budget, load-proof.

    python benchmarks/quality_pairs.py --data embedded --cpu-minutes 3 --seeds 0,1,2 \\
        --b meta.pred_shared_context=true
    python benchmarks/quality_pairs.py --data fashion-mnist --train-images 10000 --cpu-minutes 3

``benchmarks/quality.py`` gives a run a wall-clock budget. On a machine shared with other jobs the
wall clock measures the share of the cores a run got more than the run itself (a 2-core machine
at load 10 ran the demo preset at a 40th of its quiet speed), so this driver gives each variant
the same budget of *process CPU time* on one thread instead: a short calibration run of each
variant measures its CPU seconds per step, the budget sets its step count (and so its schedules),
and then it trains for that many steps, however long the wall clock takes. On an idle machine one
thread's CPU time is its wall time, so the comparison is "equal wall time" there.

For each seed both variants (``--a`` and ``--b`` overrides on the data set's preset, as in
``quality.py``) run as two concurrent one-thread processes; each evaluates its trained target
encoder with ``quality.py``'s protocols (kNN, linear, 1 % low-shot; average pooling and a 2x2
grid). Variant A's process also evaluates a random-init encoder of the same architecture and the
raw pixels. One JSON line per (seed, variant) on stdout; a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality as q

from ijepa.hardware import cpu_name
from ijepa.models import random_init_encoder
from ijepa.train import budget
from ijepa.train.loop import train

logger = logging.getLogger("quality_pairs")

CALIBRATION_STEPS = 14


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Calibrate, train for the CPU budget, evaluate (one process, one thread)."""
    torch.set_num_threads(1)
    cfg, preset_name, train_set, test_set = q.config_and_sets(spec, progress=False)
    ipe = len(train_set) // cfg.data.batch_size
    cpu0, wall0 = time.process_time(), time.perf_counter()
    per_step = budget.calibrate(cfg, CALIBRATION_STEPS, limit_min=10_000.0).cpu_step_s
    cal_cpu = time.process_time() - cpu0
    steps = max(1, int((60.0 * spec["cpu_minutes"] - cal_cpu) / per_step))
    folder = Path(spec["out"])
    run_cfg = q.budget_config(cfg, steps, ipe, folder=folder, limit_min=10_000.0)
    cpu1 = time.process_time()
    result = train(run_cfg)
    train_cpu = time.process_time() - cpu1
    train_wall = time.perf_counter() - wall0
    size = cfg.data.crop_size
    enc = result.models.target_encoder
    kw = {"img_size": size, "seed": spec["seed"], "progress": False}
    trained = q.encoder_results(enc, train_set, test_set, **kw)
    record: dict[str, Any] = {
        "variant": spec["variant"],
        "seed": spec["seed"],
        "data": spec["data"],
        "preset": preset_name,
        "overrides": spec["overrides"],
        "cpu_s_per_step": round(per_step, 4),
        "steps": result.step,
        "train_cpu_minutes": round(train_cpu / 60.0, 2),
        "cpu_budget_minutes": spec["cpu_minutes"],
        "wall_minutes": round(train_wall / 60.0, 2),
        **q._flat_scores("", trained["avg"]),
        **q._flat_scores("grid_", trained["grid"]),
        "collapse": q.collapse_message(q.collapse_summary(result.history)),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "cpu": cpu_name(),
    }
    if spec["baselines"]:
        random_enc = random_init_encoder(
            result.model_args, seed=spec["seed"], attn_impl=cfg.meta.attn_impl
        )
        random = q.encoder_results(random_enc, train_set, test_set, **kw)
        raw = q.probe_all(
            q.pixel_features(train_set),
            q.pixel_features(test_set),
            knn_key="pixels",
            keys=("pixels",),
            seed=spec["seed"],
            device=torch.device("cpu"),
        )
        record.update(q._flat_scores("random_", random["avg"]))
        record.update(q._flat_scores("random_grid_", random["grid"]))
        record.update(q._flat_scores("raw_", raw))
    return record


def summarise(rows: list[dict[str, Any]]) -> None:
    keys = ("knn", "linear", "lowshot_1pct", "grid_knn", "grid_linear")
    log = logger.info
    log("| variant | seed | steps | CPU s/step | " + " | ".join(keys) + " |")
    log("|---|---|---|---|" + "---|" * len(keys))
    for r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k in keys)
        log(
            f"| {r['variant']} | {r['seed']} | {r['steps']} | {r['cpu_s_per_step']:.3f} | {cells} |"
        )
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        cells = " | ".join(f"{statistics.mean(r[k] for r in mine):.3f}" for k in keys)
        log(f"| {variant} | mean | | | {cells} |")
    base = [r for r in rows if "random_knn" in r]
    if base:
        for prefix in ("random_", "raw_"):
            cells = " | ".join(
                f"{statistics.mean(r[prefix + k] for r in base):.3f}"
                if prefix + k in base[0]
                else "-"
                for k in keys
            )
            log(f"| {prefix.rstrip('_')} | mean | | | {cells} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="embedded")
    p.add_argument("--preset", default=None)
    p.add_argument("--cpu-minutes", type=float, default=3.0, help="CPU budget per variant")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--a", action="append", default=[], help="override of variant A (repeatable)")
    p.add_argument("--b", action="append", default=[], help="override of variant B (repeatable)")
    p.add_argument("--set", action="append", default=[], help="override of both")
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.child is not None:
        print(json.dumps(run_variant(json.loads(args.child))), flush=True)
        return
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ijepa-pairs-") as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            procs = []
            for variant, extra in (("A", args.a), ("B", args.b)):
                spec = {
                    "variant": variant,
                    "seed": seed,
                    "data": args.data,
                    "preset": args.preset,
                    "overrides": [*args.set, *extra],
                    "cpu_minutes": args.cpu_minutes,
                    "train_images": args.train_images,
                    "test_images": args.test_images,
                    "baselines": variant == "A",
                    "out": f"{tmp}/{variant}{seed}",
                }
                cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
            for proc in procs:
                out, _ = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"a variant of seed {seed} failed (exit {proc.returncode})")
                row = json.loads(out.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                rows.append(row)
    summarise(rows)


if __name__ == "__main__":
    main()
