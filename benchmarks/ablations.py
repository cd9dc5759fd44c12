"""The I-JEPA paper's ablations and this library's variants, at one wall-clock budget each.

    python benchmarks/ablations.py                                   # both sets, 3 seeds, 2.5 min
    python benchmarks/ablations.py --variants i-jepa,pixels --seeds 0 --minutes 1
    python benchmarks/ablations.py --quick                           # CI smoke (~3 min)

Every cell (data set x variant x seed) is one run of ``benchmarks/quality.py`` in its own
process (``--threads`` torch threads, ``--jobs`` cells at a time, ``nice``): the same budget
calibration, the same pretraining budget in wall-clock minutes (calibration included), and the
same kNN / linear / 1 % low-shot probes of the trained target encoder, of a random init of the
same architecture and of the raw pixels. A variant is the baseline plus config overrides
(:data:`VARIANTS`). Cells run seed by seed, data set by data set, cycling through the variants,
so machine load drifts hit every variant alike; img/s is the run's median training throughput
under that shared load (read it as a ratio to the baseline's, not as an absolute figure).

Each row carries the direction the paper reports against the baseline and whether it reproduced
here on the linear probe (the paper's metric), from the per-seed differences to the baseline:
``yes`` (every seed in the paper's direction), ``no (reversed)`` (every seed against it),
``mixed`` (seeds disagree); rows without a published claim say ``no claim``.

Finished cells are kept in ``--out`` (``<data>/<variant>/seed<k>/quality.json``) and reused, so an
interrupted run continues where it stopped. ``--out`` receives ``ablations.md`` (the table) and
``ablations.json`` (every cell and the summary); the last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUALITY = HERE / "quality.py"
METRICS = ("knn", "linear", "lowshot_1pct")
QUICK = {"minutes": 0.3, "train_images": 2000, "test_images": 500, "seeds": "0"}


@dataclass(frozen=True)
class Variant:
    """One row: config overrides on top of the baseline, and what the literature says of it."""

    name: str
    overrides: tuple[str, ...]
    direction: str | None
    """``"lower"`` / ``"higher"``: the paper's linear accuracy against the baseline; None: no
    published claim."""
    claim: str


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "i-jepa",
        (),
        None,
        "the baseline: latent targets, multi-block masks, EMA teacher, ViT",
    ),
    Variant(
        "pixels",
        ("meta.target=pixels", "meta.target_layers=1"),  # pixels have no encoder blocks
        "lower",
        "I-JEPA Table 7 (ViT-L/16, 1 % IN-1k linear): pixel targets 40.7 vs 66.9",
    ),
    Variant(
        "random",
        ("mask.strategy=random",),
        "lower",
        "I-JEPA Table 6 (ViT-B/16, 1 % IN-1k linear): random 17.6 vs multi-block 54.2",
    ),
    Variant(
        "block",
        ("mask.strategy=block",),
        "lower",
        "I-JEPA Table 6: one block 20.2 vs multi-block 54.2",
    ),
    Variant(
        "raster",
        ("mask.strategy=raster",),
        "lower",
        "I-JEPA Table 6: rasterized 15.5 vs multi-block 54.2",
    ),
    Variant(
        "lejepa",
        ("meta.teacher=none", "meta.regularizer=sigreg", "meta.target_layers=1"),
        "higher",
        "EMA-free with SIGReg (LeJEPA): 87 % vs I-JEPA 34 % linear, ViT-S/16 on Imagenette "
        "(the public benchmark cited in issue 15)",
    ),
    Variant(
        "energy",
        ("meta.backbone=energy", "meta.input_norm=none"),  # the demo's input norm is ViT-only
        None,
        "Energy Transformer backbone: no published I-JEPA result",
    ),
    Variant(
        "padded",
        # padding needs the per-block predictor pass (the demo preset's shared one has no mask)
        ("mask.pad=true", "meta.pred_shared_context=false"),
        None,
        "every context kept whole (padding + attention masks; per-block predictor pass): no "
        "published claim; its cost",
    ),
)
BY_NAME = {v.name: v for v in VARIANTS}
BASELINE = VARIANTS[0].name


class AblationError(ValueError):
    """Bad command-line input; the message says what to change."""


def parse_list(text: str, what: str) -> list[str]:
    """Comma-separated names, order kept, duplicates refused."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise AblationError(f"--{what} is empty")
    if len(set(items)) != len(items):
        raise AblationError(f"--{what} names something twice: {text!r}")
    return items


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-2"`` (inclusive)."""
    seeds: list[int] = []
    for part in parse_list(text, "seeds"):
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise AblationError(f"--seeds: {part!r} is not a seed or a range a-b") from None
    return seeds


