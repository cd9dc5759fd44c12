"""Built-in presets: tested starting points for common hardware and data.

``demo``: the few-minute run of ``ijepa demo`` on the embedded data set (2 CPU cores).
``small-cpu``: the project's recommended recipe for small grey images (Fashion-MNIST) on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

from ijepa.config import Config
from ijepa.hardware import native_bf16


def _demo() -> Config:
    cfg = Config()
    cfg.data.dataset = "embedded"
    cfg.data.crop_size = 32
    cfg.data.crop_scale = (0.3, 1.0)
    cfg.data.batch_size = 64
    cfg.mask.patch_size = 4
    cfg.mask.min_keep = 4
    # a narrow ViT (width 96, 4 blocks, 3 heads) so that ~600 steps fit in a few CPU minutes
    cfg.meta.model_name = "vit_tiny"
    cfg.meta.enc_depth = 4
    cfg.meta.enc_emb_dim = 96
    cfg.meta.enc_num_heads = 3
    cfg.meta.pred_depth = 2
    cfg.meta.pred_emb_dim = 48
    # bf16 autocast only where the CPU multiplies bf16 natively (AMX / AVX512-BF16). Without it
    # bf16 is a loss: on the 2-core AVX2 dev CPU (AMD EPYC, 1 thread, busy machine) a 2-block
    # ViT-tiny/4 step (28 px, batch 32) took 1.07 s CPU in bf16 vs 0.15 s in fp32 (4.5x slower
    # by wall clock), with
    # `python benchmarks/throughput.py --workload quick --set data.batch_size=32
    #  --dtypes fp32,bf16 --compiled off --steps 3 --threads 1`.
    cfg.meta.use_bfloat16 = native_bf16("cpu")
    cfg.optimization.epochs = 4
    cfg.optimization.warmup = 0.3
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
