"""Shared helpers of the picture tests: a tiny model's arguments, synthetic images, run folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ijepa.checkpoint import save_checkpoint
from ijepa.config import Config, save_config
from ijepa.models import build_models

IMG = 32
PATCH = 4
XSS_LABEL = "<script>alert(1)</script>"
MODEL_ARGS = {
    "model_name": "vit_tiny",
    "img_size": IMG,
    "patch_size": PATCH,
    "in_chans": 3,
    "pred_depth": 1,
    "pred_emb_dim": 48,
    "enc_depth": 2,
    "enc_emb_dim": 48,
    "enc_num_heads": 3,
}


def synthetic_images(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields ``(n, 3, 32, 32)`` in ``[0, 1]``."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=IMG, mode="bilinear")


def make_run(folder: Path, *, dataset: str = "embedded", records: int = 5) -> Path:
    """A run folder in our format: config.yaml, metrics.jsonl, a checkpoint and results."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.data.dataset = dataset
    cfg.data.crop_size = IMG
    cfg.mask.patch_size = PATCH
    cfg.mask.min_keep = 4
    cfg.meta.model_name = "vit_tiny"
    cfg.meta.enc_depth, cfg.meta.enc_emb_dim, cfg.meta.enc_num_heads = 2, 48, 3
    cfg.meta.pred_depth, cfg.meta.pred_emb_dim = 1, 48
    cfg.logging.folder = str(folder)
    save_config(cfg, folder / "config.yaml")
    torch.manual_seed(0)
    models = build_models(MODEL_ARGS)
    state = {
        "encoder": models.encoder.state_dict(),
        "predictor": models.predictor.state_dict(),
        "target_encoder": models.target_encoder.state_dict(),
        "epoch": 1,
        "step": 10 * records,
        "model_args": MODEL_ARGS,
        "config": cfg.to_dict(),
    }
    save_checkpoint(state, folder / "jepa-latest.pth.tar")
    with open(folder / "metrics.jsonl", "w") as fh:
        for i in range(1, records + 1):
            rec = {
                "step": 10 * i,
                "epoch": 0,
                "loss": 0.5 / i,
                "lr": 1e-3 * i / records,
                "wd": 0.04,
                "momentum": 0.996 + 0.0008 * i,
                "target_std": 0.4,
                "probe_rank": 9.0,
            }
            fh.write(json.dumps(rec) + "\n")
    (folder / "demo_results.json").write_text(
        json.dumps({"knn_trained": 0.61, "note": XSS_LABEL, "nested": {"linear": 0.7}})
    )
    return folder
