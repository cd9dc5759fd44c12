"""The demo: pretrain on the embedded data, then compare frozen features with a random init."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ijepa.config import Config, dataset_spec
from ijepa.data import load_imageset
from ijepa.evaluate import quick_probe
from ijepa.models import build_encoder
from ijepa.train.local_launch import launch_local
from ijepa.train.loop import train
from ijepa.viz.runs import load_run

logger = logging.getLogger(__name__)


def _train(cfg: Config, procs: int) -> tuple[nn.Module, dict[str, Any], int, Any]:
    """Pretrain in this process or in ``procs`` local ranks: (target encoder, model_args, step, run dir)."""
    if procs == 1:
        result = train(cfg)
        return result.models.target_encoder, result.model_args, result.step, result.run_dir
    run_dir = launch_local(cfg, procs, threads=max(1, (os.cpu_count() or 1) // procs))
    run = load_run(run_dir)
    return run.models.target_encoder, run.model_args, run.step, run_dir


def run_demo(cfg: Config, *, procs: int = 1) -> dict[str, Any]:
    """Pretrain as configured, evaluate trained vs random-init encoders, save and return figures.

    Args:
        cfg: the run's config (the ``demo`` preset and overrides).
        procs: training processes; above 1, :func:`ijepa.train.local_launch.launch_local` splits
            the same global batch over that many 1-thread ranks (faster on a small CPU).
    """
    t0 = time.perf_counter()
    target_encoder, model_args, steps, run_dir = _train(cfg, procs)
    train_minutes = (time.perf_counter() - t0) / 60
    spec = dataset_spec(cfg)
    train_set = load_imageset(spec, "train")
    test_set = load_imageset(spec, "test")
    size = cfg.data.crop_size
    progress = cfg.logging.progress
    trained = quick_probe(target_encoder, train_set, test_set, img_size=size, progress=progress)
    torch.manual_seed(cfg.meta.seed + 1)
    random_enc = build_encoder(model_args, attn_impl=cfg.meta.attn_impl)
    random = quick_probe(random_enc, train_set, test_set, img_size=size, progress=progress)
    summary = {
        "dataset": spec,
        "train_images": len(train_set),
        "test_images": len(test_set),
        "steps": steps,
        "train_processes": procs,
        "knn_trained": trained["knn"],
        "knn_random": random["knn"],
        "linear_trained": trained["linear"],
        "linear_random": random["linear"],
        "train_minutes": round(train_minutes, 2),
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "run_dir": str(run_dir),
    }
    (Path(run_dir) / "demo_results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """A small human-readable comparison table."""
    lines = [
        f"I-JEPA demo on '{summary['dataset']}' ({summary['train_images']} train / "
        f"{summary['test_images']} held-out images, {summary['steps']} steps, "
        f"{summary['minutes']:.1f} min)",
        f"{'encoder':<22}{'kNN top-1':>12}{'linear top-1':>15}",
        f"{'I-JEPA target encoder':<22}{summary['knn_trained']:>12.3f}{summary['linear_trained']:>15.3f}",
        f"{'random init':<22}{summary['knn_random']:>12.3f}{summary['linear_random']:>15.3f}",
    ]
    return "\n".join(lines)
