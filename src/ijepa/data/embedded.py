"""The embedded default data set: procedural shape images, no download.

Two layouts of the same five shapes (square, circle, triangle, plus, ring):

- ``layout="object"`` (default): one large grey object near the centre of a dark background, in
  the spirit of Fashion-MNIST: random size, rotation, offset, brightness, contrast and shading,
  pixel noise. Label: the shape (5 classes).
- ``layout="scene"``: coloured scenes, a harder set: a textured background (two-colour gradient at
  a random angle, low-frequency colour noise, sometimes a faint grating, pixel noise), one *main*
  object and up to ``max_distractors`` smaller *distractor* objects of random colour. Labels:
  ``label="shape"`` (the main object's shape) or ``label="count"`` (the number of objects).

Why the default is the object layout: it is the set on which a few CPU minutes of I-JEPA
pretraining measurably beat a random-init encoder. A random-init ViT with small patches is
dominated by its positional embedding and average-pools to little more than mean brightness, so
rotation, offset, size and brightness hide the class from it; a pretrained encoder has learnt to
encode local shape. On the scene layout, with random colours, textured backgrounds and
distractors, a 600-step run stayed at chance like the random init (measured while choosing the
default; the scene layout remains for longer runs and for the count task).

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
from ijepa.data.spec import DataSpecError

__all__ = [
    "CHUNK",
    "DEFAULT_SIZES",
    "SHAPES",
    "EmbeddedConfig",
    "generate_scenes",
    "load_embedded",
]

#: Shape classes, index = label for ``label="shape"``.
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "plus", "ring")

#: Default number of images per split.
DEFAULT_SIZES: dict[str, int] = {"train": 10_000, "test": 2_000}

#: Images generated per seeded chunk (the unit of reproducibility).
CHUNK = 256

#: Number of train images the normalisation statistics are computed from.
STATS_IMAGES = 1024

_SPLIT_IDS = {"train": 0, "test": 1}

# Circumradius of each unit shape (radius of its bounding circle, in units of the object size);
# used for layout. The shapes' areas lie within 1.6-2.0 (units^2) so area says little of class.
_EXTENT = torch.tensor([0.99, 0.80, 1.10, 1.00, 0.90])

# Sizes ("radius" r in pixels at 32 px; scaled with image_size). Main objects are always larger.
_MAIN_R = (6.0, 9.0)
_DISTRACTOR_R = (2.5, 3.8)
_GAP = 1.5  # minimum free pixels between two objects' bounding circles
_CANDIDATES = 48  # position candidates drawn per distractor slot
_MIN_CONTRAST = 0.45  # minimum RGB distance between an object and the background under it

# The object layout (sizes at 32 px, scaled with image_size): radius, centre offset, grey levels.
_OBJECT_R = (9.0, 12.0)
_OBJECT_OFFSET = 3.0  # the centre moves up to this many pixels along each axis
_OBJECT_ROTATION = 0.35  # radians either way (about 20 degrees): objects stay roughly upright
_OBJECT_BG = (0.0, 0.3)
_OBJECT_FG = (0.55, 1.0)
_OBJECT_SHADE = 1.5  # shading amplitude relative to the scene layout's
_OBJECT_NOISE = 0.03
LAYOUTS = ("object", "scene")


@dataclass(frozen=True)
class EmbeddedConfig:
    """Options of the embedded set (all are ``load_imageset("embedded", ...)`` keyword options).

    Attributes:
        size: number of images in the split (default 10 000 train / 2 000 test).
        image_size: side of the square images in pixels.
        label: ``"shape"`` (shape of the main object) or ``"count"`` (number of objects; scene
            layout only).
        seed: base seed; train and test use different streams of it.
        layout: ``"object"`` (one grey object, the default) or ``"scene"`` (coloured scenes).
        max_distractors: scene layout: maximum number of distractor objects per image (0-3;
            default 3).
        background: scene layout: ``"textured"`` (gradient, blotches, grating, pixel noise; the
            default) or ``"plain"`` (one flat colour, no noise: an easier variant).
    """

    size: int | None = None
    image_size: int = 32
    label: str = "shape"
    seed: int = 0
    layout: str = "object"
    max_distractors: int | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise DataSpecError(
                f"embedded: layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )
        if self.layout == "object":
            given = [k for k in ("max_distractors", "background") if getattr(self, k) is not None]
            if given or self.label == "count":
                what = ", ".join(given) if given else "label='count'"
                raise DataSpecError(
                    f"embedded: {what} applies to layout='scene' only (the default 'object' "
                    "layout draws one object); add layout=scene"
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
    layout: str = "object",
    max_distractors: int = 3,
    plain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` images deterministically.

    Args:
        n: number of images.
        split: ``"train"`` or ``"test"`` (different random streams).
        seed: base seed.
        image_size: image side ``S`` in pixels.
        layout: ``"object"`` (one grey object) or ``"scene"`` (coloured scenes).
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
            if layout == "object":
                img, shape, count = _render_objects(CHUNK, image_size, g)
            else:
                img, shape, count = _render_chunk(CHUNK, image_size, max_distractors, plain, g)
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


def _uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def _render_chunk(
    b: int, s: int, max_distractors: int, plain: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``b`` scenes of side ``s``. Returns uint8 (b,3,s,s), shapes (b,), counts (b,)."""
    scale = s / 32.0
    # Balanced labels within the chunk: shape of the main object and number of distractors.
    shape = torch.randperm(b, generator=g) % len(SHAPES)  # (b,)
    n_distr = torch.randperm(b, generator=g) % (max_distractors + 1)  # (b,)
    layout = _sample_layout(shape, n_distr, s, scale, max_distractors, g)

    ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")  # (s,s)
    bg, bg_lo, bg_hi, bg_dir = _background(b, s, xs, ys, plain, g)  # bg (b,3,s,s)
    img = bg
    for slot in range(layout.cls.shape[1]):
        on = layout.active[:, slot].nonzero()[:, 0]  # images that draw this object
        cx, cy, r = layout.cx[on, slot], layout.cy[on, slot], layout.r[on, slot]
        # Background colour under the object's centre (gradient part only).
        t = _gradient_t(cx[:, None, None], cy[:, None, None], s, bg_dir[on])[:, 0, 0]  # (m,)
        local_bg = bg_lo[on] + (bg_hi[on] - bg_lo[on]) * t[:, None]  # (m,3)
        colour = _contrasting_colour(local_bg, g)  # (m,3)
        alpha, shade = _object_mask(layout.cls[on, slot], cx, cy, r, xs, ys, g)  # (m,s,s) x2
        fill = colour[:, :, None, None] * (1.0 + shade[:, None])  # (m,3,s,s)
        sub = img[on]
        img[on] = sub + alpha[:, None] * (fill - sub)
    if not plain:
        img = img + _uniform(g, 0.0, 0.05, b, 1, 1, 1) * torch.randn(b, 3, s, s, generator=g)
    images = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images, shape.long(), (n_distr + 1).long()


