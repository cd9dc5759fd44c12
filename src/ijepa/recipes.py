"""Built-in presets: tested starting points for common hardware and data.

``demo``: the few-minute run of ``ijepa demo`` on the embedded data set (2 CPU cores).
``small-cpu``: the project's recommended recipe for small grey images (Fashion-MNIST) on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

from ijepa.config import Config


def _demo() -> Config:
    cfg = Config()
    cfg.data.dataset = "embedded"
    cfg.data.crop_size = 32
    cfg.data.crop_scale = (0.3, 1.0)
    cfg.data.batch_size = 128
    cfg.mask.patch_size = 4
    cfg.mask.min_keep = 4
    cfg.meta.model_name = "vit_tiny"
    cfg.meta.enc_depth = 6
    cfg.meta.pred_depth = 4
    cfg.meta.pred_emb_dim = 96
    cfg.meta.use_bfloat16 = True
    cfg.optimization.epochs = 10
    cfg.optimization.warmup = 1
    cfg.optimization.lr = 1e-3
    cfg.optimization.start_lr = 2e-4
    cfg.optimization.final_lr = 1e-5
    cfg.logging.folder = "runs/demo"
    cfg.logging.log_every = 10
    return cfg


def _small_cpu() -> Config:
    cfg = _demo()
    cfg.data.dataset = "fashion-mnist"
    cfg.data.crop_size = 28
    cfg.logging.folder = "runs/fashion-mnist"
    return cfg


PRESETS: dict[str, Callable[[], Config]] = {"demo": _demo, "small-cpu": _small_cpu}


def preset(name: str) -> Config:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
