"""The layouts of the embedded data set: how one chunk of images is composed and labelled.

- :func:`render_shapes` (``layout="shapes"``, the default): 4-7 grey objects of one shape class
  anywhere in the image, each at its own size, rotation and grey level, on a plain background.
- :func:`render_objects` (``layout="object"``): one large grey object near the centre.
- :func:`render_scenes` (``layout="scene"``): a main object and smaller distractor shapes.

Each takes a chunk size ``b``, the image side ``s`` and a ``torch.Generator``, and returns
``(images uint8 (b, 3, s, s), shape labels int64 (b,), object counts int64 (b,))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ijepa.data.render import (
    EXTENT,
    SHAPES,
    background,
    contrasting_colour,
    gradient_t,
    object_mask,
    uniform,
)

# Sizes ("radius" r in pixels at 32 px; scaled with image_size). Main objects are always larger.
_MAIN_R = (6.0, 9.0)
_DISTRACTOR_R = (2.5, 3.8)
_GAP = 1.5  # minimum free pixels between two objects' bounding circles
_CANDIDATES = 48  # position candidates drawn per distractor slot

# The object layout (sizes at 32 px, scaled with image_size): radius, centre offset, grey levels.
_OBJECT_R = (9.0, 12.0)
_OBJECT_OFFSET = 3.0  # the centre moves up to this many pixels along each axis
_OBJECT_ROTATION = 0.35  # radians either way (about 20 degrees): objects stay roughly upright
_OBJECT_BG = (0.0, 0.3)
_OBJECT_FG = (0.55, 1.0)
_OBJECT_SHADE = 1.5  # shading amplitude relative to the scene layout's
_OBJECT_NOISE = 0.03


def render_scenes(
    b: int, s: int, max_distractors: int, plain: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``b`` scenes of side ``s``. Returns uint8 (b,3,s,s), shapes (b,), counts (b,)."""
    scale = s / 32.0
    # Balanced labels within the chunk: shape of the main object and number of distractors.
    shape = torch.randperm(b, generator=g) % len(SHAPES)  # (b,)
    n_distr = torch.randperm(b, generator=g) % (max_distractors + 1)  # (b,)
    layout = _sample_layout(shape, n_distr, s, scale, max_distractors, g)

    ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")  # (s,s)
    bg, bg_lo, bg_hi, bg_dir = background(b, s, xs, ys, plain, g)  # bg (b,3,s,s)
    img = bg
    for slot in range(layout.cls.shape[1]):
        on = layout.active[:, slot].nonzero()[:, 0]  # images that draw this object
        cx, cy, r = layout.cx[on, slot], layout.cy[on, slot], layout.r[on, slot]
        # Background colour under the object's centre (gradient part only).
        t = gradient_t(cx[:, None, None], cy[:, None, None], s, bg_dir[on])[:, 0, 0]  # (m,)
        local_bg = bg_lo[on] + (bg_hi[on] - bg_lo[on]) * t[:, None]  # (m,3)
        colour = contrasting_colour(local_bg, g)  # (m,3)
        alpha, shade = object_mask(layout.cls[on, slot], cx, cy, r, xs, ys, g)  # (m,s,s) x2
        fill = colour[:, :, None, None] * (1.0 + shade[:, None])  # (m,3,s,s)
        sub = img[on]
        img[on] = sub + alpha[:, None] * (fill - sub)
    if not plain:
        img = img + uniform(g, 0.0, 0.05, b, 1, 1, 1) * torch.randn(b, 3, s, s, generator=g)
    images = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images, shape.long(), (n_distr + 1).long()


