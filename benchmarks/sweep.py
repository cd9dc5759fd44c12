"""Recipe sweeps: configurations x seeds x data sets as parallel one-thread processes, one table.

    python benchmarks/sweep.py --data embedded,fashion-mnist --seeds 0-2 --steps 1500 \\
        --config base= --config sigreg="meta.regularizer=sigreg meta.reg_weight=0.1" \\
        --parallel 2 --out runs/sweep1

Every job (configuration, data set, seed) runs in its own process with one thread, ``--parallel``
at a time: it pretrains with the data set's default preset (``small-cpu`` for Fashion-MNIST,
``demo`` otherwise; ``--preset`` picks another) plus the configuration's ``key=value`` overrides,
for ``--steps`` steps (the schedules span exactly that many) or ``--minutes`` of wall time (the
budget planning of ``benchmarks/quality.py``). It then evaluates, under the same protocols and
for every readout in ``--readouts`` (``avg``: average of the last layer's tokens, the paper's;
``grid``: 2 x 2 spatial grid of averages), the trained target encoder, a random-init encoder of
the same architecture and the raw pixels: kNN (k=20, cosine) and the linear-probe grid, plus 1 %
low-shot with ``--lowshot``. It also reads the run's collapse monitors from ``metrics.jsonl``:
the smallest ``probe_rank`` and ``target_std`` over the second half of training and whether the
collapse alarm fired.

Each job writes ``OUT/<config>/<data>/seed<S>.json``; a job whose file exists is not run again,
so an interrupted sweep resumes. The table (Markdown, stdout and ``OUT/table.md``) has one row per
(configuration, data set, readout): the mean over seeds of trained kNN and linear, and the
*smallest* gain over the seeds against the random init and against raw pixels (in points), and
the smallest late-training probe rank. ``OUT/results.json`` holds every job's record.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: Readouts the harness knows (pooling names of :func:`ijepa.eval.extract_features`).
READOUTS = ("avg", "grid", "flat")


def parse_seeds(text: str) -> list[int]:
    """``"0-2"`` -> [0, 1, 2]; ``"0,3,5"`` -> [0, 3, 5]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise SystemExit(f"--seeds {text!r} names no seed")
    return seeds


def parse_config(text: str) -> tuple[str, list[str]]:
    """``name=k1=v1 k2=v2`` -> (name, [k1=v1, k2=v2])."""
    name, _, rest = text.partition("=")
    name = name.strip()
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise SystemExit(f"--config {text!r}: expected NAME=OVERRIDES with a plain NAME")
    return name, shlex.split(rest)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# ----------------------------------------------------------------------------- one job
def run_job(args: argparse.Namespace) -> dict[str, Any]:
    """Pretrain and evaluate one (configuration, data, seed); returns the JSON record.

    With ``--reevaluate`` nothing is trained: the job's finished run (its ``jepa-latest.pth.tar``
    and ``seed<S>.json``) is evaluated again with today's protocols, the training facts kept.
    """
    import torch

    sys.path.insert(0, str(HERE))
    import quality  # the budget planning, the probes and the raw-pixel features

    from ijepa.diagnostics import collapse_summary
    from ijepa.train.loop import train

    torch.set_num_threads(args.threads)
    overrides = shlex.split(args.overrides)
    cfg, preset_name = quality.build_config(
        args.data,
        args.preset,
        overrides,
        seed=args.seed,
        train_images=args.train_images,
        progress=False,
    )
    train_set, test_set = quality.load_sets(cfg, args.test_images)
    ipe = len(train_set) // cfg.data.batch_size
    folder = Path(args.run_dir)
    t0 = time.perf_counter()
    if args.reevaluate:
        from ijepa.compat.formats import read_encoder

        old = json.loads((folder.parent / f"seed{args.seed}.json").read_text())
        encoder, meta = read_encoder(folder / "jepa-latest.pth.tar", which="target")
        encoder.eval()
        trained, random, raw = _evaluate_all(
            args, quality, cfg, train_set, test_set, encoder, meta.model_args
        )
        return {
            **old,
            "trained": trained,
            "random": random,
            "raw": raw,
            "reevaluated": {"eval_minutes": round((time.perf_counter() - t0) / 60.0, 3)},
        }
    if args.minutes is not None:
        cal = quality.calibrate(cfg, 12, limit_min=args.minutes / 2)
        left = 60.0 * args.minutes - (time.perf_counter() - t0)
        steps = quality.plan_steps(cal, left, log_every=cfg.logging.log_every, ipe=ipe)
        limit = (60.0 * args.minutes - (time.perf_counter() - t0)) / 60.0
    else:
        steps, limit = args.steps, 24 * 60.0
    run_cfg = quality.budget_config(cfg, steps, ipe, folder=folder, limit_min=limit)
    result = train(run_cfg)
    train_min = (time.perf_counter() - t0) / 60.0
    trained, random, raw = _evaluate_all(
        args, quality, cfg, train_set, test_set, result.models.target_encoder, result.model_args
    )
    summary = collapse_summary(result.history)
    ips = [r["img_per_s"] for r in result.history]
    return {
        "config": args.name,
        "overrides": overrides,
        "data": args.data,
        "seed": args.seed,
        "preset": preset_name,
        "steps": result.step,
        "train_minutes": round(train_min, 3),
        "minutes": round((time.perf_counter() - t0) / 60.0, 3),
        "img_per_s": round(statistics.median(ips), 1) if ips else None,
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "collapse": summary,
        "trained": trained,
        "random": random,
        "raw": raw,
        "train_images": len(train_set),
        "eval_train_images": len(_eval_train(args, train_set)),
        "test_images": len(test_set),
    }


