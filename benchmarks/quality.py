"""Quality per CPU-minute: pretrain for a wall-clock budget, then probe the frozen features.

    python benchmarks/quality.py --data fashion-mnist --minutes 30      # `make quality`
    python benchmarks/quality.py --data embedded --quick                 # CI smoke run (~1 min)
    python benchmarks/quality.py --data fashion-mnist --preset demo --set data.batch_size=128

Pretrains I-JEPA with a preset (``small-cpu`` for Fashion-MNIST, ``demo`` for the other sets;
``--preset`` picks another, ``--set`` overrides keys) for ``--minutes`` of wall time on this
machine, then reports kNN, linear and 1 % low-shot top-1 on the test split for three
representations under the same protocols: the trained target (EMA) encoder, a random-init encoder
of the same architecture, and the raw pixels (flattened, normalised with the set's mean/std).

The wall-clock budget. The LR, weight-decay and EMA schedules span the run's total step count, so
the run must know it up front: a short throwaway run (``--calibration-steps`` steps) measures the
step time, the per-log-record and per-checkpoint overheads and the start-up cost; the step count
that fits in what is left of the budget sets ``optimization.epochs``/``ipe_scale`` (the preset's
warm-up *fraction* is kept). ``optimization.time_limit_min`` is a hard stop at the budget should
the machine slow down (the run then stops before its schedule ends: ``time_limit_reached``).

``--evaluate RUN`` skips training and evaluates a finished run folder again with today's
protocols (after a change to a probe), keeping its training facts; the record goes to
``RUN/quality-reevaluated.json`` and stdout.

Progress goes to stderr; the last stdout line is one JSON object (accuracies are fractions):
``minutes`` (pretraining wall minutes, calibration included), ``linear``, ``knn``,
``lowshot_1pct`` (+ ``_std``) for the trained encoder's average-pooled features (the paper's
readout), the same with ``grid_`` for its 2 x 2 grid of averages (a readout that keeps a coarse
layout) and ``flat_`` for all its tokens concatenated (the whole layout), ``random_``,
``random_grid_`` and ``random_flat_`` for the random init, ``raw_`` for the pixels; ``collapse``
(one line: did the run collapse, from which step, what to try), and the run's facts (steps,
epochs, images, threads, CPU, protocol settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ijepa.config import Config, apply_overrides, dataset_spec, validate
from ijepa.data import ImageSet, load_imageset, parse_spec
from ijepa.diagnostics import collapse_message, collapse_summary
from ijepa.eval import knn_classify, linear_probe, lowshot_eval
from ijepa.eval.images import features_of, pixel_features
from ijepa.hardware import cpu_name
from ijepa.models import random_init_encoder
from ijepa.recipes import PRESETS, preset
from ijepa.train.budget import WARMUP_STEPS, budget_config, calibrate, plan_steps
from ijepa.train.loop import train

logger = logging.getLogger("quality")

#: Fraction of the labels of the low-shot protocol, and its number of random draws.
LOWSHOT_FRACTION = 0.01
LOWSHOT_DRAWS = 5
#: kNN neighbours and vote temperature (the DINO protocol).
KNN_K = 20
KNN_TEMPERATURE = 0.07
QUICK = {"minutes": 0.3, "train_images": 2000, "test_images": 500}


class QualityError(ValueError):
    """Bad benchmark input (budget, sizes, output folder); the message says what to change."""


# ----------------------------------------------------------------------------- configuration
def default_preset(data: str) -> str:
    """``small-cpu`` for Fashion-MNIST, ``demo`` for every other data kind."""
    kind, _ = parse_spec(data)
    return "small-cpu" if kind == "fashion-mnist" else "demo"


def build_config(
    data: str,
    preset_name: str | None,
    overrides: Sequence[str],
    *,
    seed: int,
    train_images: int | None,
    progress: bool,
) -> tuple[Config, str]:
    """The preset for ``data`` with the overrides applied, and the preset's name."""
    name = preset_name or default_preset(data)
    if name not in PRESETS:
        raise QualityError(f"unknown --preset '{name}'; choose one of: {', '.join(PRESETS)}")
    cfg = preset(name)
    cfg.data.dataset = data
    cfg.meta.seed = seed
    cfg.logging.progress = progress
    cfg = apply_overrides(cfg, list(overrides))
    if train_images is not None:
        cfg.data.max_images = train_images
    validate(cfg)
    return cfg, name


