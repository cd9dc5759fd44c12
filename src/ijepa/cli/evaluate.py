"""``ijepa embed`` and ``ijepa eval {linear,knn,lowshot,attentive}``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ijepa.errors import UsageError

logger = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint: ours, official, HF or timm")
    p.add_argument(
        "--data",
        required=True,
        help="data spec: embedded, fashion-mnist[:DIR], imagefolder:DIR, hf:PATH",
    )
    p.add_argument(
        "--encoder",
        choices=("target", "context"),
        default="target",
        help="which encoder of a training checkpoint (default: target, as the paper evaluates)",
    )
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``embed`` and ``eval`` subcommands."""
    e = sub.add_parser(
        "embed",
        help="extract frozen features and labels to .npy or .safetensors",
        description="Extract frozen features of a data set with a trained encoder.",
    )
    _common(e)
    e.add_argument(
        "--out", required=True, help="FILE.npy (labels go to FILE.labels.npy) or FILE.safetensors"
    )
    e.add_argument("--split", default="train", choices=("train", "test"))
    e.add_argument(
        "--pooling",
        default="avg",
        choices=("avg", "avg4", "grid", "flat", "tokens"),
        help="avg: mean of last-layer patch tokens; avg4: concat of last-4-layer means; tokens: all",
    )
    e.set_defaults(func=run_embed)

    ev = sub.add_parser(
        "eval",
        help="evaluate frozen features: linear, knn, lowshot, attentive",
        description="Evaluate a frozen encoder on a labelled data set's train/test splits.",
    )
    ps = ev.add_subparsers(dest="protocol", metavar="PROTOCOL")
    ps.required = True
    specs = {
        "linear": "a grid of linear heads (LRs x poolings x last-1/last-4 layers)",
        "knn": "cosine kNN with DINO temperature-weighted voting",
        "lowshot": "linear probe on 1 %% of the labels or N images per class",
        "attentive": "cross-attention pooling head on frozen patch tokens",
    }
    for name, helptext in specs.items():
        p = ps.add_parser(name, help=helptext, description=helptext)
        _common(p)
        p.add_argument("--out", default=None, help="results JSON (default: print only)")
        p.add_argument(
            "--cache-dir", default=None, help="feature cache folder (keyed, never stale)"
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--baselines",
            default="",
            help="comma-separated baselines run under the same protocol beside the encoder: "
            "raw (the pixels after the same eval transform; patches as tokens for attentive), "
            "random (a fresh init of the same architecture, seed --seed + 1)",
        )
        if name == "knn":
            p.add_argument("--k", type=int, default=20)
            p.add_argument("--temperature", type=float, default=0.07)
        if name in ("linear", "lowshot"):
            p.add_argument("--epochs", type=int, default=None)
            p.add_argument("--lrs", type=float, nargs="+", default=None)
        if name == "lowshot":
            g = p.add_mutually_exclusive_group()
            g.add_argument("--fraction", type=float, default=None, help="e.g. 0.01 for 1 %%")
            g.add_argument("--shots", type=int, default=None, help="N labelled images per class")
            p.add_argument("--draws", type=int, default=5)
        if name == "attentive":
            p.add_argument("--epochs", type=int, default=20)
            p.add_argument("--lr", type=float, default=1e-3)
        p.set_defaults(func=run_eval)


def _load(args: argparse.Namespace) -> tuple[Any, Any, int]:
    from ijepa.compat import read_encoder
    from ijepa.dist import resolve_device
    from ijepa.eval.images import encoder_input_size

    device = resolve_device(args.device)
    encoder, meta = read_encoder(args.checkpoint, which=args.encoder, device=str(device))
    logger.info("evaluating the %s encoder of %s", meta.which or "(only)", args.checkpoint)
    size = args.img_size or encoder_input_size(encoder)
    if args.img_size and args.img_size != encoder_input_size(encoder):
        encoder.resize_pos_embed(args.img_size)
    return encoder, meta, size


def _stats(meta: Any) -> dict[str, Any]:
    if meta.mean is not None and meta.std is not None:
        return {"mean": meta.mean, "std": meta.std}
    return {}


