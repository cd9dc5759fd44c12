"""The demo's trained-vs-random-init gain over several seeds (is the recipe reliable, or lucky?).

Runs ``ijepa demo`` once per seed (``meta.seed``; it changes the init, the data order and the
masks), each in its own 1-thread process, ``--parallel`` at a time, without the time limit and the
report, then prints one JSON line per seed and a table of the trained encoder against a random init and
raw pixels: the gain is trained minus the *better* of the two baselines, in points.

    python benchmarks/demo_seeds.py                          # seeds 0,1,2, two at a time, 30 epochs
    python benchmarks/demo_seeds.py --seeds 0-4 --parallel 4 --set meta.pred_depth=4
    python benchmarks/demo_seeds.py --set meta.device=cuda --parallel 12 --seeds 0-11   # on a GPU

One process per seed with one thread gives the same result as ``ijepa demo --procs 2`` up to float
rounding (the ranks split the same global batch). The last stdout line is one JSON object with
every seed's figures and the smallest gains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ijepa.cli.train import DEMO_MAX_EPOCHS

#: The default fixed schedule: the ``demo`` preset's own (30 epochs, 4,680 steps), the most
#: ``ijepa demo`` plans; its 7 minutes fit most of it on a fast 2-core machine (about 27 epochs
#: on the Intel Xeon with AMX). A fixed schedule, not a time budget, so that the figures do not
#: depend on how busy the machine is: a 1-thread process per seed plans far fewer steps in the
#: demo's minutes than the demo's two ranks.
DEFAULT_EPOCHS = int(DEMO_MAX_EPOCHS)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix: ``"0-2,7"``."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def demo_cmd(seed: int, out: Path, overrides: list[str], flags: tuple[str, ...] = ()) -> list[str]:
    """The ``ijepa demo`` command line of one seed (``flags``: demo options, e.g. --minutes)."""
    return [
        sys.executable, "-m", "ijepa", "-q", "demo", "--procs", "1", "--no-report",
        "--max-minutes", "0", *flags, "--out", str(out), f"meta.seed={seed}",
        "logging.progress=false", *overrides,
    ]  # fmt: skip


def run_all(
    seeds: list[int], overrides: list[str], parallel: int, root: Path, flags: tuple[str, ...] = ()
) -> list[dict]:
    """Run the seeds, ``parallel`` at a time; the demo's JSON summary of each, in seed order."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    pending = list(seeds)
    running: dict[int, tuple[subprocess.Popen, Any]] = {}
    results: dict[int, dict] = {}
    while pending or running:
        while pending and len(running) < parallel:
            seed = pending.pop(0)
            log = open(root / f"seed{seed}.log", "w")  # noqa: SIM115
            cmd = demo_cmd(seed, root / f"seed{seed}", overrides, flags)
            running[seed] = (
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                log,
            )
        for seed, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[seed]
            text = (root / f"seed{seed}.log").read_text()
            if proc.returncode != 0:
                raise SystemExit(f"seed {seed} failed (exit {proc.returncode}):\n{text[-2000:]}")
            summary = json.loads(text.strip().splitlines()[-1])
            summary["seed"] = seed
            results[seed] = summary
            print(json.dumps(summary), flush=True)
        time.sleep(1)
    return [results[s] for s in seeds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="e.g. 0,1,2 or 0-4")
    ap.add_argument("--parallel", type=int, default=2, help="seeds run at a time (1 thread each)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    ap.add_argument("--out", help="folder for the runs (default: a new temporary folder)")
    ap.add_argument(
        "--minutes", type=float, help="plan each demo for this many minutes instead of --epochs"
    )
    ap.add_argument(
        "--epochs",
        type=int,
        help=f"each demo's fixed schedule (default {DEFAULT_EPOCHS}, the demo's most; "
        "ignored with --minutes)",
    )
    args = ap.parse_args()
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        raise SystemExit(f"demo_seeds.py: --seeds: {err}") from None
    if args.parallel < 1:
        raise SystemExit("demo_seeds.py: --parallel must be >= 1")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ijepa-demo-seeds-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.minutes is not None:
        flags = ["--minutes", f"{args.minutes:g}"]
    else:
        flags = ["--epochs", str(DEFAULT_EPOCHS if args.epochs is None else args.epochs)]
    rows = run_all(seeds, args.set, args.parallel, root, tuple(flags))
    print(
        f"{'seed':>4} {'steps':>6} {'kNN tr':>7} {'rand':>6} {'raw':>6} {'gain':>6} "
        f"{'lin tr':>7} {'rand':>6} {'raw':>6} {'gain':>6} {'minutes':>7} {'rank':>5}"
    )
    gains_knn, gains_lin = [], []
    for r in rows:
        # the gain over the better of the two baselines (random init, raw pixels)
        dk = 100 * (r["knn_trained"] - max(r["knn_random"], r["knn_raw"]))
        dl = 100 * (r["linear_trained"] - max(r["linear_random"], r["linear_raw"]))
        gains_knn.append(dk)
        gains_lin.append(dl)
        rank = r.get("min_late_probe_rank")
        print(
            f"{r['seed']:>4} {r['steps']:>6} {r['knn_trained']:>7.3f} {r['knn_random']:>6.3f} "
            f"{r['knn_raw']:>6.3f} {dk:>+6.1f} {r['linear_trained']:>7.3f} "
            f"{r['linear_random']:>6.3f} {r['linear_raw']:>6.3f} {dl:>+6.1f} {r['minutes']:>7.1f} "
            f"{'-' if rank is None else format(rank, '.1f'):>5}"
        )
    print(
        json.dumps(
            {
                "seeds": seeds,
                "overrides": args.set,
                "runs": rows,
                "gain": "trained minus the better of random init and raw pixels, in points",
                "min_knn_gain_points": round(min(gains_knn), 2),
                "min_linear_gain_points": round(min(gains_lin), 2),
                "minutes": round((time.perf_counter() - t0) / 60, 2),
                "out": str(root),
            }
        )
    )


if __name__ == "__main__":
    main()
