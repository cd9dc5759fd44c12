"""The demo: pretrain on the embedded data, then compare frozen features with a random init."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ijepa.checkpoint import latest_path, load_checkpoint, load_module_state
from ijepa.config import Config, apply_overrides, dataset_spec
from ijepa.data import load_imageset
from ijepa.diagnostics import collapse_message, collapse_summary
from ijepa.eval.images import quick_probe, raw_probe
from ijepa.models import build_encoder, random_init_encoder
from ijepa.train.budget import (
    WARMUP_STEPS,
    BudgetError,
    budget_config,
    calibrate,
    plan_steps,
    probe_config,
)
from ijepa.train.local_launch import launch_local
from ijepa.train.loop import train
from ijepa.viz.curves import read_metrics

logger = logging.getLogger(__name__)


def _train(
    cfg: Config, procs: int
) -> tuple[nn.Module, dict[str, Any], int, Any, list[dict[str, Any]]]:
    """Pretrain in this process or in ``procs`` local ranks.

    Returns:
        (target encoder, model_args, step, run dir, metrics records).
    """
    if procs == 1:
        result = train(cfg)
        return (
            result.models.target_encoder,
            result.model_args,
            result.step,
            result.run_dir,
            result.history,
        )
    run_dir = launch_local(cfg, procs, threads=max(1, (os.cpu_count() or 1) // procs))
    path = latest_path(run_dir, cfg.logging.write_tag)
    state = load_checkpoint(path)  # what the ranks left: read back as any checkpoint is
    target = build_encoder(state["model_args"], attn_impl=cfg.meta.attn_impl)
    load_module_state(target, state["target_encoder"], f"{path} [target_encoder]")
    history = read_metrics(Path(run_dir) / "metrics.jsonl")
    return target, state["model_args"], int(state["step"]), run_dir, history


def ranks_step_s(cfg: Config, steps: int, *, procs: int, threads: int, limit_min: float) -> float:
    """Median wall seconds of a step when ``procs`` local ranks share ``cfg``'s global batch.

    :func:`ijepa.train.budget.calibrate` times one rank's share in this process, with the other
    cores idle; the ranks of a real run also wait on each other's gradients and share the memory
    system. On the 2-core Intel Xeon (AMX) the demo's in-process step took 0.079 s and its two
    1-thread ranks 0.090 s (a run planned on the first would overrun its budget). So a
    multi-process demo is planned on this: ``steps`` steps of the same launch in a throwaway
    folder, timed by their metrics records, the first :data:`WARMUP_STEPS` left out.
    """
    with tempfile.TemporaryDirectory(prefix="ijepa-calibration-") as folder:
        run_dir = launch_local(probe_config(cfg, folder, steps, limit_min), procs, threads=threads)
        records = read_metrics(Path(run_dir) / "metrics.jsonl")
    timed = records[WARMUP_STEPS:]
    if len(timed) < 2:
        raise BudgetError(
            f"timing {procs} ranks ran only {len(records)} step(s) in {limit_min * 60:.0f} s: "
            "the budget is too short for this config on this machine; give more minutes"
        )
    return statistics.median(cfg.data.batch_size / r["img_per_s"] for r in timed)


def plan_for_budget(
    cfg: Config, *, procs: int, minutes: float, max_epochs: float, limit_min: float | None
) -> tuple[Config, dict[str, Any]]:
    """Fit the demo's schedule to ``minutes`` of pretraining on this machine.

    A 12-step calibration in this process times one rank's step (its share of the global batch,
    with the rank's thread count), then the schedules are set to span as many steps as fit in
    what is left of the budget (at most ``max_epochs`` epochs), so that a slow machine trains
    fewer steps with a *complete* schedule instead of stopping a long one half way.

    Returns:
        The planned config, and what the plan measured (for the summary).
    """
    t0 = time.perf_counter()
    spec = dataset_spec(cfg)
    images = len(load_imageset(spec, "train"))
    ipe = images // cfg.data.batch_size
    if ipe < 1:
        raise BudgetError(
            f"{images} train images are fewer than one batch of {cfg.data.batch_size}"
        )
    rank_cfg = apply_overrides(cfg, [f"data.batch_size={cfg.data.batch_size // procs}"])
    threads = torch.get_num_threads()
    if procs > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs))
    try:
        cal = calibrate(rank_cfg, 12, limit_min=minutes / 2)
    finally:
        torch.set_num_threads(threads)
    # the in-process calibration above still gives the record, start-up and checkpoint costs
    if procs > 1:  # the ranks' own step: slower than one rank's share timed alone
        rank_threads = max(1, (os.cpu_count() or 1) // procs)
        step_s = ranks_step_s(cfg, 12, procs=procs, threads=rank_threads, limit_min=minutes / 2)
        cal = dataclasses.replace(cal, step_s=step_s)
    left = 60.0 * minutes - (time.perf_counter() - t0)
    fit = plan_steps(cal, left, log_every=cfg.logging.log_every, ipe=ipe)
    steps = min(fit, int(max_epochs * ipe))
    if steps < 1:
        raise BudgetError(
            f"--minutes {minutes:g} leaves no time for a training step on this machine "
            f"(calibration took {cal.seconds:.0f} s); give more minutes"
        )
    planned = budget_config(cfg, steps, ipe, folder=cfg.logging.folder, limit_min=limit_min)
    logger.info(
        "demo budget: %.1f min; a step takes %.3f s here, so %d steps (%.1f epochs) are planned",
        minutes, cal.step_s, steps, steps / ipe,
    )  # fmt: skip
    return planned, {"step_s": round(cal.step_s, 4), "planned_steps": steps}


def run_demo(
    cfg: Config, *, procs: int = 1, readouts: tuple[str, ...] = ("avg", "grid")
) -> dict[str, Any]:
    """Pretrain as configured, evaluate trained vs random-init vs raw pixels, save the figures.

    Args:
        cfg: the run's config (the ``demo`` preset and overrides).
        procs: training processes; above 1, :func:`ijepa.train.local_launch.launch_local` splits
            the same global batch over that many 1-thread ranks (faster on a small CPU).
        readouts: how frozen features are read (see :data:`ijepa.eval.images.READOUTS`); the
            first is the headline (flat ``knn_*``/``linear_*`` keys), every one is reported
            under ``"readouts"`` for the trained and the random-init encoder alike.

    Returns:
        The summary that is also written to ``RUN/demo_results.json``.
    """
    t0 = time.perf_counter()
    target_encoder, model_args, steps, run_dir, history = _train(cfg, procs)
    train_minutes = (time.perf_counter() - t0) / 60
    spec = dataset_spec(cfg)
    train_set = load_imageset(spec, "train")
    test_set = load_imageset(spec, "test")
    size = cfg.data.crop_size
    progress = cfg.logging.progress
    kw: dict[str, Any] = {"img_size": size, "progress": progress, "readouts": readouts}
    trained = quick_probe(target_encoder, train_set, test_set, **kw)
    random_enc = random_init_encoder(model_args, seed=cfg.meta.seed, attn_impl=cfg.meta.attn_impl)
    random = quick_probe(random_enc, train_set, test_set, **kw)
    raw = raw_probe(train_set, test_set)
    head = readouts[0]
    collapse = collapse_summary(history)
    summary = {
        "dataset": spec,
        "train_images": len(train_set),
        "test_images": len(test_set),
        "steps": steps,
        "train_processes": procs,
        "readout": head,
        "knn_trained": trained[head]["knn"],
        "knn_random": random[head]["knn"],
        "knn_raw": raw["knn"],
        "linear_trained": trained[head]["linear"],
        "linear_random": random[head]["linear"],
        "linear_raw": raw["linear"],
        "readouts": {r: {"trained": trained[r], "random": random[r]} for r in readouts},
        "collapse": collapse_message(collapse),
        "min_late_probe_rank": collapse["min_late_probe_rank"],
        "train_minutes": round(train_minutes, 2),
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "run_dir": str(run_dir),
    }
    (Path(run_dir) / "demo_results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """A small human-readable comparison table (every readout, raw pixels, the collapse line)."""
    lines = [
        f"I-JEPA demo on '{summary['dataset']}' ({summary['train_images']} train / "
        f"{summary['test_images']} held-out images, {summary['steps']} steps, "
        f"{summary['minutes']:.1f} min)",
        f"{'features':<34}{'kNN top-1':>12}{'linear top-1':>15}",
    ]
    for readout, res in summary["readouts"].items():
        for who, label in (("trained", "I-JEPA target encoder"), ("random", "random init")):
            name = f"{label}, {READOUT_LABELS.get(readout, readout)}"
            lines.append(f"{name:<34}{res[who]['knn']:>12.3f}{res[who]['linear']:>15.3f}")
    lines.append(f"{'raw pixels':<34}{summary['knn_raw']:>12.3f}{summary['linear_raw']:>15.3f}")
    lines.append(summary["collapse"])
    return "\n".join(lines)


#: How the table names each readout.
READOUT_LABELS = {"avg": "avg pool", "grid": "2x2 grid pool", "flat": "all tokens"}