def render_objects(
    b: int, s: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``b`` object-layout images of side ``s``: uint8 (b,3,s,s), shapes (b,), ones (b,)."""
    scale = s / 32.0
    shape = torch.randperm(b, generator=g) % len(SHAPES)  # balanced within the chunk
    ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")  # (s,s)
    r = uniform(g, *_OBJECT_R, b) * scale
    cx = s / 2 + uniform(g, -_OBJECT_OFFSET, _OBJECT_OFFSET, b) * scale
    cy = s / 2 + uniform(g, -_OBJECT_OFFSET, _OBJECT_OFFSET, b) * scale
    turn = (-_OBJECT_ROTATION, _OBJECT_ROTATION)
    alpha, shade = object_mask(shape, cx, cy, r, xs, ys, g, rotation=turn)  # (b,s,s) x2
    bg = uniform(g, *_OBJECT_BG, b)[:, None, None]
    fg = uniform(g, *_OBJECT_FG, b)[:, None, None] * (1.0 + _OBJECT_SHADE * shade)
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
        r[:, 0] = uniform(g, *_MAIN_R, m) * scale
        rad = r[:, 0] * EXTENT[cls[:, 0]]  # bounding radius
        cx[:, 0] = rad + (s - 2 * rad) * torch.rand(m, generator=g)
        cy[:, 0] = rad + (s - 2 * rad) * torch.rand(m, generator=g)
        ok = torch.ones(m, dtype=torch.bool)
        for j in range(1, d + 1):
            c_cls = torch.randint(len(SHAPES), (m, _CANDIDATES), generator=g)
            c_r = uniform(g, *_DISTRACTOR_R, m, _CANDIDATES) * scale
            c_rad = c_r * EXTENT[c_cls]
            c_x = c_rad + (s - 2 * c_rad) * torch.rand(m, _CANDIDATES, generator=g)
            c_y = c_rad + (s - 2 * c_rad) * torch.rand(m, _CANDIDATES, generator=g)
            clear = torch.ones(m, _CANDIDATES, dtype=torch.bool)
            for k in range(j):  # keep clear of objects 0..j-1
                k_rad = r[:, k : k + 1] * EXTENT[cls[:, k : k + 1]]
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


# The shapes layout (sizes at 32 px, scaled with image_size).
_SHAPES_COUNT = (4, 7)  # objects per image (inclusive), all of the image's one class
_SHAPES_R = (3.5, 5.5)  # object size; its bounding radius is 0.8-1.1 of it (EXTENT)
_SHAPES_CONTRAST = (0.3, 0.6)  # |object - background| grey level, the sign where it fits
_SHAPES_NOISE = 0.05  # pixel noise std, drawn per image in [0, this]


def render_shapes(
    b: int, s: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``b`` shapes-layout images of side ``s``: uint8 (b,3,s,s), shapes (b,), counts (b,).

    Each image shows 4 to 7 objects of one shape class (the label, balanced within the chunk) on
    a plain grey background. Every object has its own position (anywhere it fits, overlaps
    allowed), size, rotation (any angle) and grey level (a contrast of 0.3-0.6 to the
    background, lighter or darker), all drawn independently of the class; the background level
    and the pixel noise vary per image. So where the pixels fall, and how bright they are, says
    nothing of the class: only the objects' shape does, and every object in the image shows it.
    """
    scale = s / 32.0
    shape = torch.randperm(b, generator=g) % len(SHAPES)  # (b,)
    ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")  # (s,s)
    level = torch.rand(b, 3, generator=g).mean(dim=1)  # (b,) background grey, around 0.5
    img = level[:, None, None].expand(b, s, s).clone()
    count = torch.randint(_SHAPES_COUNT[0], _SHAPES_COUNT[1] + 1, (b,), generator=g)
    for k in range(_SHAPES_COUNT[1]):
        drawn = (count > k).float()[:, None, None]
        r = uniform(g, *_SHAPES_R, b) * scale
        rad = r * EXTENT[shape]
        cx = rad + (s - 2 * rad) * torch.rand(b, generator=g)
        cy = rad + (s - 2 * rad) * torch.rand(b, generator=g)
        delta = uniform(g, *_SHAPES_CONTRAST, b)
        lighter, darker = level + delta <= 1.0, level - delta >= 0.0
        coin = torch.rand(b, generator=g) < 0.5
        sign = torch.where(lighter & darker, coin, lighter).float() * 2 - 1
        grey = (level + sign * delta).clamp(0.0, 1.0)  # (b,)
        alpha, shade = object_mask(shape, cx, cy, r, xs, ys, g)  # (b,s,s) x2
        fill = grey[:, None, None] * (1.0 + shade)
        img = img + alpha * drawn * (fill - img)
    noise = uniform(g, 0.0, _SHAPES_NOISE, b)[:, None, None]
    img = img + noise * torch.randn(b, s, s, generator=g)
    images = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images[:, None].expand(b, 3, s, s).contiguous(), shape.long(), count.long()
