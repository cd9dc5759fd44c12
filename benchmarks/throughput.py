"""Training and feature-extraction throughput of I-JEPA, with FLOPs, MFU and peak memory.

For each workload and each (dtype, compiled) configuration, a fresh subprocess builds the three
networks, trains on synthetic images (batched RandomResizedCrop + mask sampling every step, as the
training loop does) and prints one JSON line; the parent prints the lines in order and, on stderr,
the maintainers' anchors (official code, measured on *their* Intel AMX machine) beside ours.

    python benchmarks/throughput.py                       # W-28, W-small, W-S; fp32 (+ bf16 where
                                                          # native); eager and compiled
    python benchmarks/throughput.py --workload W-28 --dtypes fp32,bf16 --compiled off --steps 10
    python benchmarks/throughput.py --config my.yaml --set data.batch_size=32
    python benchmarks/throughput.py --masks official      # official sampler sizes (equal work)
    python benchmarks/throughput.py --profile --workload W-28   # per-phase breakdown
    python benchmarks/throughput.py --trace --workload W-28     # torch.profiler op table
    python benchmarks/throughput.py --bf16-curve --steps 200    # bf16 vs fp32 loss curves
    python benchmarks/throughput.py --quick                     # CI smoke run

JSON fields: ``img_per_s`` and ``step_s`` (median of the timed steps; a step is data + masks +
forward + backward + AdamW + EMA), ``data_s`` (median augmentation + mask time), ``compile_s``
(wall time of the warm-up steps, which includes compilation when compiled), ``compiled_graphs``
(graphs torch.compile built: one more per recompilation), ``slow_steps`` (timed steps over 3x
the median: recompilations after the warm-up), ``every_step_s``, ``peak_rss_mb``
(the subprocess's maximum resident set after the timed steps, before the FLOP count;
``peak_rss_with_count_mb``: after the fp32 FLOP count and the extraction too, the figure this
field used to report),
``peak_cuda_mb`` (``torch.cuda.max_memory_allocated`` of the steps, CUDA only),
``gflop_per_step`` (FlopCounterMode over one fp32 eager forward+backward), ``mfu_fp32`` /
``mfu_bf16`` (achieved model FLOP/s over the matrix-product peaks measured by the parent at
start-up), ``extract_img_per_s`` (target-encoder forward on full images under
``torch.inference_mode``), ``context_tokens`` / ``target_tokens`` (median mask sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ijepa.config import Config, apply_overrides, load_config
from ijepa.data import train_transform_batch
from ijepa.hardware import cpu_name, matmul_peak, native_bf16
from ijepa.masks import MultiBlockMaskGenerator, make_generator
from ijepa.models import JEPAModels, build_models
from ijepa.train.build import build_mask_generator, model_args_from_config
from ijepa.train.optim import build_optimizer
from ijepa.train.precision import warm_up_kernels
from ijepa.train.step import (
    autocast_context,
    compute_targets,
    ema_update,
    jepa_loss,
    train_step,
)

_COMMON = ["meta.pred_emb_dim=192", "mask.patch_size=16", "data.crop_size=224"]
WORKLOADS: dict[str, list[str]] = {
    # min_keep 4: with the official 10 the official sampler never ends on a 7x7 grid (issue #68)
    "W-28": [
        "meta.model_name=vit_tiny",
        "data.crop_size=28",
        "mask.patch_size=4",
        "data.batch_size=128",
        "meta.pred_emb_dim=192",
        "meta.pred_depth=4",
        "mask.min_keep=4",
    ],
    "W-small": [*_COMMON, "meta.model_name=vit_tiny", "data.batch_size=16", "meta.pred_depth=6"],
    "W-S": [
        *_COMMON,
        "meta.model_name=vit_small",
        "data.batch_size=8",
        "meta.pred_emb_dim=384",
        "meta.pred_depth=6",
    ],
    # --quick: a tiny network, seconds per configuration
    "quick": [
        "meta.model_name=vit_tiny",
        "meta.enc_depth=2",
        "data.crop_size=28",
        "mask.patch_size=4",
        "data.batch_size=8",
        "meta.pred_emb_dim=48",
        "meta.pred_depth=1",
        "mask.min_keep=4",
    ],
}
MAIN_WORKLOADS = ("W-28", "W-small", "W-S")

# Measured by the maintainers with the official code (torch 2.13, CPU, 2 threads, synthetic
# images, official MaskCollator) on an Intel CPU with AMX -- not on the machine running this.
ANCHORS: dict[str, dict[str, float]] = {
    "W-28": {"fp32": 125.8, "bf16": 242.6, "rss": 1443, "gflop": 186},
    "W-small": {"fp32": 15.4, "bf16": 27.7, "rss": 1486, "gflop": 178},
    "W-S": {"fp32": 4.7, "bf16": 9.8, "rss": 1984, "gflop": 355},
}


def log(msg: str) -> None:
    """Human-readable output goes to stderr, so stdout stays one JSON object per line."""
    print(msg, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Bench:
    """Everything one configuration needs: networks, optimizer, data and masks."""

    cfg: Config
    device: torch.device
    models: JEPAModels
    step_models: JEPAModels
    optimizer: torch.optim.Optimizer
    pool: torch.Tensor  # uint8 (P, C, S', S') source images
    masks: MultiBlockMaskGenerator
    bf16: bool

    @property
    def batch(self) -> int:
        return self.cfg.data.batch_size

    def data(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented images (B, C, S, S) and masks (nenc, B, Kc), (M, B, Kt) of ``step``."""
        g = torch.Generator().manual_seed(step)
        idx = torch.randint(len(self.pool), (self.batch,), generator=g)
        images = train_transform_batch(
            self.pool[idx],
            self.cfg.data.crop_size,
            crop_scale=self.cfg.data.crop_scale,
            mean=(0.5,) * self.pool.shape[1],
            std=(0.25,) * self.pool.shape[1],
            generator=g,
        )
        me, mp = self.masks(self.batch, make_generator(0, step, 0))
        return images.to(self.device), me.to(self.device), mp.to(self.device)

    def step(self, images: torch.Tensor, me: torch.Tensor, mp: torch.Tensor) -> None:
        train_step(
            self.step_models,
            self.optimizer,
            images,
            me,
            mp,
            lr=1e-4,
            wd=0.04,
            momentum=0.996,
            loss_kind=self.cfg.optimization.loss,
            bf16=self.bf16,
        )


