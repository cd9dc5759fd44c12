"""The embedded default data set: procedural shape images, no download.

Three layouts of the same five shapes (square, circle, triangle, plus, ring); the label is the
shape (5 classes):

- ``layout="shapes"`` (default): 4 to 7 grey objects of the image's one shape class on a plain
  grey background, each object at its own random position (overlaps allowed), size, rotation and
  grey level (lighter or darker than the background), with per-image background level and pixel
  noise. Where the pixels fall and how bright they are say nothing of the class; only the
  objects' shape does, and every object shows it.
- ``layout="object"``: one large grey object near the centre of a dark background, in the spirit
  of Fashion-MNIST: random size, rotation (within 20 degrees), offset, brightness, contrast and
  shading, pixel noise.
- ``layout="scene"``: coloured scenes: a textured background (two-colour gradient at a random
  angle, low-frequency colour noise, sometimes a faint grating, pixel noise), one *main* object
  and up to ``max_distractors`` smaller *distractor* objects of random colour. Labels:
  ``label="shape"`` (the main object's shape) or ``label="count"`` (the number of objects).

Why the default is the shapes layout. A user's first question is whether self-supervised
features beat the trivial baselines, and on the object layout raw pixels already reach kNN 0.99
(it is centred and upright). On the shapes layout raw pixels reach kNN 0.27 and linear 0.23, a
random-init encoder 0.24 / 0.22 (chance 0.20), so what the encoder learned shows. On coloured
variants (random object and background colours, textured backgrounds) a few CPU minutes of
I-JEPA learned nothing (all at chance); with a single object per image raw-pixel kNN stayed at
0.5-0.7 (near-duplicate poses). The study is in ``docs/recipes.md``.

Rendering is vectorised over a chunk of images: each object is an anti-aliased coverage mask
computed from a signed distance function on the pixel grid (no per-shape PIL calls). Images are
generated in chunks of :data:`CHUNK` with one generator per (seed, split, chunk), so the first
``n`` images of a split do not depend on how many are asked for, and generation is reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ijepa.data.imageset import ImageSet, channel_stats
from ijepa.data.layouts import render_objects, render_scenes, render_shapes
from ijepa.data.render import SHAPES
from ijepa.data.spec import DataSpecError

__all__ = [
    "CHUNK",
    "DEFAULT_SIZES",
    "SHAPES",
    "EmbeddedConfig",
    "generate_scenes",
    "load_embedded",
]

#: Default number of images per split.
DEFAULT_SIZES: dict[str, int] = {"train": 10_000, "test": 2_000}

#: Images generated per seeded chunk (the unit of reproducibility).
CHUNK = 256

#: Number of train images the normalisation statistics are computed from.
STATS_IMAGES = 1024

_SPLIT_IDS = {"train": 0, "test": 1}

LAYOUTS = ("shapes", "object", "scene")


@dataclass(frozen=True)
class EmbeddedConfig:
    """Options of the embedded set (all are ``load_imageset("embedded", ...)`` keyword options).

    Attributes:
        size: number of images in the split (default 10 000 train / 2 000 test).
        image_size: side of the square images in pixels.
        label: ``"shape"`` (shape of the main object) or ``"count"`` (number of objects; scene
            layout only).
        seed: base seed; train and test use different streams of it.
        layout: ``"shapes"`` (the default), ``"object"`` (one grey object) or ``"scene"``
            (coloured scenes).
        max_distractors: scene layout: maximum number of distractor objects per image (0-3;
            default 3).
        background: scene layout: ``"textured"`` (gradient, blotches, grating, pixel noise; the
            default) or ``"plain"`` (one flat colour, no noise: an easier variant).
    """

    size: int | None = None
    image_size: int = 32
    label: str = "shape"
    seed: int = 0
    layout: str = "shapes"
    max_distractors: int | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise DataSpecError(
                f"embedded: layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )
        if self.layout != "scene":
            given = [k for k in ("max_distractors", "background") if getattr(self, k) is not None]
            if given or self.label == "count":
                what = ", ".join(given) if given else "label='count'"
                raise DataSpecError(
                    f"embedded: {what} applies to layout='scene' only (the {self.layout!r} "
                    "layout has no distractors and no count label); add layout=scene"
                )
        else:
            if self.max_distractors is None:
                object.__setattr__(self, "max_distractors", 3)
            if self.background is None:
                object.__setattr__(self, "background", "textured")
        if self.size is not None and self.size <= 0:
            raise DataSpecError(f"embedded: size must be positive, got {self.size}")
        if self.image_size < 16:
            raise DataSpecError(f"embedded: image_size must be >= 16, got {self.image_size}")
        if self.label not in ("shape", "count"):
            raise DataSpecError(f"embedded: label must be 'shape' or 'count', got {self.label!r}")
        if self.layout == "scene":
            if self.background not in ("textured", "plain"):
                raise DataSpecError(
                    f"embedded: background must be 'textured' or 'plain', got {self.background!r}"
                )
            if not 0 <= int(self.max_distractors or 0) <= 3:
                raise DataSpecError(
                    f"embedded: max_distractors must be in 0..3, got {self.max_distractors}"
                )


def load_embedded(split: str, cfg: EmbeddedConfig) -> ImageSet:
    """Generate the embedded set for ``split`` (``"train"`` or ``"test"``).

    Normalisation statistics are those of the first :data:`STATS_IMAGES` train images with the
    same generation options, so train and test share them.

    Returns:
        ImageSet with images uint8 ``(N, 3, S, S)`` and labels int64 ``(N,)``.
    """
    n = cfg.size if cfg.size is not None else DEFAULT_SIZES[split]
    distractors = int(cfg.max_distractors or 0)
    plain = cfg.background == "plain"
    images, shape_labels, counts = generate_scenes(
        n,
        split=split,
        seed=cfg.seed,
        image_size=cfg.image_size,
        layout=cfg.layout,
        max_distractors=distractors,
        plain=plain,
    )
    if split == "train" and n >= STATS_IMAGES:
        mean, std = channel_stats(images[:STATS_IMAGES])
    else:
        mean, std = _train_stats(cfg.seed, cfg.image_size, cfg.layout, distractors, plain)
    if cfg.label == "shape":
        labels, classes = shape_labels, list(SHAPES)
    else:
        labels, classes = counts - 1, [str(k) for k in range(1, distractors + 2)]
    name = f"embedded[{cfg.layout},{cfg.label}]:{split}"
    return ImageSet(images=images, labels=labels, classes=classes, mean=mean, std=std, name=name)


@functools.lru_cache(maxsize=8)
def _train_stats(
    seed: int, image_size: int, layout: str, max_distractors: int, plain: bool
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    images, _, _ = generate_scenes(
        STATS_IMAGES,
        split="train",
        seed=seed,
        image_size=image_size,
        layout=layout,
        max_distractors=max_distractors,
        plain=plain,
    )
    return channel_stats(images)


def generate_scenes(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    image_size: int = 32,
    layout: str = "shapes",
    max_distractors: int = 3,
    plain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` images deterministically.

    Args:
        n: number of images.
        split: ``"train"`` or ``"test"`` (different random streams).
        seed: base seed.
        image_size: image side ``S`` in pixels.
        layout: ``"shapes"``, ``"object"`` (one grey object) or ``"scene"`` (coloured scenes).
        max_distractors: scene layout: maximum number of distractors per image.
        plain: scene layout: flat single-colour backgrounds without noise (easier variant).

    Returns:
        ``(images uint8 (n, 3, S, S), shape labels int64 (n,), object counts int64 (n,))``.
    """
    if split not in _SPLIT_IDS:
        raise DataSpecError(f"embedded: unknown split {split!r}")
    out_img, out_shape, out_count = [], [], []
    with _one_thread():
        for chunk in range(math.ceil(n / CHUNK)):
            g = torch.Generator().manual_seed(_chunk_seed(seed, split, chunk))
            b = min(CHUNK, n - chunk * CHUNK)
            if layout == "shapes":
                img, shape, count = render_shapes(CHUNK, image_size, g)
            elif layout == "object":
                img, shape, count = render_objects(CHUNK, image_size, g)
            else:
                img, shape, count = render_scenes(CHUNK, image_size, max_distractors, plain, g)
            out_img.append(img[:b])
            out_shape.append(shape[:b])
            out_count.append(count[:b])
    return torch.cat(out_img), torch.cat(out_shape), torch.cat(out_count)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, restoring the previous setting afterwards.

    Rendering is hundreds of small element-wise ops per chunk; splitting each over OpenMP threads
    gains little, and when the cores are busy every parallel region waits for a time slice.
    Measured on the 2-core dev machine under load: 2 048 images took 2.5-5.0 s on one thread and
    21-48 s on two.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _chunk_seed(seed: int, split: str, chunk: int) -> int:
    # Distinct, well separated integers for every (seed, split, chunk).
    return (seed * 2 + _SPLIT_IDS[split]) * 1_000_003 + chunk * 7_919 + 12_345