def _render_objects(
    b: int, s: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``b`` object-layout images of side ``s``: uint8 (b,3,s,s), shapes (b,), ones (b,)."""
    scale = s / 32.0
    shape = torch.randperm(b, generator=g) % len(SHAPES)  # balanced within the chunk
    ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")  # (s,s)
    r = _uniform(g, *_OBJECT_R, b) * scale
    cx = s / 2 + _uniform(g, -_OBJECT_OFFSET, _OBJECT_OFFSET, b) * scale
    cy = s / 2 + _uniform(g, -_OBJECT_OFFSET, _OBJECT_OFFSET, b) * scale
    turn = (-_OBJECT_ROTATION, _OBJECT_ROTATION)
    alpha, shade = _object_mask(shape, cx, cy, r, xs, ys, g, rotation=turn)  # (b,s,s) x2
    bg = _uniform(g, *_OBJECT_BG, b)[:, None, None]
    fg = _uniform(g, *_OBJECT_FG, b)[:, None, None] * (1.0 + _OBJECT_SHADE * shade)
    grey = bg + alpha * (fg - bg)  # (b,s,s)
    img = grey[:, None].expand(b, 3, s, s) + _OBJECT_NOISE * torch.randn(b, 3, s, s, generator=g)
    images = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images, shape.long(), torch.ones(b, dtype=torch.long)


@dataclass
class _Layout:
    cls: torch.Tensor  # (b, 1 + D) int64 shape of each object (slot 0 = main)
    cx: torch.Tensor  # (b, 1 + D) centre x in pixels
    cy: torch.Tensor  # (b, 1 + D) centre y in pixels
    r: torch.Tensor  # (b, 1 + D) size in pixels
    active: torch.Tensor  # (b, 1 + D) float 1/0: is the object drawn


def _sample_layout(
    shape: torch.Tensor, n_distr: torch.Tensor, s: int, scale: float, d: int, g: torch.Generator
) -> _Layout:
    """Place the main object and ``n_distr`` non-overlapping distractors per image.

    Each distractor slot draws ``_CANDIDATES`` candidates and takes the first that keeps clear of
    the objects already placed; an image whose active slot finds none is laid out again.
    """
    b = shape.shape[0]
    lay = _Layout(
        cls=torch.zeros(b, 1 + d, dtype=torch.long),
        cx=torch.zeros(b, 1 + d),
        cy=torch.zeros(b, 1 + d),
        r=torch.ones(b, 1 + d),
        active=torch.zeros(b, 1 + d),
    )
    todo = torch.arange(b)
    for _attempt in range(100):
        m = todo.shape[0]
        cls = torch.zeros(m, 1 + d, dtype=torch.long)
        cx, cy, r = torch.zeros(m, 1 + d), torch.zeros(m, 1 + d), torch.ones(m, 1 + d)
        cls[:, 0] = shape[todo]
        r[:, 0] = _uniform(g, *_MAIN_R, m) * scale
        rad = r[:, 0] * _EXTENT[cls[:, 0]]  # bounding radius
        cx[:, 0] = rad + (s - 2 * rad) * torch.rand(m, generator=g)
        cy[:, 0] = rad + (s - 2 * rad) * torch.rand(m, generator=g)
        ok = torch.ones(m, dtype=torch.bool)
        for j in range(1, d + 1):
            c_cls = torch.randint(len(SHAPES), (m, _CANDIDATES), generator=g)
            c_r = _uniform(g, *_DISTRACTOR_R, m, _CANDIDATES) * scale
            c_rad = c_r * _EXTENT[c_cls]
            c_x = c_rad + (s - 2 * c_rad) * torch.rand(m, _CANDIDATES, generator=g)
            c_y = c_rad + (s - 2 * c_rad) * torch.rand(m, _CANDIDATES, generator=g)
            clear = torch.ones(m, _CANDIDATES, dtype=torch.bool)
            for k in range(j):  # keep clear of objects 0..j-1
                k_rad = r[:, k : k + 1] * _EXTENT[cls[:, k : k + 1]]
                dist = torch.hypot(c_x - cx[:, k : k + 1], c_y - cy[:, k : k + 1])
                far = dist >= c_rad + k_rad + _GAP * scale
                clear &= far | (k > 0) & (n_distr[todo][:, None] < k)  # inactive slots don't block
            first = clear.float().argmax(dim=1)  # (m,) first clear candidate (0 if none)
            pick = first[:, None]
            cls[:, j] = c_cls.gather(1, pick)[:, 0]
            r[:, j] = c_r.gather(1, pick)[:, 0]
            cx[:, j] = c_x.gather(1, pick)[:, 0]
            cy[:, j] = c_y.gather(1, pick)[:, 0]
            needed = n_distr[todo] >= j
            ok &= ~needed | clear.any(dim=1)
        idx = todo[ok]
        lay.cls[idx], lay.cx[idx], lay.cy[idx], lay.r[idx] = cls[ok], cx[ok], cy[ok], r[ok]
        todo = todo[~ok]
        if todo.numel() == 0:
            break
    else:  # pragma: no cover - the layout constraints leave ample room
        raise RuntimeError(f"embedded: could not lay out {todo.numel()} scenes")
    slots = torch.arange(1 + d)[None, :]
    lay.active = (slots <= n_distr[:, None]).float()
    return lay


def _gradient_t(x: torch.Tensor, y: torch.Tensor, s: int, direction: torch.Tensor) -> torch.Tensor:
    """Position along the background gradient in [0, 1]; direction (b,2) unit vectors."""
    dx, dy = direction[:, 0, None, None], direction[:, 1, None, None]
    t = ((x - s / 2) * dx + (y - s / 2) * dy) / (s * math.sqrt(0.5)) + 0.5
    return t.clamp(0.0, 1.0)


def _background(
    b: int, s: int, xs: torch.Tensor, ys: torch.Tensor, plain: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backgrounds. Returns (bg (b,3,s,s), colour lo (b,3), colour hi (b,3), dir (b,2))."""
    lo = torch.rand(b, 3, generator=g)
    hi = lo + _uniform(g, 0.2, 0.8, b, 1) * (torch.rand(b, 3, generator=g) - lo)
    phi = _uniform(g, 0.0, 2 * math.pi, b)
    direction = torch.stack([phi.cos(), phi.sin()], dim=1)
    if plain:
        return lo[:, :, None, None].expand(b, 3, s, s).clone(), lo, lo, direction
    t = _gradient_t(xs[None], ys[None], s, direction)  # (b,s,s)
    bg = lo[:, :, None, None] + (hi - lo)[:, :, None, None] * t[:, None]
    # Low-frequency colour blotches.
    blot = torch.randn(b, 3, 4, 4, generator=g) * _uniform(g, 0.0, 0.12, b, 1, 1, 1)
    up = _upsample_matrix(4, s)  # (s,4): bilinear upsampling as two small matmuls
    bg = bg + up @ blot @ up.T
    # A faint grating on about half of the images (straight edges that are not objects).
    on = (torch.rand(b, generator=g) < 0.5).float() * _uniform(g, 0.03, 0.1, b)
    psi = _uniform(g, 0.0, math.pi, b)[:, None, None]
    freq = _uniform(g, 1.5, 5.0, b)[:, None, None] * 2 * math.pi / s
    phase = _uniform(g, 0.0, 2 * math.pi, b)[:, None, None]
    wave = torch.sin(freq * (xs[None] * psi.cos() + ys[None] * psi.sin()) + phase)  # (b,s,s)
    tint = torch.rand(b, 3, generator=g) * 2 - 1
    bg = bg + (on[:, None] * tint)[:, :, None, None] * wave[:, None]
    return bg, lo, hi, direction


@functools.lru_cache(maxsize=4)
def _upsample_matrix(n: int, s: int) -> torch.Tensor:
    """(s, n) matrix of bilinear weights (half-pixel centres, edges clamped) from n to s samples."""
    pos = ((torch.arange(s) + 0.5) * n / s - 0.5).clamp(0.0, n - 1.0)  # source coordinate
    lo = pos.floor().long().clamp(max=n - 2)
    frac = pos - lo
    m = torch.zeros(s, n)
    m[torch.arange(s), lo] = 1.0 - frac
    m[torch.arange(s), lo + 1] = frac
    return m


def _contrasting_colour(local_bg: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random colours (b,3), the first of 8 candidates far enough from ``local_bg`` (b,3)."""
    cand = torch.rand(local_bg.shape[0], 8, 3, generator=g)
    dist = (cand - local_bg[:, None]).norm(dim=2)  # (b,8)
    far = dist >= _MIN_CONTRAST
    pick = torch.where(far.any(dim=1), far.float().argmax(dim=1), dist.argmax(dim=1))
    return cand[torch.arange(cand.shape[0]), pick]


def _object_mask(
    cls: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    r: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    g: torch.Generator,
    rotation: tuple[float, float] = (0.0, 2 * math.pi),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anti-aliased coverage (b,s,s) of one object per image, and a shading field (b,s,s).

    ``rotation``: the range (radians) the object's angle is drawn from.
    """
    b = cls.shape[0]
    theta = _uniform(g, *rotation, b)[:, None, None]
    shade_amp = _uniform(g, -0.2, 0.2, b)[:, None, None]
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    rr = r[:, None, None]
    u = (theta.cos() * dx + theta.sin() * dy) / rr  # (b,s,s) object-frame coordinates
    v = (-theta.sin() * dx + theta.cos() * dy) / rr
    sdf = torch.empty_like(u)
    for k, fn in enumerate(_SDFS):
        sel = cls == k
        if bool(sel.any()):
            sdf[sel] = fn(u[sel], v[sel])
    alpha = (0.5 - sdf * rr).clamp(0.0, 1.0)  # distance in pixels -> coverage
    return alpha, shade_amp * u.clamp(-1.0, 1.0)


def _box(u: torch.Tensor, v: torch.Tensor, hu: float, hv: float) -> torch.Tensor:
    qu, qv = u.abs() - hu, v.abs() - hv
    outside = torch.hypot(qu.clamp_min(0.0), qv.clamp_min(0.0))
    return outside + torch.maximum(qu, qv).clamp_max(0.0)


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _box(u, v, 0.7, 0.7)


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.hypot(u, v) - 0.8


_TRI_NORMALS = [
    (math.cos(a), math.sin(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))
]


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral, circumradius 1.1: intersection of three half-planes at the inradius 0.55.
    d = [nu * u + nv * v for nu, nv in _TRI_NORMALS]
    return torch.maximum(torch.maximum(d[0], d[1]), d[2]) - 0.55


def _plus(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95))


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (torch.hypot(u, v) - 0.7).abs() - 0.2


_SDFS = (_square, _circle, _triangle, _plus, _ring)
