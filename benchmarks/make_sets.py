"""Write the held-out ImageFolder sets of the recipe study (``docs/recipes.md``).

    python benchmarks/make_sets.py --out data/heldout            # every set
    python benchmarks/make_sets.py --out data/heldout --sets glyphs,digits

Each set is written as ``OUT/<name>/{train,val}/<class>/<index>.png`` (8-bit grey PNG), the
layout ``imagefolder:OUT/<name>`` reads, so runs on them take the same path as a user's own
folder of images. None of these sets was used to choose the recipe; they exist to check it.

- ``fmnist-canvas``: Fashion-MNIST items (28 px) pasted at a random position on a blank 40 px
  canvas (5,000 train / 1,000 val): content that is no longer centred.
- ``fmnist-inv-2k``: 2,000 Fashion-MNIST train images (200 a class) and 1,000 val images, with
  inverted contrast (dark items on a white background): a small set with a bright background.
- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8 x 8 scans, 10 classes),
  upsampled to 28 px (bicubic) and split 1,400 / 397: real data of another kind.
- ``glyphs``: the letters A-J rendered from the 16 DejaVu / STIX font faces that matplotlib
  ships, at a random size, offset and tilt (up to 15 degrees), with blur and noise (3,000 train /
  1,000 val, 28 px): a notMNIST-like set.

Fashion-MNIST comes from ``--fmnist`` (default: Debian's ``dataset-fashion-mnist`` folder).
Everything is seeded (``--seed``), so the sets are the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SETS = ("fmnist-canvas", "fmnist-inv-2k", "digits", "glyphs")
LETTERS = "ABCDEFGHIJ"


def write_folder(
    root: Path, split: str, images: np.ndarray, labels: np.ndarray, names: Sequence[str]
) -> None:
    """``images`` uint8 (N, H, W) -> ``root/split/<names[label]>/<i>.png``."""
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        folder = root / split / names[int(y)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i:05d}.png")


def fmnist(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from ijepa.data import load_imageset

    tr = load_imageset(f"fashion-mnist:{path}", "train")
    te = load_imageset(f"fashion-mnist:{path}", "test")
    return (
        tr.images[:, 0].numpy(),
        tr.labels.numpy(),
        te.images[:, 0].numpy(),
        te.labels.numpy(),
    )


def balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return rng.permutation(np.concatenate(idx))


def make_canvas(out: Path, path: str, rng: np.random.Generator) -> None:
    xtr, ytr, xte, yte = fmnist(path)
    names = [str(c) for c in range(10)]
    for split, x, y, n in (("train", xtr, ytr, 5000), ("val", xte, yte, 1000)):
        pick = balanced(y, n // 10, rng)
        canvas = np.zeros((len(pick), 40, 40), dtype=np.uint8)
        for j, i in enumerate(pick):
            r, c = rng.integers(0, 13, size=2)
            canvas[j, r : r + 28, c : c + 28] = x[i]
        write_folder(out, split, canvas, y[pick], names)


def make_inverted(out: Path, path: str, rng: np.random.Generator) -> None:
    xtr, ytr, xte, yte = fmnist(path)
    names = [str(c) for c in range(10)]
    for split, x, y, n in (("train", xtr, ytr, 2000), ("val", xte, yte, 1000)):
        pick = balanced(y, n // 10, rng)
        write_folder(out, split, 255 - x[pick], y[pick], names)


def make_digits(out: Path, rng: np.random.Generator) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)  # (1797, 8, 8)
    big = np.stack(
        [np.asarray(Image.fromarray(im, mode="L").resize((28, 28), Image.BICUBIC)) for im in x]
    )
    order = rng.permutation(len(big))
    tr, te = order[:1400], order[1400:]
    names = [str(c) for c in range(10)]
    write_folder(out, "train", big[tr], d.target[tr], names)
    write_folder(out, "val", big[te], d.target[te], names)


def font_files() -> list[Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = sorted(ttf.glob("DejaVuSans*.ttf")) + sorted(ttf.glob("DejaVuSerif*.ttf"))
    faces += sorted(ttf.glob("STIXGeneral*.ttf"))
    faces = [f for f in faces if "Display" not in f.name]
    if len(faces) < 8:
        raise SystemExit(f"expected matplotlib's DejaVu/STIX fonts in {ttf}, found {len(faces)}")
    return faces


def glyph(letter: str, font: Path, rng: np.random.Generator) -> np.ndarray:
    size = int(rng.integers(18, 27))
    img = Image.new("L", (56, 56), 0)
    draw = ImageDraw.Draw(img)
    face = ImageFont.truetype(str(font), size * 2)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=face)
    x = (56 - (right - left)) / 2 - left + rng.uniform(-4, 4)
    y = (56 - (bottom - top)) / 2 - top + rng.uniform(-4, 4)
    draw.text((x, y), letter, fill=int(rng.integers(170, 256)), font=face)
    img = img.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    img = img.resize((28, 28), Image.BILINEAR).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (28, 28))
    return arr.clip(0, 255).astype(np.uint8)


def make_glyphs(out: Path, rng: np.random.Generator) -> None:
    faces = font_files()
    for split, n in (("train", 3000), ("val", 1000)):
        labels = np.arange(n) % len(LETTERS)
        rng.shuffle(labels)
        images = np.stack([glyph(LETTERS[y], faces[rng.integers(len(faces))], rng) for y in labels])
        write_folder(out, split, images, labels, list(LETTERS))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True)
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--fmnist", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    chosen = args.sets.split(",")
    bad = [s for s in chosen if s not in SETS]
    if bad:
        p.error(f"unknown set(s) {bad}; choose from {SETS}")
    for i, name in enumerate(SETS):
        if name not in chosen:
            continue
        root = Path(args.out) / name
        if root.exists():
            print(f"{root} exists, skipped", file=sys.stderr)
            continue
        rng = np.random.default_rng([args.seed, i])
        if name == "fmnist-canvas":
            make_canvas(root, args.fmnist, rng)
        elif name == "fmnist-inv-2k":
            make_inverted(root, args.fmnist, rng)
        elif name == "digits":
            make_digits(root, rng)
        else:
            make_glyphs(root, rng)
        n = sum(1 for _ in root.rglob("*.png"))
        print(f"{root}: {n} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
