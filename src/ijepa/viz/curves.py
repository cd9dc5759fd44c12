"""Training curves from a run's ``metrics.jsonl``: loss, schedules and the collapse monitors."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ijepa.diagnostics import DEFAULT_RANK_THRESHOLD, DEFAULT_STD_THRESHOLD
from ijepa.errors import UsageError
from ijepa.viz.common import new_figure, save_figure

__all__ = ["PANELS", "read_metrics", "save_curves_figure"]

logger = logging.getLogger(__name__)

#: (record key, panel title, alarm threshold or None), in drawing order.
PANELS: tuple[tuple[str, str, float | None], ...] = (
    ("loss", "loss", None),
    ("lr", "learning rate", None),
    ("wd", "weight decay", None),
    ("momentum", "EMA momentum", None),
    ("target_std", "target feature std", DEFAULT_STD_THRESHOLD),
    ("probe_rank", "effective rank (probe)", DEFAULT_RANK_THRESHOLD),
)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (one JSON object per line; blank lines are skipped).

    Raises:
        UsageError: the file does not exist, or a line is not a JSON object (the message names
            file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"metrics file not found: {path}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(rec, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return records


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, rec in enumerate(records):
        value = rec.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        xs.append(float(rec.get("step", i)))
        ys.append(float(value))
    return xs, ys


def save_curves_figure(
    records: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "training curves"
) -> list[str]:
    """Plot every known metric present in ``records`` against the step, as a PNG.

    The collapse monitors (``target_std``, ``probe_rank``) get their alarm threshold as a dashed
    line.

    Args:
        records: metric dicts with ``step`` and any of the :data:`PANELS` keys.
        path: output PNG.
        title: figure title.

    Returns:
        The keys that were drawn.

    Raises:
        ValueError: no record holds any known metric.
    """
    panels = [(k, t, thr) for k, t, thr in PANELS if _series(records, k)[0]]
    if not panels:
        raise UsageError(
            f"no plottable metrics: none of {[k for k, _, _ in PANELS]} found in {len(records)} records"
        )
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(3.6 * cols, 2.6 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (key, name, threshold) in zip(axes.flat, panels, strict=False):
        xs, ys = _series(records, key)
        ax.plot(xs, ys, color="#1f77b4", linewidth=1.4, marker="." if len(xs) < 30 else None)
        if threshold is not None:
            ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label="alarm")
            ax.legend(fontsize=7, frameon=False)
        if key == "loss" and all(y > 0 for y in ys) and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    logger.info("wrote curves figure %s", path)
    return [k for k, _, _ in panels]
