"""``ijepa viz {masks,attention,features,embeddings,curves,predictor}`` and ``ijepa report``.

Each picture command writes one PNG (default: ``<run folder>/viz/<command>.png``) and prints its
path. Sample images come from the run's data set unless ``--data`` names another.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ijepa.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from ijepa.viz.runs import LoadedRun, SampleImages

logger = logging.getLogger(__name__)

_ENCODERS = ("target", "context")


def _patch_arg(text: str) -> int | tuple[int, int]:
    """``"R,C"`` -> (row, col); ``"N"`` -> flat index."""
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"patch must be ROW,COL or an index, got {text!r}"
        ) from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"patch must be ROW,COL or an index, got {text!r}")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _common(p: argparse.ArgumentParser, *, checkpoint: bool = True) -> None:
    if checkpoint:
        p.add_argument("run", metavar="RUN", help="run folder or checkpoint file (.pth.tar)")
        p.add_argument(
            "--encoder", choices=_ENCODERS, default="target", help="which encoder (default: target)"
        )
    p.add_argument("--data", help="data spec for sample images (default: the run's data set)")
    p.add_argument("--split", default="test", help="split of the sample images (default: test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subset and masks")
    p.add_argument("--out", help="output PNG (default: RUN/viz/<command>.png)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``viz`` group and the ``report`` command."""
    viz = sub.add_parser(
        "viz",
        help="pictures of a run: masks, attention, features, embeddings, curves, predictor",
        description="Draw pictures of an I-JEPA run as PNG files.",
    )
    vsub = viz.add_subparsers(dest="viz_command", metavar="PICTURE")
    vsub.required = True

    p = vsub.add_parser("masks", help="context/target blocks on images and patch-usage heatmaps")
    p.add_argument("--run", help="run folder: its mask settings and image size")
    p.add_argument("--img-size", type=int, help="image side (default: the run's, else 224)")
    p.add_argument("--patch-size", type=int, help="patch side (default: the run's, else 16)")
    p.add_argument(
        "--modes",
        default="default,official",
        help="samplers to compare (default: default,official)",
    )
    p.add_argument("--batches", type=int, default=200, help="batches per heatmap (default: 200)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--num-images", type=int, default=4, help="sample images drawn (default: 4)")
    _common(p, checkpoint=False)
    p.set_defaults(func=run_masks)

    p = vsub.add_parser("attention", help="attention of one patch, per layer and head")
    _common(p)
    p.add_argument("--image-index", type=int, default=0, help="which sample image (default: 0)")
    p.add_argument(
        "--patch", type=_patch_arg, help="query patch ROW,COL or index (default: centre)"
    )
    p.add_argument("--layers", type=_int_list, help="block indices, e.g. 0,5,-1 (default: all)")
    p.set_defaults(func=run_attention)

    p = vsub.add_parser("features", help="PCA of patch features shown as RGB")
    _common(p)
    p.add_argument("--num-images", type=int, default=6, help="images (default: 6)")
    p.set_defaults(func=run_features)

    p = vsub.add_parser("embeddings", help="UMAP (or PCA) of pooled features coloured by label")
    _common(p)
    p.add_argument("--num-images", type=int, default=1000, help="images (default: 1000)")
    p.add_argument("--method", choices=("auto", "umap", "pca"), default="auto", help="projection")
    p.set_defaults(func=run_embeddings)

    p = vsub.add_parser("curves", help="loss, schedules and collapse monitors from metrics.jsonl")
    p.add_argument("run", metavar="RUN", help="run folder or metrics.jsonl file")
    p.add_argument("--out", help="output PNG (default: RUN/viz/curves.png)")
    p.set_defaults(func=run_curves)

    p = vsub.add_parser("predictor", help="decode the predictor's outputs for masked blocks")
    _common(p)
    p.add_argument("--num-images", type=int, default=6, help="images shown (default: 6)")
    p.add_argument("--train-images", type=int, default=1000, help="decoder training images")
    p.add_argument("--steps", type=int, default=300, help="decoder training steps (default: 300)")
    p.set_defaults(func=run_predictor)

    r = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description="Curves, collapse monitors, results, masks, embeddings, features, predictor "
        "pictures and an attention explorer in one HTML file (no external resources).",
    )
    r.add_argument("run", metavar="RUN_DIR", help="run folder")
    r.add_argument("--out", help="output HTML (default: RUN_DIR/report.html)")
    r.add_argument("--data", help="data spec for sample images (default: the run's data set)")
    r.add_argument(
        "--explorer-images", type=int, default=3, help="images in the attention explorer"
    )
    r.add_argument("--embedding-images", type=int, default=500, help="images in the embedding map")
    r.add_argument(
        "--method", choices=("auto", "umap", "pca"), default="auto", help="embedding projection"
    )
    r.add_argument(
        "--predictor-steps", type=int, default=200, help="decoder steps (0: no predictor section)"
    )
    r.add_argument("--mask-batches", type=int, default=200, help="batches per mask heatmap")
    r.add_argument("--seed", type=int, default=0, help="seed of samples and masks")
    r.set_defaults(func=run_report)


