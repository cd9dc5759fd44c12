"""What the largest directions of a run's pooled features encode: the class, or a nuisance?

kNN on cosine similarity follows the directions of largest variance. This script takes a run's
target encoder, extracts the average-pooled features of the test split, and prints for each of
the top principal components its share of the variance, how much of it the class explains
(eta squared: between-class over total variance) and how much each image's overall brightness
explains (squared correlation with the image's median pixel, about its background level, and
with its mean pixel).

    python benchmarks/feature_directions.py runs/demo
    python benchmarks/feature_directions.py runs/demo --data embedded --components 6

Figures from it are in docs/recipes.md (the demo's unstable kNN).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ijepa.checkpoint import latest_path
from ijepa.compat.formats import read_encoder
from ijepa.data import load_imageset
from ijepa.eval.images import encoder_input_size, features_of


def eta_squared(values: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the variance of ``values`` (N,) explained by the class means of ``labels`` (N,)."""
    centred = values - values.mean()
    total = float(centred.square().sum())
    between = sum(
        float((labels == c).sum()) * float(centred[labels == c].mean()) ** 2
        for c in labels.unique()
    )
    return between / total if total > 0 else 0.0


def r_squared(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared Pearson correlation of two (N,) vectors."""
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return (float(a @ b) / denom) ** 2 if denom > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", help="a run folder (its latest checkpoint) or a checkpoint file")
    ap.add_argument(
        "--data", help="data spec (default: the run's demo_results.json, else embedded)"
    )
    ap.add_argument("--components", type=int, default=6, help="principal components to show")
    args = ap.parse_args()
    if args.components < 1:
        ap.error("--components must be >= 1")
    run = Path(args.run)
    path = latest_path(run, "jepa") if run.is_dir() else run
    spec = args.data
    if spec is None:
        results = run / "demo_results.json"
        spec = json.loads(results.read_text())["dataset"] if results.exists() else "embedded"
    encoder, _ = read_encoder(path, which="target")
    test = load_imageset(spec, "test")
    size = encoder_input_size(encoder)
    feats = features_of(encoder.eval(), test, poolings=("avg",), img_size=size, progress=False)
    x = feats["avg"].float()
    x = x - x.mean(0)
    q = min(args.components, x.shape[1])
    _, s, v = torch.pca_lowrank(x, q=q, center=False)
    pcs = x @ v  # (N, q)
    share = s.square() / x.square().sum()
    pixels = test.images.float().flatten(1) / 255.0  # (N, C*H*W)
    median, mean = pixels.median(dim=1).values, pixels.mean(dim=1)
    print(f"{path} on '{spec}' test ({len(test)} images), average-pooled target features")
    print(f"{'PC':<4}{'variance':>10}{'class':>8}{'median px':>11}{'mean px':>9}")
    for i in range(q):
        pc = pcs[:, i]
        print(
            f"{i:<4}{float(share[i]):>10.3f}{eta_squared(pc, test.labels):>8.2f}"
            f"{r_squared(pc, median):>11.2f}{r_squared(pc, mean):>9.2f}"
        )


if __name__ == "__main__":
    main()