def config_and_sets(
    spec: dict[str, Any], *, progress: bool
) -> tuple[Config, str, ImageSet, ImageSet]:
    """The config, preset name and (train, test) sets of a record or job spec.

    ``spec`` holds ``data``, ``preset``, ``overrides``, ``seed``, ``train_images`` and
    ``test_images``, as this benchmark's records and ``quality_pairs.py``'s jobs do.
    """
    cfg, preset_name = build_config(
        spec["data"],
        spec["preset"],
        spec["overrides"],
        seed=spec["seed"],
        train_images=spec["train_images"],
        progress=progress,
    )
    train_set, test_set = load_sets(cfg, spec["test_images"])
    return cfg, preset_name, train_set, test_set


def load_sets(cfg: Config, test_images: int | None) -> tuple[ImageSet, ImageSet]:
    """The labelled train set (the pretraining images) and the test set, in memory."""
    spec = dataset_spec(cfg)
    train_set = load_imageset(spec, "train")
    test_set = load_imageset(spec, "test")
    if cfg.data.max_images is not None:
        train_set = train_set.subset(torch.arange(min(cfg.data.max_images, len(train_set))))
    if test_images is not None:
        test_set = test_set.subset(torch.arange(min(test_images, len(test_set))))
    return train_set, test_set


def check_lowshot(train_set: ImageSet, fraction: float = LOWSHOT_FRACTION) -> None:
    """Fail early unless the low-shot subset keeps 2 images of every class.

    The library's low-shot protocol picks the head on a validation split carved from the labelled
    subset, so each class needs one image to train on and one to validate on.
    """
    counts = torch.bincount(train_set.labels, minlength=train_set.num_classes)
    for cls, n in enumerate(counts.tolist()):
        if max(1, round(fraction * n)) < 2:
            need = math.ceil(1.5 / fraction)
            raise QualityError(
                f"the {len(train_set)} train images leave class '{train_set.classes[cls]}' with "
                f"{n} image(s): {fraction:.0%} low-shot needs at least 2 labelled images per "
                f"class (about {need} images per class); raise --train-images"
            )


