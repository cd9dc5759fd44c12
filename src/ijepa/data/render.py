"""Drawing primitives of the embedded data set: shapes as signed distance fields, backgrounds.

Everything works on a chunk of ``b`` images at once, on float tensors in ``[0, 1]``; objects are
anti-aliased coverage masks computed from a signed distance function on the pixel grid (no
per-shape PIL calls). All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import functools
import math

import torch

#: Shape classes, index = label.
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "plus", "ring")

# Circumradius of each unit shape (radius of its bounding circle, in units of the object size);
# used for layout. The shapes' areas lie within 1.6-2.0 (units^2) so area says little of class.
EXTENT = torch.tensor([0.99, 0.80, 1.10, 1.00, 0.90])

#: Minimum RGB distance between an object and the background under it.
MIN_CONTRAST = 0.45


def uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def gradient_t(x: torch.Tensor, y: torch.Tensor, s: int, direction: torch.Tensor) -> torch.Tensor:
    """Position along the background gradient in [0, 1]; direction (b,2) unit vectors."""
    dx, dy = direction[:, 0, None, None], direction[:, 1, None, None]
    t = ((x - s / 2) * dx + (y - s / 2) * dy) / (s * math.sqrt(0.5)) + 0.5
    return t.clamp(0.0, 1.0)


def background(
    b: int, s: int, xs: torch.Tensor, ys: torch.Tensor, plain: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backgrounds. Returns (bg (b,3,s,s), colour lo (b,3), colour hi (b,3), dir (b,2))."""
    lo = torch.rand(b, 3, generator=g)
    hi = lo + uniform(g, 0.2, 0.8, b, 1) * (torch.rand(b, 3, generator=g) - lo)
    phi = uniform(g, 0.0, 2 * math.pi, b)
    direction = torch.stack([phi.cos(), phi.sin()], dim=1)
    if plain:
        return lo[:, :, None, None].expand(b, 3, s, s).clone(), lo, lo, direction
    t = gradient_t(xs[None], ys[None], s, direction)  # (b,s,s)
    bg = lo[:, :, None, None] + (hi - lo)[:, :, None, None] * t[:, None]
    # Low-frequency colour blotches.
    blot = torch.randn(b, 3, 4, 4, generator=g) * uniform(g, 0.0, 0.12, b, 1, 1, 1)
    up = upsample_matrix(4, s)  # (s,4): bilinear upsampling as two small matmuls
    bg = bg + up @ blot @ up.T
    # A faint grating on about half of the images (straight edges that are not objects).
    on = (torch.rand(b, generator=g) < 0.5).float() * uniform(g, 0.03, 0.1, b)
    psi = uniform(g, 0.0, math.pi, b)[:, None, None]
    freq = uniform(g, 1.5, 5.0, b)[:, None, None] * 2 * math.pi / s
    phase = uniform(g, 0.0, 2 * math.pi, b)[:, None, None]
    wave = torch.sin(freq * (xs[None] * psi.cos() + ys[None] * psi.sin()) + phase)  # (b,s,s)
    tint = torch.rand(b, 3, generator=g) * 2 - 1
    bg = bg + (on[:, None] * tint)[:, :, None, None] * wave[:, None]
    return bg, lo, hi, direction


@functools.lru_cache(maxsize=4)
def upsample_matrix(n: int, s: int) -> torch.Tensor:
    """(s, n) matrix of bilinear weights (half-pixel centres, edges clamped) from n to s samples."""
    pos = ((torch.arange(s) + 0.5) * n / s - 0.5).clamp(0.0, n - 1.0)  # source coordinate
    lo = pos.floor().long().clamp(max=n - 2)
    frac = pos - lo
    m = torch.zeros(s, n)
    m[torch.arange(s), lo] = 1.0 - frac
    m[torch.arange(s), lo + 1] = frac
    return m


def contrasting_colour(local_bg: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random colours (b,3), the first of 8 candidates far enough from ``local_bg`` (b,3)."""
    cand = torch.rand(local_bg.shape[0], 8, 3, generator=g)
    dist = (cand - local_bg[:, None]).norm(dim=2)  # (b,8)
    far = dist >= MIN_CONTRAST
    pick = torch.where(far.any(dim=1), far.float().argmax(dim=1), dist.argmax(dim=1))
    return cand[torch.arange(cand.shape[0]), pick]


def object_mask(
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
    theta = uniform(g, *rotation, b)[:, None, None]
    shade_amp = uniform(g, -0.2, 0.2, b)[:, None, None]
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
