"""Fault-injection suite: real tiny trainings on CPU, killed, starved of disk, fed NaNs and bad files.

Every training is a separate process running the real CLI (``ijepa train ...``: tiny ViT,
in-memory ``embedded:64`` data, deterministic CPU mode, a checkpoint every 4 of 32 steps), with
test-only hooks installed in the child (:mod:`fault_hooks`); the library reads no environment
variable for any of them. Faults (details and checks in ``docs/reliability.md``):

- SIGKILL at random moments and inside the checkpoint write window, then a resume: ``latest``
  loads, at most one checkpoint interval is lost, and the resumed loss curve and final weights
  equal the uninterrupted run's exactly;
- checkpoint writes failing with ENOSPC and with a read-only folder, injected and (where
  ``mount`` is permitted) real tmpfs faults, with ``logging.checkpoint_failure`` stop and retry;
- NaN/Inf losses with ``optimization.nan_policy`` stop and skip, and overflowing weights;
- a data-loader worker that dies;
- the hostile-input corpus (:mod:`hostile_inputs`), with 0 and 2 data-loader workers.

Prints the summary table (fault, trials, survived, worst steps lost, outcome), the hostile-input
table and, last, one JSON line; exits 1 if any trial failed. A drill that cannot run here keeps
its row with 0 trials and says why (``not run: ...``); :mod:`test_faults` reports such a row as
a skipped test, never as survived. ``--short`` runs a few trials of each (what ``tests/faults``
runs). ``benchmarks/faults.py`` is the command-line entry:

    python benchmarks/faults.py [--short] [--kill-trials 24] [--seed 0] [--workdir DIR] [--keep]
        [--no-mount] [--threads 1] [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fault_runner import Mounts, Runner
from fault_scenarios import Row, Scenarios


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    lines = [fmt.format(*headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [fmt.format(*r) for r in rows])


def summary_table(rows: list[Row]) -> str:
    """The fault table of the closing note."""
    return table(
        ["fault", "trials", "survived", "worst steps lost", "outcome"],
        [
            [
                r.fault,
                str(r.trials),
                str(r.survived),
                "-" if r.worst_lost is None else str(r.worst_lost),
                "; ".join(r.outcomes),
            ]
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the suite; 0 when every trial survived."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few trials of each fault (CI)")
    parser.add_argument("--kill-trials", type=int, default=24, help="SIGKILL trials (full mode)")
    parser.add_argument("--seed", type=int, default=0, help="draws kill moments and steps")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    parser.add_argument("--no-mount", action="store_true", help="injected disk faults only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per training")
    args = parser.parse_args(argv)
    if args.kill_trials < 6 and not args.short:
        parser.error("--kill-trials must be >= 6")

    t0 = time.monotonic()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ijepa-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mounts = Mounts(not args.no_mount)
    scenarios = Scenarios(
        Runner(workdir, args.threads, args.timeout),
        mounts,
        random.Random(args.seed),
        workdir,
        short=args.short,
    )
    try:
        rows, hostile = scenarios.run_all(4 if args.short else args.kill_trials)
    finally:
        mounts.release()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\nFault-injection summary")
    print(summary_table(rows))
    for r in rows:
        for why in r.failures:
            print(f"FAILED {r.fault}: {why}")
    print("\nHostile inputs (one ImageFolder holding all of them)")
    print(
        table(
            ["input", "expected", "outcome", "named in run log (workers 0 / 2)"],
            [[h["input"], h["expected"], h["outcome"], h["logged"]] for h in hostile["inputs"]],
        )
    )
    for line in hostile["runs"]:
        print(line)
    not_run = [r.fault for r in rows if r.trials == 0]
    for name in not_run:
        print(f"NOT RUN {name}: {'; '.join(next(r for r in rows if r.fault == name).outcomes)}")
    ok = all(r.survived == r.trials for r in rows) and hostile["ok"]
    print(
        json.dumps(
            {
                "mode": "short" if args.short else "full",
                "seconds": round(time.monotonic() - t0, 1),
                "all_survived": ok,
                "not_run": not_run,
                "kill_trials": sum(r.trials for r in rows if r.fault.startswith("SIGKILL")),
                "rows": [r.as_dict() for r in rows],
                "hostile": hostile,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
