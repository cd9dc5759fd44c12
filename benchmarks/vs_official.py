"""Our training step against the official I-JEPA code's, side by side at equal work.

    python benchmarks/vs_official.py --official /tmp/official-ijepa
    python benchmarks/vs_official.py --official DIR --workloads W-S --repeats 2 --steps 10
    python benchmarks/vs_official.py --official DIR --ours fp32,bf16,auto,auto-shared

``--official`` is a work tree of facebookresearch/ijepa (not part of this repository: its code is
CC BY-NC; e.g. ``git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/official-ijepa``). This
driver imports its ``src.helper.init_model`` (the networks, with the official init),
``src.helper.init_opt`` (AdamW with the official parameter groups and schedules),
``src.masks.multiblock.MaskCollator``, ``src.masks.utils.apply_masks`` and
``src.utils.tensors.repeat_interleave_batch``, and times the official train step as the official
loop runs it: target forward + layer norm + target gathering, context forward, predictor,
smooth-L1, backward, AdamW step, zero_grad, EMA (and the two schedule steps). "Official bf16" is
that step under ``torch.autocast(device, bfloat16)``, the one-line change a user would make (the
official loop's ``torch.cuda.amp.autocast`` does nothing on a CPU; its GradScaler is left out, as
bf16 needs none).

Equal work: one child process first draws every step's masks with the official ``MaskCollator``
(the global RNG seeded per step, as its block positions use it) and writes them to a file; every
configuration then trains on exactly those masks and the same synthetic images (``randn``, seeded
per step), with the same architecture and batch. Each configuration runs in its own fresh
subprocess (peak RSS is per process), configurations alternate within each repeat so that load
changes on a shared machine hit all alike, and figures are medians over repeats of the median
step time of ``--steps`` timed steps after ``--warmup`` untimed ones. Only the train step is
timed (no data loading, in both).

Our configurations (``--ours``): ``fp32`` and ``bf16`` (``attn_impl=auto``: kernels chosen by
measurement); ``auto``: bf16 or fp32 as ``meta.use_bfloat16: auto`` resolves it on this machine
(what the presets use); ``auto-shared``: ``auto`` with ``meta.pred_shared_context`` (one predictor
pass for all target blocks; fewer FLOPs, so not equal work: its FLOP column says by how much);
``fp32-shared``: the same in fp32 (what the presets run on a CPU without native bf16).

Output: one JSON line per child on stdout, the table on stderr. ``peak_rss_mb`` is the child's
``ru_maxrss`` read right after the timed steps (before the FLOP count); ``gflop_per_step`` counts
one fp32 eager forward+backward with ``FlopCounterMode``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

#: Workloads as in ``benchmarks/throughput.py`` (official mask settings, 3-channel images).
WORKLOADS: dict[str, dict[str, Any]] = {
    "W-28": dict(
        model_name="vit_tiny", crop=28, patch=4, batch=128, pred_dim=192, pred_depth=4, min_keep=4
    ),
    "W-small": dict(
        model_name="vit_tiny", crop=224, patch=16, batch=16, pred_dim=192, pred_depth=6, min_keep=10
    ),
    "W-S": dict(
        model_name="vit_small", crop=224, patch=16, batch=8, pred_dim=384, pred_depth=6, min_keep=10
    ),
    # --quick: seconds per configuration
    "quick": dict(
        model_name="vit_tiny", crop=28, patch=4, batch=8, pred_dim=48, pred_depth=1, min_keep=4
    ),
}
MASK_SETTINGS = dict(
    enc_mask_scale=(0.85, 1.0),
    pred_mask_scale=(0.15, 0.2),
    aspect_ratio=(0.75, 1.5),
    nenc=1,
    npred=4,
    allow_overlap=False,
)
OFFICIAL_CONFIGS = ("official-fp32", "official-bf16")
OURS = ("fp32", "bf16", "auto", "auto-shared", "fp32-shared")
LR, WD, MOMENTUM = 1e-4, 0.04, 0.996


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def images_for(step: int, batch: int, crop: int) -> torch.Tensor:
    """The synthetic images of ``step`` (the same in every child)."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(batch, 3, crop, crop, generator=g)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(
    step: Callable[[int], None], warmup: int, steps: int
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of each timed step."""
    times, cpu = [], []
    for i in range(warmup + steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(i)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return times, cpu


# --------------------------------------------------------------------------------------- masks
def child_masks(spec: dict[str, Any]) -> dict[str, Any]:
    """Draw every step's masks with the official collator and save them (stacked) to a file."""
    sys.path.insert(0, spec["official"])
    from src.masks.multiblock import MaskCollator  # type: ignore[import-not-found]

    w = WORKLOADS[spec["workload"]]
    collator = MaskCollator(
        input_size=w["crop"], patch_size=w["patch"], min_keep=w["min_keep"], **MASK_SETTINGS
    )
    enc, pred = [], []
    for step in range(spec["warmup"] + spec["steps"] + 1):  # + 1: the FLOP count's step
        torch.manual_seed(step)  # the official block positions use the global RNG
        _, masks_enc, masks_pred = collator([(torch.zeros(1),)] * w["batch"])
        enc.append(torch.stack(masks_enc))  # (nenc, B, Kc)
        pred.append(torch.stack(masks_pred))  # (M, B, Kt)
    torch.save({"enc": enc, "pred": pred}, spec["masks_file"])
    return {
        "context_tokens": statistics.median(m.shape[-1] for m in enc),
        "target_tokens": statistics.median(m.shape[-1] for m in pred),
    }