def _error(command: str, err: Exception) -> int:
    print(f"ijepa {command}: error: {err}", file=sys.stderr)
    return 2


def _out(args: argparse.Namespace, name: str) -> Path:
    if args.out:
        return Path(args.out)
    run = Path(args.run) if getattr(args, "run", None) else Path(".")
    folder = run if run.is_dir() else run.parent
    return folder / "viz" / f"{name}.png"


def _load(args: argparse.Namespace, num: int) -> tuple[LoadedRun, nn.Module, SampleImages]:
    """The run, the chosen encoder and ``num`` sample images at the model's resolution."""
    from ijepa.viz.runs import load_run, run_dataset_spec, sample_images

    run = load_run(args.run)
    size = int(run.model_args["img_size"])
    spec = run_dataset_spec(run.config, args.data)
    samples = sample_images(spec, args.split, size, num, seed=args.seed)
    models = run.models
    encoder = models.target_encoder if args.encoder == "target" else models.encoder
    return run, encoder, samples


def run_masks(args: argparse.Namespace) -> int:
    """Handler of ``ijepa viz masks``."""
    from ijepa.viz.masks import save_mask_figure
    from ijepa.viz.runs import mask_generators, read_run_config, run_dataset_spec, sample_images

    cfg = read_run_config(args.run) if args.run else None
    img = args.img_size or (cfg.data.crop_size if cfg else 224)
    patch = args.patch_size or (cfg.mask.patch_size if cfg else 16)
    try:
        if img % patch:
            raise UsageError(f"--img-size {img} is not divisible by --patch-size {patch}")
        grid = (img // patch, img // patch)
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        gens = mask_generators(cfg, grid, tuple(modes))
        samples = sample_images(
            run_dataset_spec(cfg, args.data), args.split, img, args.num_images, seed=args.seed
        )
        freqs = save_mask_figure(
            samples.images,
            gens,
            _out(args, "masks"),
            patch_size=patch,
            mean=samples.mean,
            std=samples.std,
            seed=args.seed,
            num_batches=args.batches,
            batch_size=args.batch_size,
        )
    except UsageError as err:
        return _error("viz masks", err)
    for name, f in freqs.items():
        print(f"{name}: {f.unused} of {grid[0] * grid[1]} patches never used in {f.images} images")
    print(_out(args, "masks"))
    return 0


def run_attention(args: argparse.Namespace) -> int:
    """Handler of ``ijepa viz attention``."""
    from ijepa.viz.attention import patch_attention, save_attention_figure
    from ijepa.viz.common import encoder_patch_size, patch_grid, patch_rc

    try:
        _, encoder, samples = _load(args, args.image_index + 1)
        if args.image_index >= samples.images.shape[0]:
            raise UsageError(
                f"--image-index {args.image_index}: only {samples.images.shape[0]} images"
            )
        image = samples.images[args.image_index]
        p = encoder_patch_size(encoder)
        grid = patch_grid(image[None], p)
        patch = patch_rc(
            args.patch if args.patch is not None else (grid[0] // 2, grid[1] // 2), grid
        )
        maps = patch_attention(encoder, image, patch, args.layers)
        depth = int(getattr(encoder, "depth", maps.shape[0]))
        layers = args.layers if args.layers is not None else list(range(depth))
        out = save_attention_figure(
            image,
            maps,
            patch,
            p,
            _out(args, "attention"),
            layer_names=[f"layer {i % depth}" for i in layers],
            mean=samples.mean,
            std=samples.std,
        )
    except UsageError as err:
        return _error("viz attention", err)
    print(out)
    return 0


def run_features(args: argparse.Namespace) -> int:
    """Handler of ``ijepa viz features``."""
    from ijepa.viz.features import feature_pca_figure

    try:
        _, encoder, samples = _load(args, args.num_images)
        feature_pca_figure(
            encoder, samples.images, _out(args, "features"), mean=samples.mean, std=samples.std
        )
    except UsageError as err:
        return _error("viz features", err)
    print(_out(args, "features"))
    return 0


def run_embeddings(args: argparse.Namespace) -> int:
    """Handler of ``ijepa viz embeddings``; also prints the collapse measures of the set."""
    from ijepa.diagnostics import correlation_dimension, effective_rank
    from ijepa.viz.embeddings import embed_2d, pooled_features, save_embedding_figure

    try:
        _, encoder, samples = _load(args, args.num_images)
        pooled = pooled_features(encoder, samples.images)
        coords, method = embed_2d(pooled, args.method, seed=args.seed)
        save_embedding_figure(
            coords,
            samples.labels,
            samples.classes,
            _out(args, "embeddings"),
            title=f"{method.upper()} of pooled {args.encoder}-encoder features ({samples.name})",
        )
        rank = effective_rank(pooled)
        corr = correlation_dimension(pooled) if pooled.shape[0] >= 10 else float("nan")
    except UsageError as err:
        return _error("viz embeddings", err)
    print(f"{pooled.shape[0]} images: effective rank {rank:.2f}, correlation dimension {corr:.2f}")
    print(_out(args, "embeddings"))
    return 0


def run_curves(args: argparse.Namespace) -> int:
    """Handler of ``ijepa viz curves``."""
    from ijepa.viz.curves import read_metrics, save_curves_figure

    path = Path(args.run)
    metrics = path / "metrics.jsonl" if path.is_dir() else path
    try:
        records = read_metrics(metrics)
        drawn = save_curves_figure(
            records, _out(args, "curves"), title=f"training curves: {metrics.parent.name}"
        )
    except UsageError as err:
        return _error("viz curves", err)
    print(f"{len(records)} records; drawn: {', '.join(drawn)}")
    print(_out(args, "curves"))
    return 0


def run_predictor(args: argparse.Namespace) -> int:
    """Handler of ``ijepa viz predictor``."""
    from ijepa.masks import step_masks
    from ijepa.train.build import build_mask_generator
    from ijepa.viz.predictor_decoder import decode_predictions, save_predictor_figure, train_decoder
    from ijepa.viz.runs import run_dataset_spec, sample_images

    try:
        run, _, samples = _load(args, args.num_images)
        size = int(run.model_args["img_size"])
        p = int(run.model_args["patch_size"])
        spec = run_dataset_spec(run.config, args.data)
        train = sample_images(spec, "train", size, args.train_images, seed=args.seed)
        fit = train_decoder(
            run.models.target_encoder, train.images, steps=args.steps, seed=args.seed
        )
        gen = build_mask_generator(run.config, (size // p, size // p))
        masks_enc, masks_pred = step_masks(gen, args.seed, 0, samples.images.shape[0])
        m = run.models
        pics = decode_predictions(
            m.encoder,
            m.predictor,
            m.target_encoder,
            fit.decoder,
            samples.images,
            masks_enc,
            masks_pred,
        )
        out = save_predictor_figure(
            pics, _out(args, "predictor"), patch_size=p, mean=samples.mean, std=samples.std
        )
    except UsageError as err:
        return _error("viz predictor", err)
    print(
        f"decoder train MSE {fit.train_mse:.4f} (pixel variance {fit.pixel_var:.4f}); target-patch "
        f"MSE: predictor {pics.mse_predicted:.4f}, true features {pics.mse_reconstructed:.4f}, "
        f"mean {pics.mse_mean:.4f}"
    )
    print(out)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Handler of ``ijepa report``."""
    from ijepa.viz.report import build_report

    try:
        out = build_report(
            args.run,
            args.out,
            data_spec=args.data,
            explorer_images=args.explorer_images,
            embedding_images=args.embedding_images,
            embedding_method=args.method,
            predictor_steps=args.predictor_steps,
            mask_batches=args.mask_batches,
            seed=args.seed,
        )
    except UsageError as err:
        return _error("report", err)
    print(out)
    return 0