# ----------------------------------------------------------------------------- evaluation
def probe_all(
    train_feats: dict[str, torch.Tensor],
    test_feats: dict[str, torch.Tensor],
    *,
    knn_key: str,
    keys: Sequence[str],
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """kNN on ``knn_key``, the linear grid and 1 % low-shot on ``keys``, for one representation."""
    ytr, yte = train_feats["labels"], test_feats["labels"]
    knn = knn_classify(
        train_feats[knn_key], ytr, test_feats[knn_key], yte, k=KNN_K, temperature=KNN_TEMPERATURE
    )
    lin = linear_probe(train_feats, ytr, test_feats, yte, keys=keys, seed=seed, device=device)
    low = lowshot_eval(
        train_feats,
        ytr,
        test_feats,
        yte,
        fraction=LOWSHOT_FRACTION,
        draws=LOWSHOT_DRAWS,
        keys=keys,
        seed=seed,
        device=device,
    )
    return {"knn": knn, "linear": lin, "lowshot": low}


#: Readouts of the frozen encoders, each reported under its own label: the paper's average
#: pooling of the last layer, a 2 x 2 spatial grid of averages, and all tokens concatenated
#: (``ijepa.eval.features``).
READOUTS = ("avg", "grid", "flat")


def encoder_results(
    encoder: torch.nn.Module,
    train_set: ImageSet,
    test_set: ImageSet,
    *,
    img_size: int,
    seed: int,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Every protocol on an encoder's frozen features, for each readout: ``{readout: results}``."""
    device = next(encoder.parameters()).device
    kw: dict[str, Any] = {
        "poolings": READOUTS,
        "img_size": img_size,
        "device": device,
        "progress": progress,
    }
    tr = features_of(encoder, train_set, **kw)
    te = features_of(encoder, test_set, **kw)
    return {r: probe_all(tr, te, knn_key=r, keys=(r,), seed=seed, device=device) for r in READOUTS}


def _flat_scores(prefix: str, res: dict[str, Any]) -> dict[str, Any]:
    scores = {
        f"{prefix}linear": res["linear"]["top1"],
        f"{prefix}knn": res["knn"]["top1"],
        f"{prefix}lowshot_1pct": res["lowshot"]["mean"],
        f"{prefix}lowshot_1pct_std": res["lowshot"]["std"],
    }
    return {key: round(float(value), 5) for key, value in scores.items()}


def _protocol_settings(res: dict[str, Any]) -> dict[str, Any]:
    lin, low, knn = res["linear"], res["lowshot"], res["knn"]
    return {
        "encoder": "target (EMA) encoder; random: same architecture, fresh init",
        "raw": "flattened pixels, (x/255 - mean)/std with the set's statistics",
        "knn": {
            "k": knn["k"],
            "temperature": knn["temperature"],
            "similarity": "cosine",
            "readouts": list(READOUTS),
        },
        "linear": {
            "readouts": list(READOUTS),
            "lrs": sorted({g["lr"] for g in lin["grid"]}),
            "epochs": lin["epochs"],
            "optimizer": lin["optimizer"],
            "val_fraction": lin["val_fraction"],
            "selection": "best validation top-1 over lrs, per readout",
        },
        "lowshot": {
            "fraction": low["fraction"],
            "draws": low["num_draws"],
            "readouts": list(READOUTS),
            "epochs": low["epochs"],
            "selection": low["selection"],
            "labelled_per_draw": low["draws"][0]["n_labelled"],
        },
    }


def _best(res: dict[str, Any]) -> dict[str, Any]:
    return {"pooling": res["linear"]["best"]["pooling"], "lr": res["linear"]["best"]["lr"]}


# ----------------------------------------------------------------------------- the benchmark
def evaluate_encoders(
    target_encoder: torch.nn.Module,
    model_args: dict[str, Any],
    cfg: Config,
    train_set: ImageSet,
    test_set: ImageSet,
    *,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Every score of the record: trained, random init and raw pixels, each readout, and the
    protocol (``linear_best``, ``protocol``)."""
    size = cfg.data.crop_size
    trained = encoder_results(
        target_encoder, train_set, test_set, img_size=size, seed=seed, progress=progress
    )
    random_enc = random_init_encoder(model_args, seed=seed, attn_impl=cfg.meta.attn_impl)
    random = encoder_results(
        random_enc, train_set, test_set, img_size=size, seed=seed, progress=progress
    )
    raw = probe_all(
        pixel_features(train_set),
        pixel_features(test_set),
        knn_key="pixels",
        keys=("pixels",),
        seed=seed,
        device=next(target_encoder.parameters()).device,
    )
    return {
        **_flat_scores("", trained["avg"]),
        **_flat_scores("raw_", raw),
        **_flat_scores("random_", random["avg"]),
        **_flat_scores("grid_", trained["grid"]),
        **_flat_scores("random_grid_", random["grid"]),
        **_flat_scores("flat_", trained["flat"]),
        **_flat_scores("random_flat_", random["flat"]),
        "linear_best": {
            "trained": {r: _best(trained[r]) for r in READOUTS},
            "random": {r: _best(random[r]) for r in READOUTS},
            "raw": _best(raw),
        },
        "protocol": _protocol_settings(trained["avg"]),
    }


def reevaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate a finished run of this benchmark again with today's protocols (``--evaluate``).

    Reads ``RUN/quality.json`` (the data, preset, overrides, seed and image counts the run used)
    and the target encoder of ``RUN/jepa-latest.pth.tar``; the training facts (steps, minutes,
    collapse) are kept, every score is recomputed. Writes ``RUN/quality-reevaluated.json``.
    """
    from ijepa.compat.formats import read_encoder

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.evaluate)
    record_path, ckpt = run_dir / "quality.json", run_dir / "jepa-latest.pth.tar"
    for need in (record_path, ckpt):
        if not need.is_file():
            raise QualityError(f"--evaluate {run_dir}: {need.name} is missing (not a finished run)")
    old = json.loads(record_path.read_text())
    progress = not args.no_progress
    cfg, _, train_set, test_set = config_and_sets(old, progress=progress)
    encoder, _meta = read_encoder(ckpt, which="target")
    encoder.eval()
    t0 = time.perf_counter()
    scores = evaluate_encoders(
        encoder, old["model"], cfg, train_set, test_set, seed=old["seed"], progress=progress
    )
    record = {
        **old,
        **scores,
        "eval_minutes": round((time.perf_counter() - t0) / 60.0, 3),
        "reevaluated": {"from": str(record_path), "threads": torch.get_num_threads()},
    }
    (run_dir / "quality-reevaluated.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate, pretrain within the budget, evaluate; returns the JSON record."""
    if args.evaluate is not None:
        return reevaluate(args)
    if not args.minutes > 0:
        raise QualityError(f"--minutes must be > 0, got {args.minutes}")
    for name in ("train_images", "test_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise QualityError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.calibration_steps < WARMUP_STEPS + 2:
        raise QualityError(f"--calibration-steps must be >= {WARMUP_STEPS + 2}")
    if args.threads is not None:
        if args.threads < 1:
            raise QualityError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    given = Path(args.out) if args.out else None
    if given is not None and given.exists() and (not given.is_dir() or any(given.iterdir())):
        raise QualityError(
            f"--out {given} exists and is not an empty folder (training would resume from it); "
            "name a new folder"
        )
    progress = not args.no_progress
    cfg, preset_name = build_config(
        args.data,
        args.preset,
        args.set,
        seed=args.seed,
        train_images=args.train_images,
        progress=progress,
    )
    train_set, test_set = load_sets(cfg, args.test_images)
    check_lowshot(train_set)
    ipe = len(train_set) // cfg.data.batch_size
    if ipe < 1:
        raise QualityError(
            f"{len(train_set)} train images are fewer than one batch of {cfg.data.batch_size}"
        )
    logger.info(
        "data %s: %d train / %d test images; preset %s; budget %.2f min",
        dataset_spec(cfg),
        len(train_set),
        len(test_set),
        preset_name,
        args.minutes,
    )

    budget_s = 60.0 * args.minutes
    clock0 = time.perf_counter()
    cal = calibrate(cfg, args.calibration_steps, limit_min=args.minutes / 2)
    left_s = budget_s - (time.perf_counter() - clock0)
    steps = plan_steps(cal, left_s, log_every=cfg.logging.log_every, ipe=ipe)
    logger.info(
        "calibration: %d steps in %.1f s; %.3f s/step, +%.3f s/record, start-up %.1f s, "
        "checkpoint %.2f s -> %d steps fit in the %.1f s left",
        cal.steps,
        cal.seconds,
        cal.step_s,
        cal.log_s,
        cal.startup_s,
        cal.checkpoint_s,
        steps,
        left_s,
    )
    if steps < 1:
        raise QualityError(
            f"--minutes {args.minutes:g} is too short: calibration took {cal.seconds:.0f} s and "
            f"start-up alone takes {cal.startup_s:.0f} s, leaving no time for a step"
        )
    out = given or Path(tempfile.mkdtemp(prefix="ijepa-quality-"))
    limit_min = (budget_s - (time.perf_counter() - clock0)) / 60.0
    run_cfg = budget_config(cfg, steps, ipe, folder=out, limit_min=limit_min)
    t_train = time.perf_counter()
    result = train(run_cfg)
    t_done = time.perf_counter()
    pretrain_min = (t_done - clock0) / 60.0

    scores = evaluate_encoders(
        result.models.target_encoder,
        result.model_args,
        cfg,
        train_set,
        test_set,
        seed=args.seed,
        progress=progress,
    )
    eval_min = (time.perf_counter() - t_done) / 60.0
    collapse = collapse_summary(result.history)

    ips = [rec["img_per_s"] for rec in result.history]
    record: dict[str, Any] = {
        "minutes": round(pretrain_min, 3),
        **scores,
        "budget_minutes": args.minutes,
        "calibration_minutes": round(cal.seconds / 60.0, 3),
        "train_minutes": round((t_done - t_train) / 60.0, 3),
        "eval_minutes": round(eval_min, 3),
        "steps": result.step,
        "planned_steps": steps,
        "time_limit_reached": result.time_limit_reached,
        "epochs": round(result.step * cfg.data.batch_size / len(train_set), 3),
        "img_per_s": round(statistics.median(ips), 2) if ips else None,
        "batch_size": cfg.data.batch_size,
        "data": args.data,
        "preset": preset_name,
        "overrides": list(args.set),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "num_classes": train_set.num_classes,
        "model": result.model_args,
        "collapse": collapse_message(collapse),
        "min_late_probe_rank": collapse["min_late_probe_rank"],
        "collapsed": collapse["collapsed"],
        "threads": torch.get_num_threads(),
        "device": str(next(result.models.target_encoder.parameters()).device),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "seed": args.seed,
        "run_dir": str(result.run_dir),
    }
    (out / "quality.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def format_table(rec: dict[str, Any]) -> str:
    """A human-readable summary (stderr)."""
    lines = [
        f"{rec['data']}: {rec['steps']} steps ({rec['epochs']:.2f} epochs) in {rec['minutes']:.2f} "
        f"min of pretraining (budget {rec['budget_minutes']:g}), {rec['train_images']} train / "
        f"{rec['test_images']} test images",
        f"{'features':<30}{'linear':>10}{'kNN':>10}{'1 % low-shot':>18}",
    ]
    for label, prefix in (
        ("I-JEPA, avg pool", ""),
        ("I-JEPA, 2x2 grid pool", "grid_"),
        ("random init, avg pool", "random_"),
        ("I-JEPA, all tokens", "flat_"),
        ("random init, 2x2 grid pool", "random_grid_"),
        ("random init, all tokens", "random_flat_"),
        ("raw pixels", "raw_"),
    ):
        lines.append(
            f"{label:<30}{rec[prefix + 'linear']:>10.4f}{rec[prefix + 'knn']:>10.4f}"
            f"{rec[prefix + 'lowshot_1pct']:>11.4f} ± {rec[prefix + 'lowshot_1pct_std']:.4f}"
        )
    lines.append(rec["collapse"])
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--quick`` fills in the small CI sizes where not given)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="fashion-mnist", help="data spec (default fashion-mnist)")
    p.add_argument("--minutes", type=float, default=None, help="pretraining wall-time budget")
    p.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument("--out", default=None, help="run folder (new or empty; default: a temp dir)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=None, help="first N train images only")
    p.add_argument("--test-images", type=int, default=None, help="first N test images only")
    p.add_argument("--calibration-steps", type=int, default=12)
    p.add_argument("--quick", action="store_true", help="CI mode: 0.3 min, 2000/500 images")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--evaluate",
        metavar="RUN",
        default=None,
        help="evaluate a finished run folder of this benchmark again (no training)",
    )
    args = p.parse_args(argv)
    for key, value in QUICK.items():
        if args.quick and getattr(args, key) is None:
            setattr(args, key, value)
    if args.minutes is None:
        args.minutes = 30.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the JSON record as the last stdout line. Exit 2 on bad input."""
    from ijepa.cli import user_errors

    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        record = run(args)
    except (*user_errors(), QualityError) as err:
        logger.debug("details", exc_info=True)
        message = " ".join(str(err).split())
        print(f"quality.py: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("quality.py: interrupted", file=sys.stderr)
        return 130
    print(format_table(record), file=sys.stderr)
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