def _eval_train(args: argparse.Namespace, train_set: Any) -> Any:
    """The labelled images the probes train on: the first ``--eval-train`` (default: all)."""
    import torch

    if args.eval_train is not None and args.eval_train < len(train_set):
        return train_set.subset(torch.arange(args.eval_train))
    return train_set


def _evaluate_all(
    args: argparse.Namespace,
    quality: Any,
    cfg: Any,
    train_set: Any,
    test_set: Any,
    encoder: Any,
    model_args: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(trained, random init, raw pixels) scores, every readout, under the same protocols."""
    import torch

    from ijepa.eval.images import features_of
    from ijepa.models import random_init_encoder

    eval_train = _eval_train(args, train_set)
    readouts = tuple(args.readouts.split(","))
    size = cfg.data.crop_size

    def evaluate(net: torch.nn.Module) -> dict[str, Any]:
        kw: dict[str, Any] = {"poolings": readouts, "img_size": size, "progress": False}
        tr = features_of(net, eval_train, **kw)
        te = features_of(net, test_set, **kw)
        return {r: _probe(quality, tr, te, r, args) for r in readouts}

    trained = evaluate(encoder)
    random_enc = random_init_encoder(model_args, seed=args.seed, attn_impl=cfg.meta.attn_impl)
    random = evaluate(random_enc)
    pix_tr, pix_te = quality.pixel_features(eval_train), quality.pixel_features(test_set)
    raw = _probe(quality, pix_tr, pix_te, "pixels", args)
    return trained, random, raw


def _probe(quality: Any, tr: dict, te: dict, key: str, args: argparse.Namespace) -> dict:
    """kNN and linear (and 1 % low-shot with ``--lowshot``) top-1 of one readout."""
    from ijepa.eval import knn_classify, linear_probe, lowshot_eval

    ytr, yte = tr["labels"], te["labels"]
    out = {
        "knn": float(
            knn_classify(
                tr[key], ytr, te[key], yte, k=quality.KNN_K, temperature=quality.KNN_TEMPERATURE
            )["top1"]
        ),
        "linear": float(linear_probe(tr, ytr, te, yte, keys=(key,), seed=args.seed)["top1"]),
    }
    if args.lowshot:
        low = lowshot_eval(
            tr,
            ytr,
            te,
            yte,
            fraction=quality.LOWSHOT_FRACTION,
            draws=quality.LOWSHOT_DRAWS,
            keys=(key,),
            seed=args.seed,
        )
        out["lowshot"] = float(low["mean"])
    return out


# ----------------------------------------------------------------------------- the sweep
def job_argv(
    name: str, overrides: Sequence[str], data: str, seed: int, out: Path, args: argparse.Namespace
) -> list[str]:
    run_dir = out / _safe(name) / _safe(data) / f"run{seed}"
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--name",
        name,
        "--overrides",
        shlex.join(overrides),
        "--data",
        data,
        "--seed",
        str(seed),
        "--run-dir",
        str(run_dir),
        "--readouts",
        args.readouts,
        "--threads",
        "1",
    ]
    for flag in ("preset", "steps", "minutes", "train_images", "test_images", "eval_train"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    if args.lowshot:
        argv.append("--lowshot")
    if args.reevaluate:
        argv.append("--reevaluate")
    return argv


def run_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every missing job, ``--parallel`` at a time; return all records."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [parse_config(c) for c in args.config] or [("base", [])]
    jobs = []
    for name, overrides in configs:
        for data in args.data.split(","):
            for seed in parse_seeds(args.seeds):
                path = out / _safe(name) / _safe(data) / f"seed{seed}.json"
                jobs.append((path, job_argv(name, overrides, data, seed, out, args)))
    if args.reevaluate:  # finished jobs not yet evaluated again; their first record is kept
        todo = [
            (p, a) for p, a in jobs if p.exists() and "reevaluated" not in json.loads(p.read_text())
        ]
        for p, _ in todo:
            p.with_suffix(".first.json").write_text(p.read_text())
    else:
        todo = [(p, a) for p, a in jobs if not p.exists()]
    print(f"{len(jobs)} jobs, {len(todo)} to run, {args.parallel} at a time", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[Path, subprocess.Popen, Any]] = []
    failed = 0
    while todo or running:
        while todo and len(running) < args.parallel:
            path, argv = todo.pop(0)
            path.parent.mkdir(parents=True, exist_ok=True)
            log = open(path.with_suffix(".log"), "w")  # noqa: SIM115
            running.append(
                (
                    path,
                    subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env, text=True),
                    log,
                )
            )
        time.sleep(1.0)
        for item in list(running):
            path, proc, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            stdout = proc.stdout.read() if proc.stdout else ""
            lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                failed += 1
                print(
                    f"FAILED ({proc.returncode}): {path} (see {path.with_suffix('.log')})",
                    file=sys.stderr,
                )
                continue
            path.write_text(lines[-1] + "\n")
            rec = json.loads(lines[-1])
            print(f"done {path.relative_to(out)}: {_brief(rec)}", file=sys.stderr, flush=True)
    records = [json.loads(p.read_text()) for p, _ in jobs if p.exists()]
    if failed:
        print(f"{failed} job(s) failed", file=sys.stderr)
    return records


def _brief(rec: dict[str, Any]) -> str:
    parts = [f"{rec['steps']} steps {rec['train_minutes']:.1f} min"]
    for r, v in rec["trained"].items():
        rv = rec["random"][r]
        parts.append(
            f"{r}: knn {v['knn']:.3f} (rnd {rv['knn']:.3f}) lin {v['linear']:.3f} (rnd {rv['linear']:.3f})"
        )
    parts.append(f"raw knn {rec['raw']['knn']:.3f} lin {rec['raw']['linear']:.3f}")
    parts.append(f"min late rank {rec['collapse']['min_late_probe_rank']:.1f}")
    return "; ".join(parts)


def _row(config: str, data: str, readout: str, recs: list[dict[str, Any]]) -> str:
    """One table row: means over the seeds, and the smallest gains."""
    knn = [r["trained"][readout]["knn"] for r in recs]
    lin = [r["trained"][readout]["linear"] for r in recs]
    gk = [r["trained"][readout]["knn"] - r["random"][readout]["knn"] for r in recs]
    gl = [r["trained"][readout]["linear"] - r["random"][readout]["linear"] for r in recs]
    rk = [r["trained"][readout]["knn"] - r["raw"]["knn"] for r in recs]
    rl = [r["trained"][readout]["linear"] - r["raw"]["linear"] for r in recs]
    rank = [r["collapse"]["min_late_probe_rank"] for r in recs]
    alarm = sum(bool(r["collapse"]["collapsed"]) for r in recs)
    return (
        f"| {config} | {data} | {readout} | {len(recs)} | {statistics.mean(knn):.3f} | "
        f"{statistics.mean(lin):.3f} | {100 * min(gk):+.1f} | {100 * min(gl):+.1f} | "
        f"{100 * min(rk):+.1f} | {100 * min(rl):+.1f} | {min(rank):.1f} | {alarm}/{len(recs)} |"
    )


def table(records: list[dict[str, Any]]) -> str:
    """One Markdown row per (configuration, data set, readout), aggregated over seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["config"], rec["data"]), []).append(rec)
    lines = [
        "| config | data | readout | seeds | kNN | linear | kNN - random (min) | linear - random (min) | kNN - raw (min) | linear - raw (min) | min late probe rank | collapse alarm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (config, data), recs in groups.items():
        for readout in recs[0]["trained"]:
            lines.append(_row(config, data, readout, recs))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default="embedded", help="comma-separated data specs")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--config", action="append", default=[], help="NAME=key=value ... (repeatable)")
    p.add_argument("--preset", default=None, help="preset for every job (default: by data set)")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps per job")
    p.add_argument("--minutes", type=float, default=None, help="or a wall-clock budget per job")
    p.add_argument("--train-images", type=int, default=None, help="pretrain on the first N")
    p.add_argument("--test-images", type=int, default=None, help="evaluate on the first N")
    p.add_argument("--eval-train", type=int, default=None, help="labelled train images for probes")
    p.add_argument("--readouts", default="avg,grid", help=f"comma-separated, of {READOUTS}")
    p.add_argument("--lowshot", action="store_true", help="also 1 %% low-shot")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--threads", type=int, default=1)
    # one job (the sweep runs itself with --worker)
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="evaluate the finished jobs in --out again (no training; the first record is kept "
        "as seed<S>.first.json)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--name", default="base", help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.steps is None) == (args.minutes is None):
        p.error("give exactly one of --steps and --minutes")
    bad = [r for r in args.readouts.split(",") if r not in READOUTS]
    if bad:
        p.error(f"unknown readout(s) {bad}; choose from {READOUTS}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
        rec = run_job(args)
        print(json.dumps(rec), flush=True)
        return 0
    records = run_sweep(args)
    text = table(records)
    (Path(args.out) / "table.md").write_text(text + "\n")
    (Path(args.out) / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    print(text)
    return 0 if len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