def workload_config(name: str | None, config: str | None, overrides: list[str]) -> Config:
    """A built-in workload (by name) or a YAML config, with ``section.key=value`` overrides."""
    if config is not None:
        cfg = load_config(config)
    else:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}")
        cfg = apply_overrides(Config(), WORKLOADS[name])
    return apply_overrides(cfg, overrides)


def build_bench(spec: dict[str, Any]) -> Bench:
    """Networks, AdamW, a pool of synthetic uint8 images and the mask sampler of one config."""
    cfg = workload_config(spec["workload"], spec.get("config"), spec.get("overrides", []))
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    in_chans = 3
    models = build_models(
        model_args_from_config(cfg, in_chans),
        attn_impl=cfg.meta.attn_impl,
        pred_shared_context=cfg.meta.pred_shared_context,
    )
    for module in (models.encoder, models.predictor, models.target_encoder):
        module.to(device)
    models.target_encoder.eval()
    fused = {"auto": None, "fused": True, "foreach": False}[spec.get("adamw", "auto")]
    optimizer = build_optimizer(models.encoder, models.predictor, lr=1e-4, fused=fused)
    masks = build_mask_generator(cfg, mode=spec.get("masks", "default"))
    step_models = models
    if spec["compiled"]:
        if cfg.meta.attn_impl == "auto":  # as training does: kernels measured eagerly first
            me, mp = masks(cfg.data.batch_size, make_generator(0, 0, 0))
            side = cfg.data.crop_size
            warm_up_kernels(
                models,
                images_shape=(cfg.data.batch_size, in_chans, side, side),
                masks_enc=me,
                masks_pred=mp,
                bf16=spec["dtype"] == "bf16",
            )
        step_models = JEPAModels(
            encoder=torch.compile(models.encoder),  # type: ignore[arg-type]
            predictor=torch.compile(models.predictor),  # type: ignore[arg-type]
            target_encoder=torch.compile(models.target_encoder),  # type: ignore[arg-type]
        )
    side = cfg.data.crop_size if cfg.data.crop_size <= 64 else cfg.data.crop_size * 8 // 7
    pool = torch.randint(0, 256, (max(64, cfg.data.batch_size), in_chans, side, side)).to(
        torch.uint8
    )
    return Bench(cfg, device, models, step_models, optimizer, pool, masks, spec["dtype"] == "bf16")


