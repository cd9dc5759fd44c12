"""The cost of keeping every mask patch (``mask.pad``) against subsampling to the shortest.

    python benchmarks/mask_padding.py                        # demo and small-cpu geometries
    python benchmarks/mask_padding.py --preset demo --steps 40 --threads 1
    python benchmarks/mask_padding.py --quick                # CI smoke run

For one preset's model and mask geometry, the same seeded mask draws are packed two ways: the
default (every context subsampled to the batch's shortest, random subset) and ``pad=True`` (every
context whole, padded with -1, padding masked out of attention and loss). Full training steps
(forward, backward, AdamW, EMA) of the two alternate on the same images, so machine load hits
both alike; the step time is the median over ``--steps`` pairs. Also reported: context tokens
per image (the mean real size, the subsampled length, the padded length) and the share of
context patches the default drops. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from ijepa.config import apply_overrides
from ijepa.data import train_transform_batch
from ijepa.hardware import cpu_name
from ijepa.masks import make_generator
from ijepa.models import build_models
from ijepa.recipes import PRESETS, preset
from ijepa.train.build import build_mask_generator, model_args_from_config
from ijepa.train.optim import build_optimizer
from ijepa.train.step import train_step


def measure(name: str, steps: int, warmup: int, overrides: Sequence[str]) -> dict[str, Any]:
    """Alternate padded and subsampled steps of one preset; their medians and mask sizes."""
    cfg = apply_overrides(preset(name), [*overrides, "meta.use_bfloat16=false"])
    side = cfg.data.crop_size
    chans = 1 if cfg.data.dataset.startswith("fashion-mnist") else 3
    torch.manual_seed(0)
    models = build_models(model_args_from_config(cfg, chans))
    opt = build_optimizer(models.encoder, models.predictor, lr=1e-4, weight_decay=0.04)
    gens = {
        "subsampled": build_mask_generator(apply_overrides(cfg, ["mask.pad=false"])),
        "padded": build_mask_generator(apply_overrides(cfg, ["mask.pad=true"])),
    }
    b = cfg.data.batch_size
    raw = torch.randint(0, 256, (b, chans, side + 4, side + 4), dtype=torch.uint8)
    times: dict[str, list[float]] = {k: [] for k in gens}
    sizes: dict[str, list[float]] = {"real": [], "subsampled": [], "padded": [], "dropped": []}
    for step in range(warmup + steps):
        images = train_transform_batch(
            raw, side, crop_scale=cfg.data.crop_scale, mean=(0.5,) * chans, std=(0.5,) * chans,
            generator=torch.Generator().manual_seed(step),
        )  # fmt: skip
        order = list(gens) if step % 2 == 0 else list(reversed(gens))  # alternate who goes first
        for kind in order:
            enc, pred = gens[kind](b, make_generator(0, step))  # the same draws for both kinds
            t0 = time.perf_counter()
            train_step(models, opt, images, enc, pred, lr=1e-4, wd=0.04, momentum=0.996)
            if step >= warmup:
                times[kind].append(time.perf_counter() - t0)
            stats = gens[kind].stats
            if step >= warmup and stats is not None:
                if kind == "padded":
                    sizes["real"].append(stats.context_mean)
                    sizes["padded"].append(stats.context_keep)
                else:
                    sizes["subsampled"].append(stats.context_keep)
                    sizes["dropped"].append(stats.context_dropped)
    sub, pad = statistics.median(times["subsampled"]), statistics.median(times["padded"])
    return {
        "preset": name,
        "grid": list(gens["padded"].input_size),
        "batch_size": b,
        "step_ms_subsampled": round(1000 * sub, 2),
        "step_ms_padded": round(1000 * pad, 2),
        "padded_over_subsampled": round(pad / sub, 3),
        "context_real_mean": round(statistics.fmean(sizes["real"]), 2),
        "context_len_subsampled": round(statistics.fmean(sizes["subsampled"]), 2),
        "context_len_padded": round(statistics.fmean(sizes["padded"]), 2),
        "context_dropped_by_subsampling": round(statistics.fmean(sizes["dropped"]), 4),
        "steps": steps,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the presets; print a table (stderr) and the JSON summary (last stdout line)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default: all)")
    p.add_argument("--steps", type=int, default=30, help="timed step pairs (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed step pairs (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument("--quick", action="store_true", help="CI: 2 step pairs, batch 8")
    args = p.parse_args(argv)
    if args.preset is not None and args.preset not in PRESETS:
        print(f"mask_padding.py: error: unknown --preset {args.preset!r}", file=sys.stderr)
        return 2
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        print("mask_padding.py: error: need --steps >= 1, --warmup >= 0, --threads >= 1",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.quick:
        args.steps, args.warmup = 2, 1
        args.set = [*args.set, "data.batch_size=8"]
    torch.set_num_threads(args.threads)
    rows = [
        measure(n, args.steps, args.warmup, args.set)
        for n in ([args.preset] if args.preset else PRESETS)
    ]
    print(f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}", file=sys.stderr)
    for r in rows:
        print(
            f"{r['preset']:>10} grid {r['grid']}: subsampled {r['step_ms_subsampled']} ms/step "
            f"(context {r['context_len_subsampled']} tokens, {r['context_dropped_by_subsampling']:.1%} "
            f"dropped), padded {r['step_ms_padded']} ms/step (length {r['context_len_padded']}, "
            f"{r['context_real_mean']} real): x{r['padded_over_subsampled']}",
            file=sys.stderr,
        )
    print(json.dumps({"cpu": cpu_name(), "threads": args.threads, "rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