# ----------------------------------------------------------------------------- the cells
@dataclass(frozen=True)
class Cell:
    """One run: a data set, a variant, a seed."""

    data: str
    variant: Variant
    seed: int

    def folder(self, root: Path) -> Path:
        """Where the run's files and ``quality.json`` live."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.data)
        return root / safe / self.variant.name / f"seed{self.seed}"


def cell_command(cell: Cell, args: argparse.Namespace, out: Path) -> list[str]:
    """The ``quality.py`` command line of one cell."""
    cmd = [
        sys.executable, str(QUALITY), "--data", cell.data, "--minutes", repr(args.minutes),
        "--seed", str(cell.seed), "--threads", str(args.threads), "--no-progress",
        "--out", str(out),
    ]  # fmt: skip
    for name in ("train_images", "test_images"):
        value = getattr(args, name)
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    for item in (*args.set, *cell.variant.overrides):
        cmd += ["--set", item]
    return cmd


def _launch(cell: Cell, args: argparse.Namespace, root: Path) -> tuple[subprocess.Popen, Any]:
    folder = cell.folder(root)
    run_dir = folder / "run"
    if run_dir.exists():  # an interrupted cell: quality.py needs a new folder
        shutil.rmtree(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "log.txt", "w")  # noqa: SIM115
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    niceness = args.nice
    proc = subprocess.Popen(
        cell_command(cell, args, run_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=(lambda: os.nice(niceness)) if niceness else None,
    )
    return proc, log


def run_cells(cells: list[Cell], args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Run the missing cells ``args.jobs`` at a time; every cell's record, in ``cells`` order."""
    records: dict[Cell, dict[str, Any]] = {}
    pending = []
    for cell in cells:
        done = cell.folder(root) / "quality.json"
        if done.exists():
            records[cell] = json.loads(done.read_text())
        else:
            pending.append(cell)
    if len(pending) < len(cells):
        print(f"reusing {len(cells) - len(pending)} finished cell(s) in {root}", file=sys.stderr)
    running: dict[Cell, tuple[subprocess.Popen, Any]] = {}
    total, t0 = len(pending), time.perf_counter()
    while pending or running:
        while pending and len(running) < args.jobs:
            cell = pending.pop(0)
            running[cell] = _launch(cell, args, root)
        for cell, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[cell]
            folder = cell.folder(root)
            text = (folder / "log.txt").read_text()
            if proc.returncode != 0:
                for p, lg in running.values():  # stop the other cells of this run, then report
                    p.kill()
                    p.wait()
                    lg.close()
                raise SystemExit(
                    f"ablations.py: {cell.data} / {cell.variant.name} / seed {cell.seed} failed "
                    f"(exit {proc.returncode}); its log, {folder / 'log.txt'}, ends:\n"
                    f"{text[-2000:]}"
                )
            record = json.loads(text.strip().splitlines()[-1])
            (folder / "quality.json").write_text(json.dumps(record, indent=2) + "\n")
            records[cell] = record
            left = len(pending) + len(running)
            print(
                f"[{total - left}/{total}, {(time.perf_counter() - t0) / 60:.1f} min] "
                f"{cell.data} {cell.variant.name} seed {cell.seed}: kNN {record['knn']:.3f} "
                f"linear {record['linear']:.3f} low-shot {record['lowshot_1pct']:.3f} "
                f"({record['steps']} steps, {record['img_per_s']} img/s)",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(1)
    return [records[c] for c in cells]


# ----------------------------------------------------------------------------- the table
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def verdict(direction: str | None, diffs: Sequence[float]) -> str:
    """Whether per-seed differences (variant minus baseline) follow the paper's direction."""
    if direction is None:
        return "no claim"
    if not diffs:
        return "no baseline"
    sign = -1.0 if direction == "lower" else 1.0
    agree = [d * sign > 0 for d in diffs]
    if all(agree):
        return "yes"
    if not any(agree) and all(d != 0 for d in diffs):
        return "no (reversed)"
    return "mixed"


def summarise(cells: list[Cell], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per data set and variant: means and stds over seeds, paired differences, the verdict."""
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for cell, rec in zip(cells, records, strict=True):
        by.setdefault((cell.data, cell.variant.name), {})[cell.seed] = rec
    out: dict[str, Any] = {}
    for (data, name), seeds in by.items():
        variant = BY_NAME[name]
        row: dict[str, Any] = {"overrides": list(variant.overrides), "seeds": sorted(seeds)}
        for prefix in ("", "random_", "raw_"):
            for metric in METRICS:
                mean, std = _mean_std([r[prefix + metric] for r in seeds.values()])
                row[prefix + metric] = round(mean, 4)
                row[prefix + metric + "_std"] = round(std, 4)
        ips = [r["img_per_s"] for r in seeds.values() if r.get("img_per_s") is not None]
        row["img_per_s"] = round(statistics.median(ips), 1) if ips else None
        row["steps"] = round(statistics.fmean(r["steps"] for r in seeds.values()))
        base = by.get((data, BASELINE), {})
        paired = [s for s in seeds if s in base]
        for metric in ("linear", "knn"):
            diffs = [100 * (seeds[s][metric] - base[s][metric]) for s in paired]
            row[f"delta_{metric}_points"] = [round(d, 2) for d in diffs]
        base_ips = [base[s]["img_per_s"] for s in paired if base[s].get("img_per_s")]
        if ips and base_ips:
            row["img_per_s_ratio"] = round(statistics.median(ips) / statistics.median(base_ips), 3)
        row["paper_direction"] = variant.direction
        row["claim"] = variant.claim
        row["reproduced"] = (
            "baseline"
            if name == BASELINE
            else verdict(variant.direction, row["delta_linear_points"])
        )
        out.setdefault(data, {})[name] = row
    return out


def sentence(name: str, row: dict[str, Any]) -> str:
    """One plain sentence on a row: the claim, what happened here, the verdict."""
    if name == BASELINE:
        return f"`{name}`: {row['claim']}."
    d = row["delta_linear_points"]
    mean = statistics.fmean(d) if d else float("nan")
    where = f"linear {mean:+.1f} points against the baseline (per seed: {', '.join(f'{x:+.1f}' for x in d)})"
    if row["paper_direction"] is None:
        return f"`{name}`: {row['claim']}; here {where}."
    want = "below" if row["paper_direction"] == "lower" else "above"
    return (
        f"`{name}`: the paper puts it {want} the baseline ({row['claim']}); here {where}: "
        f"reproduced {row['reproduced']}."
    )


def _pm(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.3f} ± {row[key + '_std']:.3f}"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report: settings, one table per data set, one sentence per row."""
    lines = [
        "# I-JEPA ablations at one wall-clock budget",
        "",
        f"- budget: **{meta['minutes']:g} min of pretraining per run** (calibration included), "
        f"{meta['threads']} thread(s) per run, {meta['jobs']} run(s) at a time, on "
        f"{meta['cpu']} (torch {meta['torch']})",
        f"- seeds {', '.join(map(str, meta['seeds']))}; mean ± std over seeds; "
        f"train/test images per set: {meta['train_images']} / {meta['test_images']}",
        "- probes of the frozen target encoder: kNN (k=20, cosine, T=0.07), linear (grid of "
        "poolings x LRs, best on validation), 1 % low-shot (5 draws); img/s: median training "
        "throughput under the shared load (compare ratios)",
        "- reproduced: per-seed linear differences to `i-jepa` all in the paper's direction "
        "(yes), all against it (no), or split (mixed)",
        f"- command: `{meta['command']}` ({meta['date']}, {meta['wall_minutes']:.0f} min)",
    ]
    for data, rows in summary.items():
        lines += [
            "",
            f"## {data}",
            "",
            "| variant | overrides | kNN | linear | 1 % low-shot | img/s (ratio) | steps "
            "| Δ linear (pts) | paper | reproduced |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            d = row["delta_linear_points"]
            delta = f"{statistics.fmean(d):+.1f}" if d and name != BASELINE else "—"
            ratio = f" ({row['img_per_s_ratio']:.2f})" if "img_per_s_ratio" in row else ""
            direction = {"lower": "below baseline", "higher": "above baseline"}.get(
                row["paper_direction"], "—"
            )
            overrides = " ".join(f"`{o}`" for o in row["overrides"]) or "—"
            lines.append(
                f"| {name} | {overrides} | {_pm(row, 'knn')} | {_pm(row, 'linear')} | "
                f"{_pm(row, 'lowshot_1pct')} | {row['img_per_s']}{ratio} | {row['steps']} | "
                f"{delta} | {direction} | {row['reproduced']} |"
            )
        if BASELINE in rows:
            base = rows[BASELINE]
            for label, prefix in (("random init (ViT)", "random_"), ("raw pixels", "raw_")):
                lines.append(
                    f"| *{label}* | — | {_pm(base, prefix + 'knn')} | "
                    f"{_pm(base, prefix + 'linear')} | {_pm(base, prefix + 'lowshot_1pct')} "
                    "| — | — | — | — | — |"
                )
        if "energy" in rows:
            e = rows["energy"]
            lines.append(
                f"| *random init (energy)* | — | {_pm(e, 'random_knn')} | "
                f"{_pm(e, 'random_linear')} | {_pm(e, 'random_lowshot_1pct')} | — | — | — | — | — |"
            )
        lines += [""] + [f"- {sentence(name, row)}" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--quick`` fills in small CI sizes where not given)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="embedded,fashion-mnist", help="comma-separated data specs")
    p.add_argument(
        "--variants", default=",".join(BY_NAME), help=f"comma-separated, of: {', '.join(BY_NAME)}"
    )
    p.add_argument("--seeds", default=None, help="e.g. 0,1,2 or 0-2 (default 0,1,2)")
    p.add_argument("--minutes", type=float, default=None, help="pretraining budget per run")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--nice", type=int, default=5, help="niceness of the runs (default 5)")
    p.add_argument("--train-images", type=int, default=None, help="first N train images")
    p.add_argument("--test-images", type=int, default=None, help="first N test images")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="every run")
    p.add_argument("--out", default="runs/ablations", help="folder of the cells and the tables")
    p.add_argument("--quick", action="store_true", help="CI mode: 0.3 min, seed 0, small sets")
    args = p.parse_args(argv)
    for key, value in QUICK.items():
        if args.quick and getattr(args, key) is None:
            setattr(args, key, value)
    args.minutes = 2.5 if args.minutes is None else args.minutes
    args.seeds = "0,1,2" if args.seeds is None else args.seeds
    if args.train_images is None:
        args.train_images = 10000
    if args.test_images is None:
        args.test_images = 2000
    return args


def check(args: argparse.Namespace) -> tuple[list[str], list[Variant], list[int]]:
    """Validate the command line; the data sets, variants and seeds."""
    if not args.minutes > 0:
        raise AblationError(f"--minutes must be > 0, got {args.minutes}")
    for name in ("jobs", "threads", "train_images", "test_images"):
        if getattr(args, name) < 1:
            raise AblationError(f"--{name.replace('_', '-')} must be >= 1")
    data = parse_list(args.data, "data")
    names = parse_list(args.variants, "variants")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise AblationError(f"unknown variant(s) {unknown}; choose from {', '.join(BY_NAME)}")
    return data, [BY_NAME[n] for n in names], parse_seeds(args.seeds)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cells, write ``ablations.md`` / ``ablations.json``, print the summary JSON."""
    args = parse_args(argv)
    try:
        data, variants, seeds = check(args)
    except AblationError as err:
        print(f"ablations.py: error: {err}", file=sys.stderr)
        return 2
    import torch

    from ijepa.hardware import cpu_name

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    cells = [Cell(d, v, s) for s in seeds for d in data for v in variants]
    t0 = time.perf_counter()
    records = run_cells(cells, args, root)
    summary = summarise(cells, records)
    meta = {
        "minutes": args.minutes,
        "threads": args.threads,
        "jobs": args.jobs,
        "seeds": seeds,
        "train_images": args.train_images,
        "test_images": args.test_images,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "command": " ".join(["python benchmarks/ablations.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "wall_minutes": (time.perf_counter() - t0) / 60.0,
        "overrides": list(args.set),
    }
    (root / "ablations.md").write_text(markdown(summary, meta))
    cell_rows = [
        {"data": c.data, "variant": c.variant.name, "seed": c.seed, **r}
        for c, r in zip(cells, records, strict=True)
    ]
    (root / "ablations.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "cells": cell_rows}, indent=2) + "\n"
    )
    print((root / "ablations.md").read_text(), file=sys.stderr)
    print(json.dumps({"meta": meta, "summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
