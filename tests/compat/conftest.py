"""Fixtures for the compat tests: a tiny trained-looking I-JEPA checkpoint in our format."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ijepa.checkpoint import FORMAT_VERSION
from ijepa.models import JEPAModels, build_models
from ijepa.train.optim import build_optimizer

TINY_ARGS: dict[str, Any] = {
    "model_name": "vit_tiny",
    "img_size": 32,
    "patch_size": 8,
    "in_chans": 3,
    "pred_depth": 2,
    "pred_emb_dim": 32,
    "enc_depth": 2,
    "enc_emb_dim": 64,
    "enc_num_heads": 4,
}


def make_models(seed: int = 0, **overrides: Any) -> JEPAModels:
    """Random tiny networks whose target and context encoders differ."""
    torch.manual_seed(seed)
    models = build_models({**TINY_ARGS, **overrides})
    with torch.no_grad():
        for name, p in models.target_encoder.named_parameters():
            if name != "pos_embed":  # keep the frozen sin-cos table
                p.add_(0.05 * torch.randn_like(p))
        for module in (models.encoder, models.predictor):
            for name, p in module.named_parameters():
                if "norm" in name:  # LayerNorms away from the identity, so they matter
                    p.add_(0.1 * torch.randn_like(p))
    return models


def backward(models: JEPAModels, in_chans: int = 3) -> None:
    """One I-JEPA-shaped forward and backward pass, so every trainable tensor gets a gradient."""
    x = torch.randn(2, in_chans, 32, 32)
    ctx = torch.arange(10).expand(1, 2, 10)  # patches 0-9 of the 4x4 grid as context
    tgt = torch.arange(10, 16).expand(1, 2, 6)  # the rest as one target block
    pred = models.predictor(models.encoder(x, ctx), ctx, tgt)
    pred.square().mean().backward()


def make_state(
    models: JEPAModels, model_args: dict[str, Any] | None = None, step: bool = True
) -> dict[str, Any]:
    """A checkpoint dict as our trainer writes it, with real AdamW moments (one step)."""
    opt = build_optimizer(models.encoder, models.predictor, lr=1e-3, weight_decay=0.04)
    if step:
        backward(models, (model_args or TINY_ARGS)["in_chans"])
        opt.step()
    return {
        "format_version": FORMAT_VERSION,
        "encoder": models.encoder.state_dict(),
        "predictor": models.predictor.state_dict(),
        "target_encoder": models.target_encoder.state_dict(),
        "opt": opt.state_dict(),
        "scaler": None,
        "epoch": 3,
        "step": 30,
        "loss": 0.25,
        "batch_size": 2,
        "world_size": 1,
        "lr": 1e-3,
        "config": {"meta": {"use_bfloat16": True}, "data": {"crop_size": 32}},
        "model_args": dict(model_args or TINY_ARGS),
    }


@pytest.fixture(scope="session")
def tiny_models() -> JEPAModels:
    """Shared by all tests: treat as read-only (copy before changing anything)."""
    return make_models()


@pytest.fixture(scope="session")
def tiny_state(tiny_models: JEPAModels) -> dict[str, Any]:
    """Shared by all tests: treat as read-only."""
    return make_state(tiny_models)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)