def count_gflop(bench: Bench, step: int = 0) -> float:
    """Model GFLOP of one fp32 eager forward + backward (matrix products, convolutions, SDPA)."""
    images, me, mp = bench.data(step)
    m = bench.models
    with FlopCounterMode(display=False) as counter:
        targets = compute_targets(m.target_encoder, images, mp, nenc=me.shape[0])[0]
        z = m.predictor(m.encoder(images, me), me, mp)
        jepa_loss(z, targets).backward()
    bench.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def extraction_rate(bench: Bench, repeats: int) -> float:
    """Images per second of the target encoder's forward on full images (inference mode)."""
    images, _, _ = bench.data(0)
    encoder = bench.step_models.target_encoder
    times = []
    with torch.inference_mode(), autocast_context(bench.device.type, bench.bf16):
        for i in range(repeats + 1):
            sync(bench.device)
            t0 = time.perf_counter()
            encoder(images)
            sync(bench.device)
            if i:  # the first call warms up (and compiles)
                times.append(time.perf_counter() - t0)
    return images.shape[0] / statistics.median(times)


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (workload, dtype, compiled) configuration in this process."""
    torch.set_num_threads(spec["threads"])
    bench = build_bench(spec)
    step_times, cpu_times, data_times, kc, kt = [], [], [], [], []
    every_step: list[float] = []
    t_start = time.perf_counter()
    warmup, steps = spec["warmup"], spec["steps"]
    compile_s = 0.0
    for step in range(warmup + steps):
        sync(bench.device)
        t0, c0 = time.perf_counter(), time.process_time()
        images, me, mp = bench.data(step)
        sync(bench.device)
        t1 = time.perf_counter()
        bench.step(images, me, mp)
        sync(bench.device)
        t2 = time.perf_counter()
        every_step.append(t2 - t0)
        if step == warmup - 1:
            compile_s = t2 - t_start
        if step >= warmup:
            step_times.append(t2 - t0)
            cpu_times.append(time.process_time() - c0)
            data_times.append(t1 - t0)
            kc.append(me.shape[-1])
            kt.append(mp.shape[-1])
    step_s = statistics.median(step_times)
    # graphs compiled so far (torch._dynamo's own counter: a recompilation adds one)
    graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"]) if spec["compiled"] else 0
    # peak memory of the training steps, read before the fp32 FLOP count and the extraction runs
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda_mb = (
        torch.cuda.max_memory_allocated(bench.device) / 2**20
        if bench.device.type == "cuda"
        else None
    )
    gflop = count_gflop(bench)
    extract = extraction_rate(bench, spec["extract_repeats"])
    achieved = gflop * 1e9 / step_s
    rss_all_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "workload": spec["workload"] or Path(spec["config"]).stem,
        "dtype": spec["dtype"],
        "compiled": spec["compiled"],
        "img_per_s": round(bench.batch / step_s, 3),
        "step_s": round(step_s, 4),
        "cpu_s": round(statistics.median(cpu_times), 4),
        "data_s": round(statistics.median(data_times), 4),
        "compile_s": round(compile_s, 2),
        "compiled_graphs": graphs,
        "slow_steps": sum(t > 3 * step_s for t in step_times),
        "every_step_s": [round(t, 3) for t in every_step],
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "peak_rss_with_count_mb": round(rss_all_kb / 1024, 1),
        "peak_cuda_mb": None if cuda_mb is None else round(cuda_mb, 1),
        "gflop_per_step": round(gflop, 2),
        "mfu_fp32": round(achieved / spec["peak_fp32"], 4),
        "mfu_bf16": round(achieved / spec["peak_bf16"], 4),
        "extract_img_per_s": round(extract, 2),
        "context_tokens": statistics.median(kc),
        "target_tokens": statistics.median(kt),
        "batch": bench.batch,
        "steps": steps,
        "warmup": warmup,
        "masks": spec.get("masks", "default"),
        "adamw": spec.get("adamw", "auto"),
        "threads": torch.get_num_threads(),
        "device": bench.device.type,
        "cpu": cpu_name(),
        "native_bf16": native_bf16(bench.device),
        "torch": torch.__version__,
        "peak_fp32_gflops": round(spec["peak_fp32"] / 1e9, 1),
        "peak_bf16_gflops": round(spec["peak_bf16"] / 1e9, 2),
    }


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter (so peak RSS figures do not mix)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_peaks(device: torch.device) -> tuple[float, float, int]:
    """fp32 and bf16 matrix-product peaks (FLOP/s); the bf16 size is small where not native."""
    fp32 = matmul_peak(torch.float32, n=2048, seconds=3.0, device=device)
    n_bf16 = 2048 if native_bf16(device) else 512
    bf16 = matmul_peak(torch.bfloat16, n=n_bf16, seconds=2.0, device=device)
    return fp32, bf16, n_bf16


def print_anchors(rows: list[dict[str, Any]]) -> None:
    """Our figures beside the official anchors (measured on the maintainers' AMX machine)."""
    log(
        "\nAnchors: official I-JEPA code measured by the maintainers on THEIR Intel AMX machine "
        "(torch 2.13, 2 threads), not on this one; ratios = ours / anchor."
    )
    log(
        f"{'workload':8} {'dtype':5} {'comp':5} {'img/s':>8} {'anch fp32':>9} {'x':>5} "
        f"{'anch bf16':>9} {'x':>5} {'RSS MB':>7} {'anch':>5} {'GFLOP':>7} {'anch':>5}"
    )
    for r in rows:
        a = ANCHORS.get(r["workload"])
        if a is None:
            continue
        ips = r["img_per_s"]
        log(
            f"{r['workload']:8} {r['dtype']:5} {r['compiled']!s:5} {ips:8.2f} "
            f"{a['fp32']:9.1f} {ips / a['fp32']:5.2f} {a['bf16']:9.1f} {ips / a['bf16']:5.2f} "
            f"{r['peak_rss_mb']:7.0f} {a['rss']:5.0f} {r['gflop_per_step']:7.1f} {a['gflop']:5.0f}"
        )


# ---------------------------------------------------------------------------------------------
# --profile: where the time goes, phase by phase


def profile_phases(bench: Bench, warmup: int, steps: int) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds per phase of a training step, each timed on its own.

    Process CPU time is reported too because on a shared, busy machine wall time mostly measures
    the share of the cores this process got.
    """
    m, opt, dev = bench.step_models, bench.optimizer, bench.device
    times: dict[str, list[tuple[float, float]]] = {}
    clock = [0.0, 0.0]

    def stamp(name: str) -> None:
        sync(dev)
        now = (time.perf_counter(), time.process_time())
        times.setdefault(name, []).append((now[0] - clock[0], now[1] - clock[1]))
        clock[:] = now

    for step in range(warmup + steps):
        if step == warmup:
            times.clear()
        clock[:] = (time.perf_counter(), time.process_time())
        images, me, mp = bench.data(step)
        stamp("data (augment + masks)")
        with autocast_context(dev.type, bench.bf16):
            targets = compute_targets(m.target_encoder, images, mp, nenc=me.shape[0])[0]
            stamp("target forward")
            z = m.encoder(images, me)
            stamp("context forward")
            z = m.predictor(z, me, mp)
        loss = jepa_loss(z, targets)
        stamp("predictor forward + loss")
        loss.backward()
        stamp("backward")
        opt.step()
        opt.zero_grad(set_to_none=True)
        stamp("optimizer (AdamW)")
        ema_update(m.target_encoder, m.encoder, 0.996)
        stamp("EMA")
    return {
        name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for name, v in times.items()
    }


def run_profile(spec: dict[str, Any]) -> None:
    torch.set_num_threads(spec["threads"])
    bench = build_bench(spec)
    phases = profile_phases(bench, spec["warmup"], spec["steps"])
    wall = sum(w for w, _ in phases.values())
    cpu = sum(c for _, c in phases.values())
    log(
        f"\n{spec['workload']} {spec['dtype']} compiled={spec['compiled']} "
        f"threads={spec['threads']}: per-phase medians of {spec['steps']} steps"
    )
    log(f"  {'phase':26} {'wall ms':>9} {'%':>6} {'CPU ms':>9} {'%':>6}")
    for name, (w, c) in phases.items():
        log(f"  {name:26} {w * 1e3:9.1f} {100 * w / wall:6.1f} {c * 1e3:9.1f} {100 * c / cpu:6.1f}")
    log(f"  {'sum':26} {wall * 1e3:9.1f} {'':6} {cpu * 1e3:9.1f}  ({bench.batch / wall:.2f} img/s)")
    row = {
        "workload": spec["workload"],
        "dtype": spec["dtype"],
        "compiled": spec["compiled"],
        "threads": spec["threads"],
        "phases_wall_s": {k: round(w, 4) for k, (w, _) in phases.items()},
        "phases_cpu_s": {k: round(c, 4) for k, (_, c) in phases.items()},
    }
    print(json.dumps(row))


def run_trace(spec: dict[str, Any], rows: int = 30) -> None:
    """torch.profiler over a few steps: the operators that take the most self time."""
    torch.set_num_threads(spec["threads"])
    bench = build_bench(spec)
    for step in range(spec["warmup"]):
        bench.step(*bench.data(step))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for step in range(spec["steps"]):
            bench.step(*bench.data(spec["warmup"] + step))
    log(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# ---------------------------------------------------------------------------------------------
# --bf16-curve: does bf16 autocast change the loss curve?


def bf16_curve(steps: int, threads: int) -> dict[str, Any]:
    """Train a small W-28-like model for ``steps`` steps in fp32 and in bf16 from the same seed.

    Real data (the embedded set, 28 px crops) through :func:`ijepa.train.loop.train`. The model is
    small (width 96, depth 4, batch 32) because bf16 has no fast kernels on CPUs without AMX.
    Returns the max relative deviation of the bf16 loss curve from fp32's, after smoothing both
    with a centred moving average of 9 steps.
    """
    from ijepa.train.loop import train

    torch.set_num_threads(threads)
    curves: dict[str, list[float]] = {}
    for dtype in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = apply_overrides(
                Config(),
                [
                    "data.dataset=embedded",
                    "data.crop_size=28",
                    "data.batch_size=32",
                    "data.max_images=2048",
                    "mask.patch_size=4",
                    "mask.min_keep=4",
                    "meta.model_name=vit_tiny",
                    "meta.enc_emb_dim=96",
                    "meta.enc_depth=4",
                    "meta.pred_emb_dim=48",
                    "meta.pred_depth=2",
                    "meta.device=cpu",
                    f"meta.use_bfloat16={dtype == 'bf16'}",
                    "optimization.epochs=100",
                    "optimization.warmup=1",
                    f"optimization.max_steps={steps}",
                    "logging.log_every=1",
                    "logging.checkpoint_every=100000",
                    "logging.progress=false",
                    f"logging.folder={tmp}/run",
                ],
            )
            t0 = time.perf_counter()
            result = train(cfg)
            log(f"bf16-curve: {dtype} {steps} steps in {time.perf_counter() - t0:.1f} s")
            curves[dtype] = [rec["loss"] for rec in result.history]

    def smooth(v: list[float], w: int = 9) -> list[float]:
        h = w // 2
        return [statistics.fmean(v[max(0, i - h) : i + h + 1]) for i in range(len(v))]

    a, b = smooth(curves["fp32"]), smooth(curves["bf16"])
    dev = [abs(y - x) / abs(x) for x, y in zip(a, b, strict=True)]
    worst = max(range(len(dev)), key=dev.__getitem__)
    return {
        "mode": "bf16-curve",
        "steps": steps,
        "max_rel_dev_smoothed": round(dev[worst], 5),
        "at_step": worst + 1,
        "mean_rel_dev_smoothed": round(statistics.fmean(dev), 5),
        "final_loss_fp32": round(curves["fp32"][-1], 5),
        "final_loss_bf16": round(curves["bf16"][-1], 5),
        "first_loss_fp32": round(curves["fp32"][0], 5),
        "first_loss_bf16": round(curves["bf16"][0], 5),
        "finite": all(math.isfinite(x) for x in curves["fp32"] + curves["bf16"]),
        "cpu": cpu_name(),
        "native_bf16": native_bf16("cpu"),
    }


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workload", default=None, help=f"one of {', '.join(WORKLOADS)}")
    p.add_argument("--config", default=None, help="a YAML config to benchmark instead")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    p.add_argument("--dtypes", default="auto", help="fp32,bf16 or auto (bf16 only if native)")
    p.add_argument("--compiled", default="off,on", help="off, on or off,on")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2, 4 compiled)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--masks", choices=("default", "official"), default="default")
    p.add_argument("--adamw", choices=("auto", "fused", "foreach"), default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--extract-repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="CI: tiny workload, 2 steps, no compile")
    p.add_argument("--profile", action="store_true", help="per-phase time breakdown")
    p.add_argument("--trace", action="store_true", help="torch.profiler table of hot operators")
    p.add_argument("--bf16-curve", action="store_true", help="bf16 vs fp32 loss over --steps")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("steps", "extract_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    if args.bf16_curve:
        print(json.dumps(bf16_curve(args.steps, args.threads)))
        return
    if args.quick:
        args.workload, args.compiled, args.steps = "quick", "off", 2
        args.warmup, args.extract_repeats = 1, 1
    device = torch.device(args.device)
    if args.config is not None:
        names: list[str | None] = [None]
    elif args.workload is not None:
        names = [args.workload]
    else:
        names = list(MAIN_WORKLOADS)
    dtypes = (
        (["fp32", "bf16"] if native_bf16(device) else ["fp32"])
        if args.dtypes == "auto"
        else args.dtypes.split(",")
    )
    compiled = [c == "on" for c in args.compiled.split(",")]
    base = {
        "config": args.config,
        "overrides": args.overrides,
        "threads": args.threads,
        "masks": args.masks,
        "adamw": args.adamw,
        "device": str(device),
        "steps": args.steps,
        "extract_repeats": args.extract_repeats,
    }

    def spec_for(name: str | None, dtype: str, comp: bool) -> dict[str, Any]:
        warmup = args.warmup if args.warmup is not None else (4 if comp else 2)
        return {**base, "workload": name, "dtype": dtype, "compiled": comp, "warmup": warmup}

    if args.profile or args.trace:
        fn: Callable[[dict[str, Any]], None] = run_profile if args.profile else run_trace
        for name in names:
            for dtype in dtypes:
                fn(spec_for(name, dtype, compiled[0]))
        return
    if args.quick:
        fp32_peak = bf16_peak = 1e12  # CI smoke run: MFU figures are not meaningful
        n_bf16 = 0
    else:
        fp32_peak, bf16_peak, n_bf16 = measure_peaks(device)
    log(
        f"{cpu_name()} | torch {torch.__version__} | {args.threads} threads | "
        f"{platform.python_version()} | peaks: fp32 {fp32_peak / 1e9:.1f} GFLOP/s (2048^3), "
        f"bf16 {bf16_peak / 1e9:.2f} GFLOP/s ({n_bf16}^3) | native bf16: {native_bf16(device)}"
    )
    rows = []
    for name in names:
        for dtype in dtypes:
            for comp in compiled:
                spec = spec_for(name, dtype, comp)
                spec.update(peak_fp32=fp32_peak, peak_bf16=bf16_peak)
                row = spawn(spec)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print_anchors(rows)


if __name__ == "__main__":
    main()
