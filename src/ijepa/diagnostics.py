"""Collapse monitors: is the representation still spread out, or has it collapsed?

Self-supervised training gives no accuracy to watch. These measures are cheap enough to compute
at every log interval (``feature_std``, ``effective_rank`` via ``probe_rank``) or at evaluation
time (``correlation_dimension``); :class:`CollapseMonitor` turns them into warnings.

* ``feature_std``: mean over feature dimensions of the std across samples. Zero when every
  sample has the same features (complete collapse). With ``normalize=True`` the features are
  first layer-normed without affine parameters, as I-JEPA's targets are; this is the
  ``target_std`` the training loop logs, and for it 1.0 is the value of isotropic features.
* ``effective_rank``: RankMe (Garrido et al., 2023): the exponential of the entropy of the
  normalised singular values of the ``(N, D)`` feature matrix. 1 for features on a single line,
  ``min(N, D)`` for a perfectly spread set.
* ``correlation_dimension``: the Grassberger–Procaccia estimate of the intrinsic dimension of a
  point cloud: the slope of ``log C(r)`` against ``log r``, where ``C(r)`` is the fraction of
  point pairs closer than ``r``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_RANK_THRESHOLD",
    "DEFAULT_STD_THRESHOLD",
    "CollapseMonitor",
    "collapse_message",
    "collapse_summary",
    "correlation_dimension",
    "effective_rank",
    "feature_std",
    "probe_rank",
]

logger = logging.getLogger(__name__)

#: Alarm level of the loop's ``target_std`` (layer-normed target features; 1.0 for isotropic
#: ones). Calibrated on real runs (``docs/recipes.md``, replayed in
#: ``tests/diagnostics/test_diagnostics_alarm.py``): runs whose trained encoder ended *below* its
#: random init fell to 0.13-0.15 within their first 300 steps (and an outside report of two
#: collapsed user runs says 0.057-0.15), while every run that learned stayed at or above 0.37
#: in every record (FMNIST, embedded, 1,000-2,400 steps).
DEFAULT_STD_THRESHOLD = 0.3
#: Alarm level of ``probe_rank`` (centred RankMe of pooled features of a fixed batch of up to 256
#: training images). Calibrated on the same runs: the collapsed ones sat at 2.5-3.4 from step
#: ~250 to the end; runs that learned dipped to 3.9-5.0 early at worst and ended at 4.8-35.
#: Random-init tiny ViTs give 14.6-23.4 on synthetic probes.
DEFAULT_RANK_THRESHOLD = 4.0


def _check_features(features: torch.Tensor, name: str, min_rows: int = 2) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f"{name}: features must be a 2-D tensor (N, D), got {shape}")
    if features.shape[0] < min_rows:
        raise ValueError(f"{name}: need at least {min_rows} samples, got {features.shape[0]}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name}: features contain NaN or inf values")
    return features.detach().to(torch.float64)


def feature_std(features: torch.Tensor, *, normalize: bool = False) -> float:
    """Mean per-dimension standard deviation across samples.

    Args:
        features: ``(N, D)`` features (pooled features or flattened tokens), ``N >= 2``.
        normalize: layer-norm every row first (no affine parameters, eps 1e-5), as I-JEPA's
            targets are; the result is then scale-free and equals the loop's ``target_std``.

    Returns:
        ``mean_d std_n features[n, d]`` (unbiased std), 0.0 for identical rows.
    """
    x = _check_features(features, "feature_std")
    if normalize:
        x = F.layer_norm(x, (x.shape[-1],))
    return float(x.std(dim=0).mean())


def effective_rank(features: torch.Tensor, *, center: bool = True, eps: float = 1e-9) -> float:
    """RankMe effective rank: ``exp(-sum_k p_k log p_k)`` with ``p_k = s_k / sum_j s_j``.

    ``s_k`` are the singular values of the feature matrix. RankMe uses the raw matrix; we centre
    it by default (``center=True``) because the mean direction that all samples share otherwise
    dominates: a random-init tiny ViT's pooled features measure 1.8 uncentred (so a threshold
    could not tell it from a collapse) but 11.6 centred, and a collapse to one point gives 0
    centred instead of 1.

    Args:
        features: ``(N, D)`` features, ``N >= 2``.
        center: subtract the mean row first.
        eps: a matrix whose singular values sum to less than ``eps`` times the features' scale
            (largest absolute entry, at least 1) counts as having no spread.

    Returns:
        A value in ``[1, min(N, D)]``, or 0.0 when there is no spread (all rows equal with
        ``center=True``, or an all-zero matrix).
    """
    x = _check_features(features, "effective_rank")
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    scale = max(1.0, float(features.detach().abs().max()))
    if float(total) <= eps * scale:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def correlation_dimension(
    features: torch.Tensor,
    *,
    max_points: int = 2000,
    quantiles: tuple[float, float] = (0.01, 0.2),
    num_radii: int = 12,
    seed: int = 0,
) -> float:
    """Grassberger–Procaccia correlation dimension of a point cloud.

    ``C(r)`` (fraction of pairs closer than ``r``) is evaluated at ``num_radii`` log-spaced radii
    between the ``quantiles`` of the pairwise distances (the small-scale range where the power
    law ``C(r) ~ r^d`` holds, above the noise floor set by the sample size), and ``d`` is the
    least-squares slope of ``log C`` against ``log r``. Like every estimate from finite samples it
    underestimates large dimensions (it needs about ``10^(d/2)`` points).

    Args:
        features: ``(N, D)`` points, ``N >= 10``.
        max_points: a random subset of this many points is used (pairwise distances are
            ``O(max_points^2)`` memory).
        quantiles: ``(low, high)`` fractions of the pair distances that bound the radii.
        num_radii: number of radii in the fit.
        seed: seed of the subsample.

    Returns:
        The estimated dimension (0.0 when all points coincide).
    """
    lo, hi = quantiles
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(
            f"correlation_dimension: quantiles must satisfy 0 < low < high < 1, got {quantiles}"
        )
    if num_radii < 2:
        raise ValueError(f"correlation_dimension: num_radii must be >= 2, got {num_radii}")
    x = _check_features(features, "correlation_dimension", min_rows=10)
    if x.shape[0] > max_points:
        gen = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=gen)[:max_points]]
    dist, _ = torch.pdist(x).sort()  # (n (n-1) / 2,) pair distances, ascending
    last = dist.numel() - 1
    r_lo, r_hi = float(dist[round(lo * last)]), float(dist[round(hi * last)])
    if r_hi <= 0.0:
        return 0.0
    r_lo = max(r_lo, r_hi * 1e-6)
    radii = torch.logspace(math.log10(r_lo), math.log10(r_hi), num_radii, dtype=dist.dtype)
    counts = torch.searchsorted(dist, radii, right=False).to(dist.dtype)
    keep = counts > 0
    if int(keep.sum()) < 2:
        return 0.0
    log_r = radii[keep].log()
    log_c = (counts[keep] / dist.numel()).log()
    log_r = log_r - log_r.mean()
    slope = (log_r * (log_c - log_c.mean())).sum() / (log_r * log_r).sum()
    return float(slope)


@torch.no_grad()
def probe_rank(encoder: nn.Module, images: torch.Tensor) -> float:
    """Effective rank of an encoder's average-pooled features on a fixed probe batch.

    The encoder runs in eval mode (its previous mode is restored) without gradients.

    Args:
        encoder: any module mapping ``(B, C, H, W)`` images to ``(B, N, D)`` tokens.
        images: the probe batch ``(B, C, H, W)``, already normalised, on the encoder's device.

    Returns:
        :func:`effective_rank` of the ``(B, D)`` pooled features.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        tokens = encoder(images)
    finally:
        encoder.train(was_training)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
        raise ValueError("probe_rank: encoder(images) must return tokens (B, N, D)")
    return effective_rank(tokens.float().mean(dim=1).cpu())


