"""Linear probing on cached frozen features: a grid of heads trained together.

The grid is every (feature entry, learning rate) pair, e.g. ``{"avg", "avg4"} x 4 lrs`` = 8
linear heads. Each feature entry is whitened (PCA, eigenvalues floored at 1e-3 of the largest;
``ijepa.eval.heads.whitener``) with the statistics of the training rows (the train split minus the
validation rows); entries wider than ``WHITEN_MAX_FEATURES``, entries with fewer than
``WHITEN_MIN_ROWS_PER_FEATURE`` training rows per feature, and ``whiten=False`` use per-feature
standardisation instead (the result's ``preprocess`` says which; why: ``ijepa.eval.heads``).
All heads see the same shuffled mini-batches in one pass per epoch; the loss is the sum of the heads' cross-entropies, so each head gets its own gradient.
Optimiser: AdamW (weight decay on the weights only) with a per-head learning rate on a cosine
schedule from ``lr`` to 0 over all steps (``ijepa.eval.heads``). Heads start at zero (the
problem is convex).

Model selection: a validation split carved from the train set (stratified: the same fraction of
every class, drawn with ``seed``) picks the head with the best validation top-1 (ties: lower
validation loss). Its test accuracy is reported, along with every head's validation and train
accuracy. With ``refit=True`` the chosen (entry, lr) is retrained on train + validation before
testing. The test set is never used for selection.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ijepa.eval.checks import check_features, check_split_labels, feature_keys
from ijepa.eval.heads import (
    WHITEN_MAX_FEATURES,
    WHITEN_MIN_ROWS_PER_FEATURE,
    HeadGrid,
    HeadScores,
    evaluate_heads,
    standardiser,
    train_heads,
    whitener,
)

logger = logging.getLogger(__name__)

#: Default learning-rate grid (AdamW on standardised features).
DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2)


def as_feature_dict(feats: Mapping[str, Tensor] | Tensor, name: str) -> dict[str, Tensor]:
    """Accept a single ``(N, F)`` tensor (named ``"features"``) or a dict of feature entries."""
    if isinstance(feats, Tensor):
        return {"features": feats}
    if not isinstance(feats, Mapping):
        raise ValueError(
            f"{name} must be a feature tensor or a dict of them, got {type(feats).__name__}"
        )
    return dict(feats)


def stratified_split(
    y: Tensor, val_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Split indices into train/validation with the same fraction of every class.

    A class with ``n >= 2`` examples gives ``min(n - 1, max(1, round(val_fraction * n)))``
    validation rows (so it keeps at least one training row); a class with one example gives none.

    Args:
        y: Labels int64, shape ``(N,)``.
        val_fraction: Fraction in ``[0, 1)``; 0 gives an empty validation split.
        generator: CPU generator for the per-class shuffles.

    Returns:
        ``(train_idx, val_idx)`` sorted int64 index tensors.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    y = y.cpu()
    if val_fraction == 0.0:
        return torch.arange(y.shape[0]), torch.empty(0, dtype=torch.long)
    val_parts = []
    for cls in torch.unique(y).tolist():
        members = torch.nonzero(y == cls).flatten()
        n = members.shape[0]
        if n < 2:
            continue
        n_val = min(n - 1, max(1, round(val_fraction * n)))
        val_parts.append(members[torch.randperm(n, generator=generator)[:n_val]])
    val_idx = torch.cat(val_parts).sort().values if val_parts else torch.empty(0, dtype=torch.long)
    is_val = torch.zeros(y.shape[0], dtype=torch.bool)
    is_val[val_idx] = True
    return torch.nonzero(~is_val).flatten(), val_idx


def whitens(features: int, rows: int, whiten: bool) -> bool:
    """Whether an entry of ``features`` columns fitted on ``rows`` rows is whitened.

    Only with ``whiten``, at most ``WHITEN_MAX_FEATURES`` features and at least
    ``WHITEN_MIN_ROWS_PER_FEATURE`` rows per feature; otherwise it is standardised.
    """
    return (
        whiten
        and features <= WHITEN_MAX_FEATURES
        and rows >= WHITEN_MIN_ROWS_PER_FEATURE * features
    )


def _transform(x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """``(x - mean) @ scale`` for a whitening matrix, ``(x - mean) / scale`` for per-feature std."""
    return (x - mean) @ scale if scale.dim() == 2 else (x - mean) / scale


def _prepare(
    feats: Mapping[str, Tensor],
    keys: Sequence[str],
    rows: Tensor,
    device: torch.device,
    whiten: bool = True,
) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor]]]:
    """Select ``rows`` of each entry, fit a whitener (or standardiser) on them and apply it."""
    out, stats = {}, {}
    for key in keys:
        x = feats[key][rows].to(device, torch.float32)
        fit = whitener if whitens(x.shape[1], x.shape[0], whiten) else standardiser
        stats[key] = fit(x)
        out[key] = _transform(x, *stats[key])
    return out, stats


def _apply(
    feats: Mapping[str, Tensor],
    keys: Sequence[str],
    rows: Tensor | None,
    stats: Mapping[str, tuple[Tensor, Tensor]],
    device: torch.device,
) -> dict[str, Tensor]:
    out = {}
    for key in keys:
        x = feats[key] if rows is None else feats[key][rows]
        out[key] = _transform(x.to(device, torch.float32), *stats[key])
    return out


def linear_probe(
    train: Mapping[str, Tensor] | Tensor,
    train_y: Tensor,
    test: Mapping[str, Tensor] | Tensor,
    test_y: Tensor,
    *,
    keys: Sequence[str] | None = None,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 30,
    batch_size: int = 1024,
    val_fraction: float = 0.1,
    weight_decay: float = 1e-4,
    refit: bool = False,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    whiten: bool = True,
) -> dict[str, Any]:
    """Train a grid of linear heads on frozen features and report the best head's test accuracy.

    Args:
        train: ``{key: (N_train, F_key)}`` (e.g. ``extract_features`` output; ``"labels"`` and
            3-D entries are ignored unless named in ``keys``) or one ``(N_train, F)`` tensor.
        train_y: Train labels, shape ``(N_train,)``.
        test: Same keys as ``train``, ``(N_test, F_key)`` each.
        test_y: Test labels, shape ``(N_test,)``.
        keys: Feature entries to probe; ``None`` uses every 2-D entry of ``train``.
        lrs: Peak AdamW learning rates; the grid is ``keys x lrs``.
        epochs: Passes over the training rows.
        batch_size: Rows per step.
        val_fraction: Fraction of every class held out for model selection. 0 is allowed only
            for a single-head grid (nothing to select).
        weight_decay: AdamW decoupled weight decay on the weights.
        refit: Retrain the chosen (key, lr) on train + validation rows before testing.
        num_classes: Number of classes; ``None`` infers ``max(label) + 1``.
        seed: Seeds the validation split and the shuffles.
        device: Where to train.
        whiten: PCA-whiten each entry that :func:`whitens` allows (default);
            ``False`` standardises every entry per feature (the earlier protocol).

    Returns:
        ``{"method": "linear", "top1", "top5" (test, chosen head, fractions), "best": {"pooling",
        "lr", "val_top1", "val_loss"}, "grid": [{"pooling", "lr", "train_top1", "val_top1",
        "val_loss"}, ...]}`` plus the settings and split sizes.
    """
    train_d, test_d = as_feature_dict(train, "train"), as_feature_dict(test, "test")
    chosen = feature_keys(train_d, None if keys is None else tuple(keys))
    for key in chosen:
        if key not in test_d:
            raise ValueError(f"feature entry {key!r} is in train but not in test")
        check_features(train_d[key], f"train[{key!r}]", 2)
        check_features(test_d[key], f"test[{key!r}]", 2)
        if train_d[key].shape[1] != test_d[key].shape[1]:
            raise ValueError(
                f"feature entry {key!r}: train has {train_d[key].shape[1]} features, "
                f"test has {test_d[key].shape[1]}"
            )
    n_train, n_test = train_d[chosen[0]].shape[0], test_d[chosen[0]].shape[0]
    for key in chosen:
        if train_d[key].shape[0] != n_train or test_d[key].shape[0] != n_test:
            raise ValueError(f"feature entries {chosen} have different numbers of rows")
    train_y, test_y, num_classes = check_split_labels(
        train_y, test_y, n_train=n_train, n_test=n_test, num_classes=num_classes
    )
    lr_list = [float(lr) for lr in lrs]
    if not lr_list or any(lr <= 0 for lr in lr_list):
        raise ValueError(f"lrs must be a non-empty sequence of positive numbers, got {lrs}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()

    fit_idx, val_idx = stratified_split(train_y, val_fraction, generator)
    heads = [(key, lr) for key in chosen for lr in lr_list]
    if len(heads) > 1 and val_idx.numel() == 0:
        raise ValueError(
            f"cannot select among {len(heads)} heads without a validation split "
            f"(val_fraction={val_fraction}, {n_train} training rows): raise val_fraction or "
            "give a single lr and a single feature key"
        )
    fit_x, stats = _prepare(train_d, chosen, fit_idx, dev, whiten)
    preprocess = {key: "whiten" if stats[key][1].dim() == 2 else "standardise" for key in chosen}
    fit_y = train_y[fit_idx].to(dev)
    grid = HeadGrid([(key, train_d[key].shape[1], lr_list) for key in chosen], num_classes).to(dev)
    fit = functools.partial(
        train_heads,
        epochs=epochs,
        batch_size=batch_size,
        weight_decay=weight_decay,
        generator=generator,
    )
    fit(grid, fit_x, fit_y)
    train_scores = evaluate_heads(grid, fit_x, fit_y)
    if val_idx.numel() > 0:
        val_scores = evaluate_heads(
            grid, _apply(train_d, chosen, val_idx, stats, dev), train_y[val_idx].to(dev)
        )
        order = sorted(
            range(len(heads)),
            key=lambda h: (-float(val_scores.top1[h]), float(val_scores.loss[h]), h),
        )
        best = order[0]
    else:
        val_scores, best = None, 0

    best_key, best_lr = heads[best]
    if refit and val_idx.numel() > 0:
        all_idx = torch.arange(n_train)
        fit_x, stats = _prepare(train_d, [best_key], all_idx, dev, whiten)
        grid = HeadGrid([(best_key, train_d[best_key].shape[1], [best_lr])], num_classes).to(dev)
        fit(grid, fit_x, train_y.to(dev))
        test_scores = evaluate_heads(
            grid, _apply(test_d, [best_key], None, stats, dev), test_y.to(dev)
        )
        test_top1, test_top5 = float(test_scores.top1[0]), float(test_scores.top5[0])
    else:
        test_scores = evaluate_heads(grid, _apply(test_d, chosen, None, stats, dev), test_y.to(dev))
        test_top1, test_top5 = float(test_scores.top1[best]), float(test_scores.top5[best])

    def _val(scores: HeadScores | None, h: int) -> tuple[float | None, float | None]:
        return (None, None) if scores is None else (float(scores.top1[h]), float(scores.loss[h]))

    grid_report = []
    for h, (key, lr) in enumerate(heads):
        v1, vloss = _val(val_scores, h)
        grid_report.append(
            {
                "pooling": key,
                "lr": lr,
                "train_top1": float(train_scores.top1[h]),
                "val_top1": v1,
                "val_loss": vloss,
            }
        )
    bv1, bvloss = _val(val_scores, best)
    result: dict[str, Any] = {
        "method": "linear",
        "top1": test_top1,
        "top5": test_top5,
        "top5_k": min(5, num_classes),
        "best": {"pooling": best_key, "lr": best_lr, "val_top1": bv1, "val_loss": bvloss},
        "grid": grid_report,
        "preprocess": preprocess,
        "optimizer": "adamw",
        "schedule": "cosine",
        "epochs": epochs,
        "batch_size": batch_size,
        "weight_decay": float(weight_decay),
        "val_fraction": float(val_fraction),
        "refit": bool(refit and val_idx.numel() > 0),
        "seed": seed,
        "num_classes": num_classes,
        "n_train": int(fit_idx.numel()),
        "n_val": int(val_idx.numel()),
        "n_test": n_test,
    }
    logger.info(
        "linear probe: best %s lr=%g (val %.4f) test top1 %.4f; %d heads in %.1f s",
        best_key,
        best_lr,
        bv1 if bv1 is not None else float("nan"),
        test_top1,
        len(heads),
        time.perf_counter() - start,
    )
    return result
