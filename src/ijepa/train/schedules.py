"""Learning-rate, weight-decay and EMA-momentum schedules as pure functions of the step.

Resuming needs nothing but the step number. Conventions (official code): LR and WD for the
optimizer step with 0-based index ``k`` are evaluated at ``k + 1``; the EMA update after step ``k``
uses the momentum at ``k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def warmup_cosine_lr(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    start_lr: float,
    ref_lr: float,
    final_lr: float,
) -> float:
    """Linear warm-up from ``start_lr`` to ``ref_lr``, then cosine decay to ``final_lr``.

    Past ``total_steps`` the value stays at ``final_lr``.
    """
    if step < warmup_steps:
        return start_lr + (ref_lr - start_lr) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_lr + (ref_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_wd(step: int, *, total_steps: int, ref_wd: float, final_wd: float) -> float:
    """Cosine schedule from ``ref_wd`` (step 0) to ``final_wd`` (``total_steps``)."""
    progress = min(1.0, step / max(1, total_steps))
    return final_wd + (ref_wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_momentum(step: int, *, total_steps: int, start: float, end: float) -> float:
    """EMA momentum, linear from ``start`` at step 0 to ``end`` at ``total_steps``."""
    progress = min(1.0, step / max(1, total_steps))
    return start + (end - start) * progress


@dataclass(frozen=True)
class Schedules:
    """All three schedules of a run, resolved to step counts."""

    total_steps: int
    warmup_steps: int
    start_lr: float
    ref_lr: float
    final_lr: float
    ref_wd: float
    final_wd: float
    ema_start: float
    ema_end: float

    def at(self, step: int) -> dict[str, float]:
        """``lr``, ``wd`` and ``momentum`` of step ``step`` (the keywords of ``train_step``)."""
        return {"lr": self.lr(step), "wd": self.wd(step), "momentum": self.momentum(step)}

    def lr(self, step: int) -> float:
        """LR for the optimizer step with 0-based index ``step``."""
        return warmup_cosine_lr(
            step + 1,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            start_lr=self.start_lr,
            ref_lr=self.ref_lr,
            final_lr=self.final_lr,
        )

    def wd(self, step: int) -> float:
        """Weight decay for the optimizer step with 0-based index ``step``."""
        return cosine_wd(
            step + 1, total_steps=self.total_steps, ref_wd=self.ref_wd, final_wd=self.final_wd
        )

    def momentum(self, step: int) -> float:
        """EMA momentum applied after the optimizer step with 0-based index ``step``."""
        return linear_momentum(
            step, total_steps=self.total_steps, start=self.ema_start, end=self.ema_end
        )


def build_schedules(
    *,
    iterations_per_epoch: int,
    epochs: int,
    ipe_scale: float,
    warmup_epochs: float,
    start_lr: float,
    lr: float,
    final_lr: float,
    weight_decay: float,
    final_weight_decay: float,
    ema: tuple[float, float],
) -> Schedules:
    """Resolve epoch-based settings into a :class:`Schedules` (official ``ipe_scale`` semantics)."""
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
    total = int(epochs * ipe_scale * iterations_per_epoch)
    return Schedules(
        total_steps=max(1, total),
        warmup_steps=round(warmup_epochs * iterations_per_epoch),
        start_lr=start_lr,
        ref_lr=lr,
        final_lr=final_lr,
        ref_wd=weight_decay,
        final_wd=final_weight_decay,
        ema_start=ema[0],
        ema_end=ema[1],
    )
