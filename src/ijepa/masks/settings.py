"""Validated settings of the multi-block sampler, its error type and its per-call statistics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SMALL_GRID",
    "SMALL_GRID_MIN_KEEP",
    "SMALL_GRID_TARGETS",
    "MaskSamplingError",
    "MaskSettings",
    "MaskStats",
]

MODES = ("default", "official")

#: ``mask.geometry=auto``: patch grids smaller than this on a side count as small: they get at
#: most :data:`SMALL_GRID_TARGETS` target blocks and ``min_keep`` at most
#: :data:`SMALL_GRID_MIN_KEEP`. The official scales were set for 14x14 and 16x16 grids.
SMALL_GRID = 14
SMALL_GRID_TARGETS = 2
SMALL_GRID_MIN_KEEP = 4


class MaskSamplingError(ValueError):
    """The mask settings cannot be met on this patch grid (raised instead of looping forever)."""


@dataclass(frozen=True)
class MaskStats:
    """Sizes sampled by the last call, for metrics.

    Attributes:
        context_keep: Patches per context mask as returned (``Kc``).
        target_keep: Patches per target mask as returned (``Kt``).
        context_mean: Mean context size before equalising lengths across the batch.
        target_mean: Mean target size before equalising lengths across the batch.
        context_dropped: Fraction of sampled context patches dropped to equalise lengths.
        size_draws: Block-size draws used (1 unless sizes had to be redrawn).
        position_rounds: Rounds of position sampling used, over all size draws.
        relaxed: Official mode: context masks accepted only after relaxing the target
            constraint (these may overlap targets). Always 0 in default mode.
        context_padding: With ``pad=True``: fraction of the returned context slots that are
            padding (-1); 0 otherwise.
        target_padding: The same for the target masks.
        target_dropped: Fraction of sampled target patches dropped to equalise lengths (per-image
            sizes, or raster quadrants of an odd grid, without ``pad``).
    """

    context_keep: int
    target_keep: int
    context_mean: float
    target_mean: float
    context_dropped: float
    size_draws: int
    position_rounds: int
    relaxed: int = 0
    context_padding: float = 0.0
    target_padding: float = 0.0
    target_dropped: float = 0.0


def _pair(name: str, value: object, low: float, high: float | None) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (min, max) of numbers, got {value!r}") from err
    if not (low < a <= b and (high is None or b <= high)):
        bound = f"{low} < min <= max" + ("" if high is None else f" <= {high}")
        raise ValueError(f"{name}={value!r} must satisfy {bound}")
    return a, b


def _int(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


@dataclass(frozen=True)
class MaskSettings:
    """The sampler's settings, checked on construction (see ``MultiBlockMaskGenerator``)."""

    height: int
    width: int
    enc_mask_scale: tuple[float, float]
    pred_mask_scale: tuple[float, float]
    aspect_ratio: tuple[float, float]
    nenc: int
    npred: int
    min_keep: int
    allow_overlap: bool
    mode: str
    per_image_size: bool
    max_tries: int
    pad: bool = False
    fixed_context: int = 0
    """Static shapes: every context mask has exactly this many patches (0: not fixed)."""
    fixed_target: int = 0
    """Static shapes: every target mask has exactly this many patches (0: not fixed)."""

    def __post_init__(self) -> None:
        _int("input_size[0]", self.height, 1)
        _int("input_size[1]", self.width, 1)
        object.__setattr__(
            self, "enc_mask_scale", _pair("enc_mask_scale", self.enc_mask_scale, 0.0, 1.0)
        )
        object.__setattr__(
            self, "pred_mask_scale", _pair("pred_mask_scale", self.pred_mask_scale, 0.0, 1.0)
        )
        object.__setattr__(
            self, "aspect_ratio", _pair("aspect_ratio", self.aspect_ratio, 0.0, None)
        )
        _int("nenc", self.nenc, 1)
        _int("npred", self.npred, 1)
        _int("min_keep", self.min_keep, 0)
        _int("max_tries", self.max_tries, 1)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        _int("fixed_context", self.fixed_context, 0)
        _int("fixed_target", self.fixed_target, 0)
        if (self.fixed_context or self.fixed_target) and (self.mode == "official" or self.pad):
            raise ValueError("fixed sizes are not available with mode='official' or pad=True")
        if self.per_image_size and self.mode == "official":
            raise ValueError(
                "per_image_size=True is not available with mode='official' (one size per batch)"
            )
        if self.pad and self.mode == "official":
            raise ValueError(
                "pad=True is not available with mode='official' (the official collator "
                "truncates every context to the batch's shortest)"
            )

    @property
    def input_size(self) -> tuple[int, int]:
        """The patch grid ``(H, W)``."""
        return self.height, self.width

    def describe(self) -> str:
        """All settings as ``name=value`` pairs, for messages."""
        return (
            f"input_size={self.input_size}, enc_mask_scale={self.enc_mask_scale}, "
            f"pred_mask_scale={self.pred_mask_scale}, aspect_ratio={self.aspect_ratio}, "
            f"nenc={self.nenc}, npred={self.npred}, min_keep={self.min_keep}, "
            f"allow_overlap={self.allow_overlap}, mode={self.mode!r}, "
            f"per_image_size={self.per_image_size}, max_tries={self.max_tries}, pad={self.pad}"
            + (
                f", fixed sizes {self.fixed_context}/{self.fixed_target}"
                if self.fixed_context or self.fixed_target
                else ""
            )
        )

    def error(self, why: str) -> MaskSamplingError:
        """A :class:`MaskSamplingError` that says why and names every setting."""
        return MaskSamplingError(
            f"cannot sample multi-block masks: {why} [{self.describe()}]; use a larger patch grid "
            "(bigger images or smaller patches), or lower min_keep, npred or pred_mask_scale"
        )