def run_embed(args: argparse.Namespace) -> int:
    """Handler of ``ijepa embed``."""
    import numpy as np
    from safetensors.torch import save_file

    from ijepa.data import load_imageset
    from ijepa.eval.images import features_of

    encoder, meta, size = _load(args)
    data = load_imageset(args.data, args.split)
    feats = features_of(
        encoder,
        data,
        poolings=(args.pooling,),
        img_size=size,
        batch_size=args.batch_size,
        bf16=args.bf16,
        device=next(encoder.parameters()).device,
        progress=not args.no_progress,
        **_stats(meta),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x, y = feats[args.pooling].float().contiguous(), feats["labels"].contiguous()
    if out.suffix == ".safetensors":
        info = {"checkpoint": str(args.checkpoint), "encoder": str(meta.which), "data": args.data}
        save_file({"features": x, "labels": y}, str(out), metadata=info)
    elif out.suffix == ".npy":
        np.save(out, x.numpy())
        np.save(out.with_suffix(".labels.npy"), y.numpy())
    else:
        raise UsageError(f"--out must end in .npy or .safetensors, got {out}")
    print(f"wrote {tuple(x.shape)} features of {len(data)} images to {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``ijepa eval PROTOCOL``."""
    from ijepa.data import load_imageset
    from ijepa.eval.images import feature_cache, features_of, poolings_for, run_protocol

    baselines = _baselines(args.baselines)
    encoder, meta, size = _load(args)
    poolings = poolings_for(args.protocol, depth=len(getattr(encoder, "blocks", [])) or None)
    device = next(encoder.parameters()).device
    feats = {}
    sets = {split: load_imageset(args.data, split) for split in ("train", "test")}
    for split, data in sets.items():
        cache = feature_cache(
            args.cache_dir,
            checkpoint=args.checkpoint,
            which=args.encoder,
            data_spec=args.data,
            split=split,
            poolings=poolings,
            img_size=size,
        )
        feats[split] = features_of(
            encoder,
            data,
            poolings=poolings,
            img_size=size,
            batch_size=args.batch_size,
            bf16=args.bf16,
            device=device,
            cache=cache,
            progress=not args.no_progress,
            **_stats(meta),
        )
    options: dict[str, Any] = {"seed": args.seed}
    if args.protocol == "knn":
        options = {"k": args.k, "temperature": args.temperature}
    if args.protocol in ("linear", "lowshot"):
        if args.epochs is not None:
            options["epochs"] = args.epochs
        if args.lrs is not None:
            options["lrs"] = tuple(args.lrs)
    if args.protocol == "lowshot":
        if args.shots is not None:
            options["shots"] = args.shots
        else:
            options["fraction"] = args.fraction if args.fraction is not None else 0.01
        options["draws"] = args.draws
    if args.protocol == "attentive":
        options.update(epochs=args.epochs, lr=args.lr)
    result = run_protocol(args.protocol, feats["train"], feats["test"], **options)
    record = {
        "protocol": args.protocol,
        "checkpoint": str(args.checkpoint),
        "encoder": meta.which or args.encoder,
        "data": args.data,
        "img_size": size,
        "results": result,
    }
    if baselines:
        record["baselines"] = {
            kind: run_protocol(
                args.protocol,
                *_baseline_features(kind, args, encoder, meta, sets, size, poolings),
                **options,
            )
            for kind in baselines
        }
        _print_comparison(args.protocol, result, record["baselines"])
    text = json.dumps(record, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


#: Baselines ``ijepa eval --baselines`` knows.
BASELINES = ("raw", "random")


def _baselines(text: str) -> list[str]:
    chosen = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in chosen if b not in BASELINES]
    if bad:
        raise SystemExit(
            f"ijepa eval: unknown --baselines {', '.join(bad)}; choose from {', '.join(BASELINES)}"
        )
    return chosen


def _baseline_features(
    kind: str,
    args: argparse.Namespace,
    encoder: Any,
    meta: Any,
    sets: dict[str, Any],
    size: int,
    poolings: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and test features of one baseline, with the entries the protocol reads."""

    from ijepa.eval.images import encoder_input_size, features_of, pixel_features
    from ijepa.models import random_init_encoder

    if kind == "raw":
        p = None
        if args.protocol == "attentive":  # the pixels of each patch stand in for its token
            patch = encoder.patch_size
            p = int(patch if isinstance(patch, int) else patch[0])
        out = [pixel_features(sets[s], img_size=size, patch_size=p) for s in ("train", "test")]
        if args.protocol == "attentive":
            for f in out:
                del f["pixels"]
        return out[0], out[1]
    fresh = random_init_encoder(dict(meta.model_args), seed=args.seed)
    fresh.to(next(encoder.parameters()).device)
    if size != encoder_input_size(fresh):
        fresh.resize_pos_embed(size)
    kw: dict[str, Any] = {
        "poolings": poolings,
        "img_size": size,
        "batch_size": args.batch_size,
        "bf16": args.bf16,
        "device": next(encoder.parameters()).device,
        "progress": not args.no_progress,
        **_stats(meta),
    }
    return features_of(fresh, sets["train"], **kw), features_of(fresh, sets["test"], **kw)


def _print_comparison(protocol: str, result: dict[str, Any], baselines: dict[str, Any]) -> None:
    """One line per representation on stderr: the protocol's headline accuracy."""
    import sys

    key = "mean" if protocol == "lowshot" else "top1"
    rows = [("encoder", result), *baselines.items()]
    for name, res in rows:
        print(f"{protocol} {name:<8} top-1 {float(res[key]):.4f}", file=sys.stderr)