# ------------------------------------------------------------------------------------ official
def child_official(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the official train step (see the module docstring)."""
    sys.path.insert(0, spec["official"])
    from src.helper import init_model, init_opt  # type: ignore[import-not-found]
    from src.masks.utils import apply_masks  # type: ignore[import-not-found]
    from src.utils.tensors import repeat_interleave_batch  # type: ignore[import-not-found]

    w = WORKLOADS[spec["workload"]]
    device = torch.device("cpu")
    masks = torch.load(spec["masks_file"])
    torch.manual_seed(0)
    encoder, predictor = init_model(
        device=device,
        patch_size=w["patch"],
        crop_size=w["crop"],
        pred_depth=w["pred_depth"],
        pred_emb_dim=w["pred_dim"],
        model_name=w["model_name"],
    )
    target_encoder = copy.deepcopy(encoder)
    for p in target_encoder.parameters():
        p.requires_grad = False
    optimizer, _, scheduler, wd_scheduler = init_opt(
        encoder=encoder,
        predictor=predictor,
        wd=WD,
        final_wd=WD,
        start_lr=LR,
        ref_lr=LR,
        final_lr=LR,
        iterations_per_epoch=1000,
        warmup=1,
        num_epochs=10,
        ipe_scale=1.0,
        use_bfloat16=False,  # its GradScaler only: bf16 is the autocast below
    )
    bf16 = spec["config"] == "official-bf16"

    def forward(i: int, bf16: bool) -> torch.Tensor:
        imgs = images_for(i, w["batch"], w["crop"])
        masks_enc = list(masks["enc"][i])
        masks_pred = list(masks["pred"][i])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                h = target_encoder(imgs)
                h = F.layer_norm(h, (h.size(-1),))
                b = len(h)
                h = apply_masks(h, masks_pred)
                h = repeat_interleave_batch(h, b, repeat=len(masks_enc))
            z = encoder(imgs, masks_enc)
            z = predictor(z, masks_enc, masks_pred)
            return F.smooth_l1_loss(z, h)

    def step(i: int) -> None:
        scheduler.step()
        wd_scheduler.step()
        loss = forward(i, bf16)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for param_q, param_k in zip(
                encoder.parameters(), target_encoder.parameters(), strict=True
            ):
                param_k.data.mul_(MOMENTUM).add_((1.0 - MOMENTUM) * param_q.detach().data)

    times, cpu = time_steps(step, spec["warmup"], spec["steps"])
    rss = peak_rss_mb()
    n = spec["warmup"] + spec["steps"]
    with FlopCounterMode(display=False) as counter:
        forward(n, False).backward()
    return result(spec, times, cpu, rss, counter.get_total_flops(), w["batch"])


# ----------------------------------------------------------------------------------------- ours
def child_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Time our train step (``ijepa.train.step.train_step``) on the same masks and images."""
    from ijepa.models import build_models
    from ijepa.train.optim import build_optimizer
    from ijepa.train.precision import resolve_bf16
    from ijepa.train.step import forward_loss, train_step

    w = WORKLOADS[spec["workload"]]
    config = spec["config"]
    masks = torch.load(spec["masks_file"])
    torch.manual_seed(0)
    model_args = {
        "model_name": w["model_name"],
        "img_size": w["crop"],
        "patch_size": w["patch"],
        "in_chans": 3,
        "pred_depth": w["pred_depth"],
        "pred_emb_dim": w["pred_dim"],
    }
    models = build_models(
        model_args, attn_impl=spec["attn_impl"], pred_shared_context=config.endswith("-shared")
    )
    models.target_encoder.eval()
    optimizer = build_optimizer(models.encoder, models.predictor, lr=LR)
    if config in ("auto", "auto-shared"):
        choice = resolve_bf16(
            "auto",
            models,
            batch_size=w["batch"],
            masks_enc=masks["enc"][0],
            masks_pred=masks["pred"][0],
        )
        bf16 = choice.bf16
    else:
        bf16 = config == "bf16"  # fp32 and fp32-shared: no autocast

    def step(i: int) -> None:
        imgs = images_for(i, w["batch"], w["crop"])
        train_step(
            models,
            optimizer,
            imgs,
            masks["enc"][i],
            masks["pred"][i],
            lr=LR,
            wd=WD,
            momentum=MOMENTUM,
            bf16=bf16,
        )

    times, cpu = time_steps(step, spec["warmup"], spec["steps"])
    rss = peak_rss_mb()
    n = spec["warmup"] + spec["steps"]
    with FlopCounterMode(display=False) as counter:
        out = forward_loss(
            models, images_for(n, w["batch"], w["crop"]), masks["enc"][n], masks["pred"][n]
        )
        out.loss.backward()
    row = result(spec, times, cpu, rss, counter.get_total_flops(), w["batch"])
    from ijepa.models.attention_kernels import kernel_chooser

    row["bf16"] = bf16
    row["kernels"] = sorted(
        {
            f"{d.key.dtype} {'fb' if d.key.backward else 'f'} {d.kernel}"
            for d in kernel_chooser().decisions()
        }
    )
    return row


def result(
    spec: dict[str, Any],
    times: list[float],
    cpu: list[float],
    rss: float,
    flops: float,
    batch: int,
) -> dict[str, Any]:
    step_s = statistics.median(times)
    cpu_s = statistics.median(cpu)
    return {
        "workload": spec["workload"],
        "config": spec["config"],
        "repeat": spec["repeat"],
        "img_per_s": round(batch / step_s, 3),
        "step_s": round(step_s, 4),
        "cpu_s": round(cpu_s, 4),
        "img_per_cpu_s": round(batch / cpu_s, 3),
        "peak_rss_mb": round(rss, 1),
        "gflop_per_step": round(flops / 1e9, 2),
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------- parent
def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec['config']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(spec["threads"])
    if spec["config"] == "masks":
        return child_masks(spec)
    if spec["config"] in OFFICIAL_CONFIGS:
        return child_official(spec)
    return child_ours(spec)


def summarise(rows: list[dict[str, Any]], workloads: list[str], configs: list[str]) -> None:
    """Medians over repeats per (workload, config), with ratios to the official step.

    Two speeds: images per wall second (what a user sees) and images per process-CPU second
    (less sensitive to other jobs on a shared machine). The RSS ratio compares with the
    official step in the same dtype.
    """
    from ijepa.hardware import cpu_name

    log(
        f"\n{cpu_name()} | torch {torch.__version__} | {rows[0]['threads']} threads | medians of "
        f"{max(r['repeat'] for r in rows) + 1} alternating repeats"
    )
    log(
        "| workload | config | img/s | x official fp32 | x official bf16 | img/CPU-s "
        "| x official fp32 | x official bf16 | peak RSS MB | x official | GFLOP/step | bf16 |"
    )
    log("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for wl in workloads:
        med: dict[str, dict[str, float]] = {}
        for config in configs:
            mine = [r for r in rows if r["workload"] == wl and r["config"] == config]
            med[config] = {
                "ips": statistics.median(r["img_per_s"] for r in mine),
                "cps": statistics.median(r["img_per_cpu_s"] for r in mine),
                "rss": statistics.median(r["peak_rss_mb"] for r in mine),
                "gflop": mine[0]["gflop_per_step"],
                "bf16": float(mine[0].get("bf16", config == "official-bf16")),
            }
        o32, o16 = med["official-fp32"], med["official-bf16"]
        for config in configs:
            m = med[config]
            rss_ref = (o16 if m["bf16"] else o32)["rss"]
            log(
                f"| {wl} | {config} | {m['ips']:.2f} | {m['ips'] / o32['ips']:.2f} | "
                f"{m['ips'] / o16['ips']:.2f} | {m['cps']:.2f} | {m['cps'] / o32['cps']:.2f} | "
                f"{m['cps'] / o16['cps']:.2f} | {m['rss']:.0f} | {m['rss'] / rss_ref:.2f} | "
                f"{m['gflop']:.1f} | {'yes' if m['bf16'] else 'no'} |"
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--official", help="a work tree of facebookresearch/ijepa")
    p.add_argument("--workloads", default="W-S,W-small,W-28")
    p.add_argument("--ours", default="fp32,bf16,auto", help=f"comma list of {', '.join(OURS)}")
    p.add_argument("--attn-impl", default="auto", choices=("auto", "sdpa", "plain"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny workload, 2 steps, 1 repeat")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        return
    if not args.official or not (Path(args.official) / "src" / "helper.py").is_file():
        raise SystemExit("--official must name a facebookresearch/ijepa work tree (src/helper.py)")
    if args.quick:
        args.workloads, args.steps, args.warmup, args.repeats = "quick", 2, 1, 1
    workloads = args.workloads.split(",")
    ours = args.ours.split(",")
    for name in workloads:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    for name in ours:
        if name not in OURS:
            raise SystemExit(f"unknown --ours {name!r}; choose from {', '.join(OURS)}")
    # official fp32, ours fp32, official bf16, ours bf16, the rest: alternating within a repeat
    fp32 = [c for c in ours if c.startswith("fp32")]
    configs = ["official-fp32", *fp32, "official-bf16"] + [c for c in ours if c not in fp32]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = {
            "official": str(Path(args.official).resolve()),
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": args.threads,
            "attn_impl": args.attn_impl,
        }
        for wl in workloads:
            spec = {
                **base,
                "workload": wl,
                "config": "masks",
                "repeat": 0,
                "masks_file": f"{tmp}/{wl}.pt",
            }
            sizes = spawn(spec)
            log(
                f"{wl}: official masks, median {sizes['context_tokens']} context and "
                f"{sizes['target_tokens']} target tokens"
            )
        for repeat in range(args.repeats):
            for wl in workloads:
                for config in configs:
                    spec = {
                        **base,
                        "workload": wl,
                        "config": config,
                        "repeat": repeat,
                        "masks_file": f"{tmp}/{wl}.pt",
                    }
                    row = spawn(spec)
                    print(json.dumps(row), flush=True)
                    log(
                        f"  {wl} {config} repeat {repeat}: {row['img_per_s']} img/s, "
                        f"{row['peak_rss_mb']:.0f} MB"
                    )
                    rows.append(row)
    summarise(rows, workloads, configs)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
