"""``ijepa train`` and ``ijepa demo``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ijepa.config import Config, apply_overrides, load_config
from ijepa.recipes import preset

logger = logging.getLogger(__name__)

#: ``ijepa demo --minutes`` default: the pretraining budget (calibration included) that keeps
#: ``make demo`` within 10 minutes on a fresh 2-core machine (set-up and install ~1.5 min,
#: evaluation and report ~0.5 min); the schedule is planned to fit it
#: (:func:`ijepa.demo.plan_for_budget`). On the 2-core Intel Xeon (AMX) 7 minutes fit about 27 of
#: the preset's 30 epochs; the trained encoder's lead over both baselines grows with the length
#: (`benchmarks/demo_seeds.py`, seeds 0-2, kNN: +8.3 at worst at 16 epochs, +11.0 at 20, +17.6
#: at 30; docs/recipes.md).
DEMO_MINUTES = 7.0
#: The planned schedule never exceeds the ``demo`` preset's own (a fast machine or a GPU stops
#: there): a demo that plans it runs exactly the preset's schedule, warm-up included, which is what
#: ``benchmarks/demo_seeds.py`` runs by default.
DEMO_MAX_EPOCHS = float(preset("demo").optimization.epochs)
#: The hard stop of a planned run, as a multiple of ``--minutes`` (the plan is a measurement; a
#: machine that slows down mid-run is stopped, with a checkpoint, before ``make demo`` passes 10 min).
DEMO_LIMIT_FACTOR = 1.1
#: ``--max-minutes`` default with ``--epochs`` (a fixed schedule): the hard stop.
DEMO_MAX_MINUTES = round(DEMO_LIMIT_FACTOR * DEMO_MINUTES, 3)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``demo`` subcommands."""
    p = sub.add_parser(
        "train",
        help="pretrain an I-JEPA model",
        description=(
            "Pretrain I-JEPA. Settings come from --config (ours or an official YAML file) and "
            "then from section.key=value overrides, e.g. data.batch_size=64 "
            "meta.model_name=vit_small. A run folder (logging.folder) that holds a checkpoint "
            "resumes automatically."
        ),
    )
    p.add_argument("--config", help="YAML config file (ours or official)")
    p.add_argument("--preset", help="start from a built-in preset: demo, small-cpu")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(func=run_train)

    d = sub.add_parser(
        "demo",
        help="pretrain a small ViT on the embedded data and compare it with a random init",
        description=(
            "Pretrain a small ViT on the embedded default data set (no download), then evaluate "
            "the frozen target encoder with kNN and a linear probe against a random-init encoder "
            "of the same architecture on a held-out split. Prints a table and, last, one JSON "
            "line."
        ),
    )
    d.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    d.add_argument(
        "--minutes",
        type=float,
        default=DEMO_MINUTES,
        help=f"pretraining budget: the schedule is planned to fit it on this machine (at most "
        f"{DEMO_MAX_EPOCHS:g} epochs; default {DEMO_MINUTES:g})",
    )
    d.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="a fixed schedule of this many epochs instead of planning for --minutes",
    )
    d.add_argument("--no-report", action="store_true", help="skip the HTML report")
    d.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help=f"hard stop of pretraining (with a checkpoint) after this many minutes; 0 for no "
        f"limit (default: {DEMO_LIMIT_FACTOR:g} x --minutes, or {DEMO_MAX_MINUTES:g} with --epochs)",
    )
    d.add_argument(
        "--procs",
        default="auto",
        help="training processes, or auto: 2 one-thread ranks on a CPU with 2+ cores (faster "
        "than one 2-thread process for this small model), 1 with a GPU",
    )
    d.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    d.set_defaults(func=run_demo)


def _config(args: argparse.Namespace) -> Config:
    if args.config and args.preset:
        raise SystemExit("ijepa train: give --config or --preset, not both")
    cfg = load_config(args.config) if args.config else preset(args.preset or "small-cpu")
    return apply_overrides(cfg, args.overrides)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``ijepa train``."""
    from ijepa.dist import dist_info_from_env
    from ijepa.train.loop import train

    if dist_info_from_env().rank > 0 and not args.verbose:
        # one rank speaks for a multi-process job: the others log warnings and errors only
        logging.getLogger("ijepa").setLevel(logging.WARNING)
    cfg = _config(args)
    result = train(cfg)
    logger.info("finished at step %d; run folder %s", result.step, result.run_dir)
    return 0


def _demo_procs(value: str, cfg: Config) -> int:
    """``--procs``: a positive integer, or ``auto``."""
    import os

    from ijepa.dist import resolve_device

    on_cpu = resolve_device(cfg.meta.device).type == "cpu"
    if value == "auto":
        if not on_cpu:
            return 1
        return 2 if (os.cpu_count() or 1) >= 2 and cfg.data.batch_size % 2 == 0 else 1
    try:
        procs = int(value)
    except ValueError:
        raise SystemExit(
            f"ijepa demo: --procs must be a positive integer or auto, got {value!r}"
        ) from None
    if procs < 1:
        raise SystemExit(f"ijepa demo: --procs must be a positive integer or auto, got {value!r}")
    if procs > 1 and not on_cpu:
        raise SystemExit("ijepa demo: --procs above 1 is for CPU training (set meta.device=cpu)")
    return procs


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``ijepa demo``."""
    from ijepa.demo import format_table, plan_for_budget
    from ijepa.demo import run_demo as demo

    cfg = preset("demo")
    cfg.logging.folder = args.out
    if args.epochs is not None:
        cfg.optimization.epochs = args.epochs
    if args.max_minutes is not None and args.max_minutes < 0:
        raise SystemExit(f"ijepa demo: --max-minutes must be >= 0, got {args.max_minutes}")
    if not args.minutes > 0:
        raise SystemExit(f"ijepa demo: --minutes must be > 0, got {args.minutes}")
    limit: float | None = args.max_minutes or None  # --max-minutes 0: no limit
    if args.max_minutes is None:
        planned = args.minutes if args.epochs is None else DEMO_MINUTES
        limit = round(DEMO_LIMIT_FACTOR * planned, 3)
    cfg.optimization.time_limit_min = limit
    cfg = apply_overrides(cfg, args.overrides)
    procs = _demo_procs(args.procs, cfg)
    plan: dict = {}
    saved = Path(args.out) / "config.yaml"
    if args.epochs is None and (Path(args.out) / "jepa-latest.pth.tar").exists() and saved.exists():
        # a resumed run keeps the schedule it planned when it started
        cfg.optimization = load_config(saved).optimization
        cfg.optimization.time_limit_min = limit
    elif args.epochs is None:
        cfg, plan = plan_for_budget(
            cfg, procs=procs, minutes=args.minutes, max_epochs=DEMO_MAX_EPOCHS, limit_min=limit
        )
    summary = demo(cfg, procs=procs)
    summary.update(plan)
    if not args.no_report:
        from ijepa.viz.report import build_report

        # PCA keeps the demo inside its time budget (UMAP's first call compiles with numba)
        page = build_report(summary["run_dir"], embedding_method="pca", predictor_steps=150)
        summary["report"] = str(page)
    print(format_table(summary))
    print(json.dumps(summary))
    return 0