class CollapseMonitor:
    """Turns logged collapse measures into warnings (the collapse alarm).

    Call :meth:`update` with every metrics record. A measure that is present in the record and
    below its threshold (or not finite) yields a warning string. Warnings are returned on every
    such record (to show in a progress bar) but logged only when a measure first falls below its
    threshold and then every ``log_every`` records while it stays there; a recovery is logged at
    INFO level.

    Args:
        std_threshold: alarm level of ``record["target_std"]`` (see :data:`DEFAULT_STD_THRESHOLD`).
        rank_threshold: alarm level of ``record["probe_rank"]`` (see
            :data:`DEFAULT_RANK_THRESHOLD`).
        log_every: records between repeated log lines while a measure stays low.
        log: whether to log at all (the strings are returned either way).
    """

    #: record key -> human description, in the order warnings are reported.
    KEYS: tuple[tuple[str, str], ...] = (
        ("target_std", "target feature std"),
        ("probe_rank", "effective rank of pooled features"),
    )

    def __init__(
        self,
        std_threshold: float = DEFAULT_STD_THRESHOLD,
        rank_threshold: float = DEFAULT_RANK_THRESHOLD,
        *,
        log_every: int = 10,
        log: bool = True,
    ) -> None:
        if std_threshold < 0 or rank_threshold < 0:
            raise ValueError(
                f"CollapseMonitor thresholds must be >= 0, got std_threshold={std_threshold}, "
                f"rank_threshold={rank_threshold}"
            )
        if log_every < 1:
            raise ValueError(f"CollapseMonitor: log_every must be >= 1, got {log_every}")
        self.thresholds = {"target_std": float(std_threshold), "probe_rank": float(rank_threshold)}
        self.log_every = log_every
        self.log = log
        self._low_for: dict[str, int] = {key: 0 for key, _ in self.KEYS}

    @property
    def alarm(self) -> bool:
        """Whether any measure was below its threshold in the last record that carried it."""
        return any(count > 0 for count in self._low_for.values())

    def update(self, record: Mapping[str, Any]) -> list[str]:
        """Check one metrics record.

        Args:
            record: a metrics dict; the keys ``target_std`` and ``probe_rank`` are read when
                present (others are ignored), ``step`` is quoted in the messages.

        Returns:
            One warning string per measure below its threshold (empty when all is well).
        """
        warnings: list[str] = []
        step = record.get("step", "?")
        for key, what in self.KEYS:
            if key not in record or record[key] is None:
                continue
            value = float(record[key])
            threshold = self.thresholds[key]
            if math.isfinite(value) and value >= threshold:
                if self._low_for[key] and self.log:
                    logger.info("step %s: %s recovered to %.4g", step, what, value)
                self._low_for[key] = 0
                continue
            self._low_for[key] += 1
            message = (
                f"collapse alarm at step {step}: {what} ({key}) = {value:.4g} "
                f"< threshold {threshold:.4g}"
            )
            warnings.append(message)
            if self.log and (self._low_for[key] - 1) % self.log_every == 0:
                logger.warning("%s; the representation may be collapsing", message)
        return warnings


