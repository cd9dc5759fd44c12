"""Fault-injection suite, the command line: runs ``tests/faults`` harness and prints its tables.

The harness (trainings killed, starved of disk, fed NaNs and hostile files; its checks) lives in
``tests/faults/`` with the tests that run its short mode; this script only runs it in full (or
``--short``) and prints the summary table, the hostile-input table and one JSON line. See
``tests/faults/fault_suite.py`` for the options and ``docs/reliability.md`` for the checks.

    python benchmarks/faults.py [--short] [--kill-trials 24] [--seed 0] [--workdir DIR] [--keep]
        [--no-mount] [--threads 1] [--timeout 300]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))

from fault_suite import main

if __name__ == "__main__":
    sys.exit(main())
