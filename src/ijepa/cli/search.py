"""``ijepa search``: nearest neighbours of images in a frozen encoder's feature space."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``search`` subcommand."""
    p = sub.add_parser(
        "search",
        help="similarity search: the images of a data set that look most like a query",
        description=(
            "Build a cosine-similarity index of a data set's frozen features (from --checkpoint "
            "and --data, or from --features written by `ijepa embed`), query it with data-set "
            "indices or image files, print the top-k (path or index, label, similarity) and "
            "draw each query next to its neighbours. Uses FAISS when installed (the faiss "
            "extra), exact torch search otherwise."
        ),
    )
    src = p.add_argument_group("index")
    src.add_argument("--checkpoint", help="encoder checkpoint: ours, official, HF or timm")
    src.add_argument("--data", help="data spec of the indexed images, e.g. embedded")
    src.add_argument("--split", default=None, help="train or test (default: train)")
    src.add_argument(
        "--features",
        help="index the features `ijepa embed` wrote (.safetensors or .npy) instead of "
        "embedding --data; --data and --checkpoint default to what the file records",
    )
    src.add_argument("--encoder", choices=("target", "context"), default=None)
    src.add_argument("--pooling", choices=("avg", "avg4"), default="avg")
    src.add_argument("--img-size", type=int, default=None)
    src.add_argument("--batch-size", type=int, default=256)
    src.add_argument("--device", default="auto")
    q = p.add_argument_group("queries")
    q.add_argument("--query-index", type=int, nargs="+", default=[], metavar="I",
                   help="rows of the indexed set")  # fmt: skip
    q.add_argument("--query-image", nargs="+", default=[], metavar="FILE", help="image files")
    q.add_argument("-k", "--k", type=int, default=5, help="neighbours per query (default 5)")
    q.add_argument("--include-self", action="store_true",
                   help="keep an indexed query itself among its neighbours")  # fmt: skip
    b = p.add_argument_group("backend and output")
    b.add_argument("--backend", choices=("auto", "faiss", "torch"), default="auto")
    b.add_argument("--faiss-index", default="Flat",
                   help="FAISS index_factory string (Flat: exact; IVF/HNSW: approximate)")  # fmt: skip
    b.add_argument("--compare", action="store_true",
                   help="also answer with the other backend and print how far they agree")  # fmt: skip
    b.add_argument("--out", default="search", help="folder for the PNG grids and results.json")
    b.add_argument("--no-grid", action="store_true", help="write no pictures")
    b.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_search)


def run_search(args: argparse.Namespace) -> int:
    """Handler of ``ijepa search``."""
    from ijepa.dist import resolve_device
    from ijepa.search import (
        SearchError,
        compare_backends,
        draw_answers,
        format_answers,
        index_from_checkpoint,
        index_from_features,
        search,
    )

    # FAISS logs each CPU-specific library it tries at INFO: keep that out of the console
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    device = resolve_device(args.device)
    if args.features:
        source = index_from_features(
            args.features,
            data_spec=args.data,
            split=args.split,
            checkpoint=args.checkpoint,
            which=args.encoder,
            img_size=args.img_size,
            device=device,
            backend=args.backend,
            faiss_factory=args.faiss_index,
        )
    else:
        if not args.checkpoint or not args.data:
            raise SearchError("give --checkpoint and --data (or --features from `ijepa embed`)")
        source = index_from_checkpoint(
            args.checkpoint,
            args.data,
            split=args.split or "train",
            which=args.encoder or "target",
            pooling=args.pooling,
            img_size=args.img_size,
            batch_size=args.batch_size,
            device=device,
            backend=args.backend,
            faiss_factory=args.faiss_index,
            progress=not args.no_progress,
        )
    answers = search(
        source,
        indices=args.query_index,
        images=args.query_image,
        k=args.k,
        include_self=args.include_self,
    )
    index = source.index
    print(f"index: {len(index)} images x {index.dim} features, {index.backend} search")
    print(format_answers(answers, index))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "source": {k: v for k, v in source.info.items() if v is not None},
        "backend": index.backend,
        "k": args.k,
        "answers": answers.records(index),
    }
    if args.compare:
        record["agreement"] = compare_backends(source, answers, args.k)
        agree = record["agreement"]
        print(
            f"faiss ({agree['faiss_index']}) vs exact torch: identical top-{args.k} lists for "
            f"{agree['same_ids']:.0%} of {len(answers.query_ids)} queries, mean overlap "
            f"{agree['overlap']:.3f}, largest similarity difference {agree['max_score_diff']:.2e}"
        )
    if not args.no_grid:
        pictures = draw_answers(answers, source, out)
        print(f"grid: {pictures[0]} (+ {len(pictures) - 1} per-query pictures in {out})")
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {out / 'results.json'}")
    return 0