def collapse_summary(
    history: Sequence[Mapping[str, Any]],
    *,
    std_threshold: float = DEFAULT_STD_THRESHOLD,
    rank_threshold: float = DEFAULT_RANK_THRESHOLD,
) -> dict[str, Any]:
    """What a run's metrics records say about collapse, for end-of-run reports.

    Args:
        history: the run's metrics records in step order (``step``, ``target_std``,
            ``probe_rank``), as the training loop logs them.
        std_threshold, rank_threshold: the alarm levels.

    Returns:
        ``min_late_probe_rank`` / ``min_late_target_std``: the smallest values over the second
        half of the records (NaN when absent); ``final_probe_rank`` / ``final_target_std``;
        ``collapsed``: whether the last record is in alarm; ``collapse_step``: the step from which
        the alarm held without a break to the end (None when not collapsed).
    """
    monitor = CollapseMonitor(std_threshold, rank_threshold, log=False)
    in_alarm = [bool(monitor.update(rec)) for rec in history]
    collapse_step = None
    if in_alarm and in_alarm[-1]:
        i = len(in_alarm) - 1
        while i > 0 and in_alarm[i - 1]:
            i -= 1
        collapse_step = history[i].get("step")
    late = history[len(history) // 2 :]

    def smallest(key: str) -> float:
        values = [float(r[key]) for r in late if r.get(key) is not None]
        return min(values) if values else math.nan

    def final(key: str) -> float:
        values = [float(r[key]) for r in history if r.get(key) is not None]
        return values[-1] if values else math.nan

    return {
        "min_late_probe_rank": smallest("probe_rank"),
        "min_late_target_std": smallest("target_std"),
        "final_probe_rank": final("probe_rank"),
        "final_target_std": final("target_std"),
        "collapsed": collapse_step is not None,
        "collapse_step": collapse_step,
    }


#: What to try when a run collapsed (said at the end of training; see ``docs/recipes.md``).
COLLAPSE_ADVICE = (
    "try meta.regularizer=sigreg (an anti-collapse term), a predictor as wide as the encoder "
    "(meta.pred_emb_dim), meta.patch_init_std=0.2 for small patches, or an EMA start of 0.99 "
    "(optimization.ema); see docs/recipes.md"
)


def collapse_message(summary: Mapping[str, Any]) -> str:
    """One line for the end of a run, from :func:`collapse_summary`'s result."""
    rank, std = summary["final_probe_rank"], summary["final_target_std"]
    if summary["collapsed"]:
        return (
            f"COLLAPSED: the representation collapsed from step {summary['collapse_step']} to "
            f"the end (probe rank {rank:.1f}, target std {std:.3f} at the last record); "
            f"{COLLAPSE_ADVICE}"
        )
    return (
        f"no collapse: smallest probe rank over the second half of training "
        f"{summary['min_late_probe_rank']:.1f}, target std {summary['min_late_target_std']:.3f}"
    )
