"""The masking strategies of the I-JEPA paper's ablation, beside multi-block, and a factory.

The paper (Assran et al. 2023, "Masking strategy" ablation) compares its multi-block masking with
three others, each with the context being the complement of the targets:

* ``random``: the targets are a random set of patches, 60 % of the grid (one target "block"
  that is scattered); the context is the other 40 %. The official repository's unused
  ``masks/random.py`` draws the masked fraction per batch from (0.4, 0.6); pass
  ``ratio=(0.4, 0.6)`` for that.
* ``block``: one large target block of 60 % of the grid (aspect ratio drawn like multi-block
  targets, in (0.75, 1.5)); the context is everything else.
* ``raster``: the grid is split into four quadrants; one quadrant (chosen at random per image)
  is the context and the other three are three target blocks.

Every sampler here has the interface of :class:`~ijepa.masks.MultiBlockMaskGenerator`:
``sampler(batch_size, generator) -> (masks_enc (1, B, Kc), masks_pred (npred, B, Kt))`` with
ascending int64 indices into the flattened grid, a ``stats`` attribute, ``nenc``, ``npred``,
``input_size``, ``strategy`` and ``pad``. All randomness comes from the generator passed to each
call. Rows of different lengths (raster quadrants of an odd grid) are equalised like the
multi-block sampler's contexts: subsampled to the shortest, or with ``pad=True`` padded with -1.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ijepa.masks.blocks import block_grid, default_block_size, draw_corners
from ijepa.masks.multiblock import MultiBlockMaskGenerator
from ijepa.masks.pack import pack_grids
from ijepa.masks.settings import MaskSamplingError, MaskStats

__all__ = [
    "STRATEGIES",
    "BlockMaskGenerator",
    "MaskSampler",
    "RandomMaskGenerator",
    "RasterMaskGenerator",
    "make_mask_sampler",
]

STRATEGIES = ("multiblock", "random", "block", "raster")
"""The names ``make_mask_sampler`` (and the ``mask.strategy`` config key) accept."""


class MaskSampler(Protocol):
    """What the training loop and the collator need from a mask sampler."""

    strategy: str
    stats: MaskStats | None

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def nenc(self) -> int: ...

    @property
    def npred(self) -> int: ...

    @property
    def pad(self) -> bool: ...

    def __call__(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def _grid(input_size: int | tuple[int, int], name: str) -> tuple[int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in size):
        raise ValueError(f"{name}: input_size must be an int or a pair (H, W), got {input_size!r}")
    if size[0] < 2 or size[1] < 2:
        raise MaskSamplingError(f"{name}: the patch grid {size} must be at least 2x2")
    return size[0], size[1]


def _fraction_pair(name: str, value: Any) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (min, max) of numbers, got {value!r}") from err
    if not 0.0 < a <= b < 1.0:
        raise ValueError(f"{name}={value!r} must satisfy 0 < min <= max < 1")
    return a, b


def _check_call(batch_size: int, generator: torch.Generator) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _equal_stats(kc: int, kt: int) -> MaskStats:
    return MaskStats(
        context_keep=kc,
        target_keep=kt,
        context_mean=float(kc),
        target_mean=float(kt),
        context_dropped=0.0,
        size_draws=1,
        position_rounds=1,
    )


class _Sampler:
    """Shared state of the ablation samplers: grid, padding choice, last statistics."""

    strategy = ""
    _npred = 1

    def __init__(self, input_size: int | tuple[int, int], pad: bool) -> None:
        self._size = _grid(input_size, f"{self.strategy} masks")
        self._pad = bool(pad)
        self.stats: MaskStats | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """The patch grid ``(H, W)``."""
        return self._size

    @property
    def nenc(self) -> int:
        """Context masks per image (always 1: the context is the targets' complement)."""
        return 1

    @property
    def npred(self) -> int:
        """Target masks per image."""
        return self._npred

    @property
    def pad(self) -> bool:
        """Whether rows of different lengths are padded with -1 (else subsampled)."""
        return self._pad


class RandomMaskGenerator(_Sampler):
    """Random-patch masking: a random ``ratio`` of the patches are targets, the rest context.

    Args:
        input_size: Patch grid ``(H, W)`` or an int for a square grid; at least 2x2.
        ratio: ``(min, max)`` fraction of the grid that is target; one value per batch is drawn
            uniformly from it (the paper's ablation: 0.6; the official file: (0.4, 0.6)).
        min_keep: The context keeps at least ``max(min_keep, 1)`` patches.
        pad: Accepted for a uniform interface; every row already has the batch's length.
    """

    strategy = "random"

    def __init__(
        self,
        input_size: int | tuple[int, int] = (14, 14),
        ratio: tuple[float, float] = (0.6, 0.6),
        min_keep: int = 1,
        pad: bool = False,
    ) -> None:
        super().__init__(input_size, pad)
        self.ratio = _fraction_pair("ratio", ratio)
        self.min_keep = int(min_keep)
        n = self._size[0] * self._size[1]
        if self._split(self.ratio[1])[0] < max(self.min_keep, 1):
            raise MaskSamplingError(
                f"random masks: a target ratio of {self.ratio[1]} leaves the context of the "
                f"{n}-patch grid fewer than min_keep={self.min_keep} patches"
            )

    def _split(self, ratio: float) -> tuple[int, int]:
        """``(context, target)`` patch counts for a target ratio; both at least 1."""
        n = self._size[0] * self._size[1]
        target = min(max(round(n * ratio), 1), n - 1)
        return n - target, target

    def __repr__(self) -> str:
        return f"RandomMaskGenerator(input_size={self._size}, ratio={self.ratio})"

    def __call__(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(1, B, Kc)`` and ``(1, B, Kt)`` with ``Kc + Kt = H*W``, disjoint, ascending."""
        _check_call(batch_size, generator)
        lo, hi = self.ratio
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        keep, _ = self._split(lo + u * (hi - lo))
        n = self._size[0] * self._size[1]
        order = torch.rand((batch_size, n), generator=generator).argsort(dim=-1)  # (B, N)
        ctx = order[:, :keep].sort(dim=-1).values  # (B, Kc)
        tgt = order[:, keep:].sort(dim=-1).values  # (B, Kt)
        self.stats = _equal_stats(ctx.shape[-1], tgt.shape[-1])
        return ctx[None], tgt[None]


class BlockMaskGenerator(_Sampler):
    """Single-block masking: one large target block, the context is its complement.

    Args:
        input_size: Patch grid ``(H, W)`` or an int; at least 2x2.
        scale: ``(min, max)`` fraction of the grid covered by the target block (paper: 0.6).
        aspect_ratio: ``(min, max)`` aspect ratio ``h / w`` of the block.
        min_keep: The context keeps at least ``max(min_keep, 1)`` patches.
        pad: Accepted for a uniform interface; one block size per batch gives equal rows.
    """

    strategy = "block"

    def __init__(
        self,
        input_size: int | tuple[int, int] = (14, 14),
        scale: tuple[float, float] = (0.6, 0.6),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        min_keep: int = 1,
        pad: bool = False,
    ) -> None:
        super().__init__(input_size, pad)
        self.scale = _fraction_pair("scale", scale)
        lo, hi = (float(v) for v in aspect_ratio)
        if not 0.0 < lo <= hi:
            raise ValueError(f"aspect_ratio={aspect_ratio!r} must satisfy 0 < min <= max")
        self.aspect_ratio = (lo, hi)
        self.min_keep = int(min_keep)
        H, W = self._size
        # no draw gives a block larger than (tallest side) x (widest side): scale at its
        # maximum, the height with the largest aspect ratio, the width with the smallest
        top = torch.tensor([self.scale[1]], dtype=torch.float64)
        big_h, _ = default_block_size(H * W, top, torch.tensor([hi], dtype=torch.float64), H, W)
        _, big_w = default_block_size(H * W, top, torch.tensor([lo], dtype=torch.float64), H, W)
        if H * W - int(big_h) * int(big_w) < max(self.min_keep, 1):
            raise MaskSamplingError(
                f"block masks: a target block of scale {self.scale[1]} leaves the context of "
                f"the {H}x{W} grid fewer than min_keep={self.min_keep} patches"
            )

    def __repr__(self) -> str:
        return (
            f"BlockMaskGenerator(input_size={self._size}, scale={self.scale}, "
            f"aspect_ratio={self.aspect_ratio})"
        )

    def __call__(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(1, B, Kc)`` (the complement) and ``(1, B, h*w)`` (the block), ascending."""
        _check_call(batch_size, generator)
        H, W = self._size
        u = torch.rand(2, generator=generator, dtype=torch.float64)
        (slo, shi), (alo, ahi) = self.scale, self.aspect_ratio
        s = slo + u[0] * (shi - slo)
        a = alo + u[1] * (ahi - alo)
        h, w = default_block_size(H * W, s.view(1), a.view(1), H, W)  # one size per batch
        hb, wb = h.expand(batch_size), w.expand(batch_size)
        top, left = draw_corners(hb, wb, H, W, generator, inclusive=True)  # (B,)
        block = block_grid(top, left, hb, wb, H, W).reshape(batch_size, H * W)  # (B, N)
        k = int(h * w)
        # every row has exactly k (resp. N - k) members: nonzero returns them in row order
        tgt = block.nonzero()[:, 1].view(batch_size, k)
        ctx = (~block).nonzero()[:, 1].view(batch_size, H * W - k)
        self.stats = _equal_stats(H * W - k, k)
        return ctx[None], tgt[None]


class RasterMaskGenerator(_Sampler):
    """Rasterized masking: four quadrants, one the context, the other three the targets.

    Quadrant rows are ``[0, H//2)`` and ``[H//2, H)`` (columns likewise), so an odd grid has
    quadrants of different sizes; those rows are equalised per ``pad``.

    Args:
        input_size: Patch grid ``(H, W)`` or an int; at least 2x2.
        pad: Pad shorter masks with -1 instead of subsampling longer ones (odd grids only).
    """

    strategy = "raster"
    _npred = 3

    def __init__(self, input_size: int | tuple[int, int] = (14, 14), pad: bool = False) -> None:
        super().__init__(input_size, pad)
        H, W = self._size
        rows, cols = torch.arange(H)[:, None], torch.arange(W)[None, :]
        low_r, low_c = rows < H // 2, cols < W // 2
        self._quadrants = torch.stack(
            [low_r & low_c, low_r & ~low_c, ~low_r & low_c, ~low_r & ~low_c]
        )  # (4, H, W), row-major order: top-left, top-right, bottom-left, bottom-right

    def __repr__(self) -> str:
        return f"RasterMaskGenerator(input_size={self._size}, pad={self._pad})"

    def __call__(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(1, B, Kc)`` (one quadrant) and ``(3, B, Kt)`` (the others, in grid order)."""
        _check_call(batch_size, generator)
        pick = torch.randint(0, 4, (batch_size,), generator=generator)  # (B,) context quadrant
        others = torch.arange(4).expand(batch_size, 4)
        others = others[others != pick[:, None]].view(batch_size, 3)  # (B, 3) ascending
        ctx = self._quadrants[pick][None]  # (1, B, H, W)
        tgt = self._quadrants[others].transpose(0, 1)  # (3, B, H, W)
        masks_enc, cs = pack_grids(ctx, pad=self._pad, generator=generator)
        masks_pred, ts = pack_grids(tgt, pad=self._pad, generator=generator)
        self.stats = MaskStats(
            context_keep=cs.keep,
            target_keep=ts.keep,
            context_mean=cs.mean,
            target_mean=ts.mean,
            context_dropped=cs.dropped,
            size_draws=1,
            position_rounds=1,
            context_padding=cs.padding,
            target_padding=ts.padding,
            target_dropped=ts.dropped,
        )
        return masks_enc, masks_pred


def make_mask_sampler(
    strategy: str,
    input_size: int | tuple[int, int],
    *,
    pad: bool = False,
    min_keep: int = 1,
    aspect_ratio: tuple[float, float] = (0.75, 1.5),
    **multiblock: Any,
) -> MaskSampler:
    """The sampler of a named strategy, with the paper's settings for the ablation strategies.

    Args:
        strategy: One of :data:`STRATEGIES`.
        input_size: Patch grid ``(H, W)`` or an int.
        pad: Pad masks of different lengths with -1 instead of subsampling them.
        min_keep: Fewest context patches (see each sampler).
        aspect_ratio: Target aspect ratio range (``multiblock`` and ``block``).
        **multiblock: Further :class:`MultiBlockMaskGenerator` arguments (``enc_mask_scale``,
            ``pred_mask_scale``, ``nenc``, ``npred``, ``allow_overlap``, ``mode``,
            ``per_image_size``); ignored by the other strategies, which fix their own counts.

    Raises:
        ValueError: unknown strategy or bad settings.
        MaskSamplingError: settings that can never be met on this grid.
    """
    if strategy == "multiblock":
        return MultiBlockMaskGenerator(
            input_size, min_keep=min_keep, aspect_ratio=aspect_ratio, pad=pad, **multiblock
        )
    if strategy == "random":
        return RandomMaskGenerator(input_size, min_keep=min_keep, pad=pad)
    if strategy == "block":
        return BlockMaskGenerator(input_size, aspect_ratio=aspect_ratio, min_keep=min_keep, pad=pad)
    if strategy == "raster":
        return RasterMaskGenerator(input_size, pad=pad)
    raise ValueError(f"unknown mask strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
