"""The demo: pretrain on the embedded data, then compare frozen features with a random init."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ijepa.config import Config, dataset_spec
from ijepa.data import ImageSet, eval_transform_batch, load_imageset
from ijepa.eval import extract_features, knn_classify, linear_probe
from ijepa.train.build import build_encoder
from ijepa.train.loop import train

logger = logging.getLogger(__name__)


def eval_batches(
    data: ImageSet, size: int, batch_size: int = 256
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic eval-transformed batches of an in-memory set: (B, C, S, S), (B,)."""
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size]
        yield (
            eval_transform_batch(images, size, mean=data.mean, std=data.std),
            data.labels[start : start + batch_size],
        )


def probe(
    encoder: nn.Module, train_set: ImageSet, test_set: ImageSet, size: int, *, progress: bool
) -> dict[str, float]:
    """kNN and linear-probe top-1 of an encoder's average-pooled features."""
    kw: dict[str, Any] = {"poolings": ("avg",), "progress": progress}
    tr = extract_features(encoder, eval_batches(train_set, size), **kw)
    te = extract_features(encoder, eval_batches(test_set, size), **kw)
    knn = knn_classify(tr["avg"], tr["labels"], te["avg"], te["labels"], k=20)
    lin = linear_probe({"avg": tr["avg"]}, tr["labels"], {"avg": te["avg"]}, te["labels"])
    return {"knn": float(knn["top1"]), "linear": float(lin["test_top1"])}


def run_demo(cfg: Config) -> dict[str, Any]:
    """Pretrain as configured, evaluate trained vs random-init encoders, save and return figures."""
    t0 = time.perf_counter()
    result = train(cfg)
    train_minutes = (time.perf_counter() - t0) / 60
    spec = dataset_spec(cfg)
    train_set = load_imageset(spec, "train")
    test_set = load_imageset(spec, "test")
    size = cfg.data.crop_size
    progress = cfg.logging.progress
    trained = probe(result.models.target_encoder, train_set, test_set, size, progress=progress)
    torch.manual_seed(cfg.meta.seed + 1)
    random_enc = build_encoder(result.model_args, attn_impl=cfg.meta.attn_impl)
    random = probe(random_enc, train_set, test_set, size, progress=progress)
    summary = {
        "dataset": spec,
        "train_images": len(train_set),
        "test_images": len(test_set),
        "steps": result.step,
        "knn_trained": trained["knn"],
        "knn_random": random["knn"],
        "linear_trained": trained["linear"],
        "linear_random": random["linear"],
        "train_minutes": round(train_minutes, 2),
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "run_dir": str(result.run_dir),
    }
    (result.run_dir / "demo_results.json").write_text(json.dumps(summary, indent=2) + "\n")
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
