"""Low-shot linear evaluation: linear probes trained on small labelled subsets of the train set.

A subset is either a ``fraction`` of the labels, drawn per class (every class keeps the same
fraction, at least one image), or ``shots`` images per class. Several subsets ("draws") are drawn
from one generator seeded with ``seed``, so the whole evaluation is reproducible from the seed;
the test set is always the full test split.

Hyper-parameter choice per draw, using only the drawn labels:

- ``lr=None`` (default): the linear-probe grid (feature entries x ``lrs``) is trained on the
  subset minus a stratified validation split carved from it (``val_fraction`` of every class);
  the best (entry, lr) by validation accuracy is retrained on the whole subset and tested. This
  needs at least 2 labelled images per class.
- ``lr=<float>``: one head on a single feature entry is trained on the whole subset with that
  learning rate (no selection); this is the way to run 1-shot evaluation.

The reported ``std`` is the sample standard deviation over draws (0 for a single draw).
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ijepa.eval.checks import check_labels, feature_keys
from ijepa.eval.linear import DEFAULT_LRS, as_feature_dict, linear_probe

logger = logging.getLogger(__name__)


def draw_lowshot_indices(
    labels: Tensor,
    *,
    fraction: float | None = None,
    shots: int | None = None,
    generator: torch.Generator,
) -> Tensor:
    """Draw a class-stratified labelled subset.

    Args:
        labels: Train labels int64, shape ``(N,)``.
        fraction: Keep ``max(1, round(fraction * n_c))`` images of each class ``c``.
        shots: Keep exactly ``shots`` images of each class (exactly one of fraction/shots).
        generator: CPU generator; the same generator state gives the same subset.

    Returns:
        Sorted int64 indices into ``labels``, shape ``(K,)``.
    """
    labels = check_labels(labels, "train_y").cpu()
    if (fraction is None) == (shots is None):
        raise ValueError("give exactly one of fraction (e.g. 0.01) or shots (images per class)")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if shots is not None:
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise ValueError(f"shots must be a positive integer, got {shots!r}")
        classes, counts = torch.unique(labels, return_counts=True)
        short = [(int(c), int(n)) for c, n in zip(classes, counts, strict=True) if n < shots]
        if short:
            shown = ", ".join(f"class {c}: {n}" for c, n in short[:10])
            raise ValueError(
                f"{shots}-shot evaluation needs {shots} images per class, but {len(short)} "
                f"class(es) have fewer ({shown})"
            )
    parts = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        n = members.shape[0]
        take = shots if shots is not None else max(1, round(float(fraction or 0.0) * n))
        parts.append(members[torch.randperm(n, generator=generator)[:take]])
    return torch.cat(parts).sort().values


def _fingerprint(idx: Tensor) -> str:
    """A short stable hash of an index set (to compare draws without storing them)."""
    return hashlib.sha1(idx.cpu().to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def lowshot_eval(
    train: Mapping[str, Tensor] | Tensor,
    train_y: Tensor,
    test: Mapping[str, Tensor] | Tensor,
    test_y: Tensor,
    *,
    fraction: float | None = None,
    shots: int | None = None,
    draws: int = 5,
    seed: int = 0,
    lr: float | None = None,
    lrs: Sequence[float] = DEFAULT_LRS,
    keys: Sequence[str] | None = None,
    epochs: int = 100,
    batch_size: int = 256,
    val_fraction: float = 0.2,
    weight_decay: float = 1e-4,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Linear-probe accuracy from a few labels, averaged over several random draws.

    Args:
        train: ``{key: (N_train, F_key)}`` or one ``(N_train, F)`` tensor (see ``linear_probe``).
        train_y: Train labels, shape ``(N_train,)``.
        test: Same keys as ``train``, ``(N_test, F_key)`` each.
        test_y: Test labels, shape ``(N_test,)``.
        fraction: Fraction of the labels to keep, per class (e.g. 0.01 for the 1 % protocol).
        shots: Images per class to keep (exactly one of ``fraction``/``shots``).
        draws: Number of random subsets.
        seed: Seeds the draws and every probe's shuffles.
        lr: Fixed learning rate (single head, no validation split); ``None`` selects among
            ``lrs`` and the feature entries on a validation split carved from each subset.
        lrs: Learning-rate grid when ``lr`` is ``None``.
        keys: Feature entries; with a fixed ``lr`` they must resolve to exactly one.
        epochs: Passes over each subset (subsets are small: use many).
        batch_size: Rows per step.
        val_fraction: Validation fraction of every class of the subset (``lr=None`` only).
        weight_decay: AdamW decoupled weight decay.
        num_classes: Number of classes; ``None`` infers ``max(label) + 1``.
        device: Where to train.

    Returns:
        ``{"method": "lowshot", "mean", "std" (test top-1 over draws, fractions), "fraction",
        "shots", "draws": [{"draw", "top1", "n_labelled", "subset_sha1", "pooling", "lr",
        "val_top1"}, ...], "selection": "val" | "fixed_lr"}`` plus the settings.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    train_d, test_d = as_feature_dict(train, "train"), as_feature_dict(test, "test")
    chosen = feature_keys(train_d, None if keys is None else tuple(keys))
    train_y = check_labels(train_y, "train_y")
    if lr is not None and len(chosen) != 1:
        raise ValueError(
            f"a fixed lr trains one head, so it needs one feature entry, got {chosen}: pass keys=('avg',)"
        )
    generator = torch.Generator().manual_seed(seed)
    results = []
    for draw in range(draws):
        idx = draw_lowshot_indices(train_y, fraction=fraction, shots=shots, generator=generator)
        probe_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        sub_y = train_y[idx]
        if lr is None and int(torch.unique(sub_y, return_counts=True)[1].min()) < 2:
            raise ValueError(
                "the labelled subset has a class with a single image, which leaves nothing for "
                "validation: pass a fixed lr=... (and one feature key) to train without selection"
            )
        sub = {key: train_d[key][idx] for key in chosen}
        res = linear_probe(
            sub,
            sub_y,
            test_d,
            test_y,
            keys=chosen,
            lrs=lrs if lr is None else (lr,),
            epochs=epochs,
            batch_size=batch_size,
            val_fraction=val_fraction if lr is None else 0.0,
            weight_decay=weight_decay,
            refit=lr is None,
            num_classes=num_classes,
            seed=probe_seed,
            device=device,
        )
        results.append(
            {
                "draw": draw,
                "top1": res["top1"],
                "n_labelled": int(idx.numel()),
                "subset_sha1": _fingerprint(idx),
                "pooling": res["best"]["pooling"],
                "lr": res["best"]["lr"],
                "val_top1": res["best"]["val_top1"],
            }
        )
        logger.info("low-shot draw %d: %d labels, test top1 %.4f", draw, idx.numel(), res["top1"])
    accs = [r["top1"] for r in results]
    return {
        "method": "lowshot",
        "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "fraction": None if fraction is None else float(fraction),
        "shots": shots,
        "draws": results,
        "num_draws": draws,
        "selection": "val" if lr is None else "fixed_lr",
        "lrs": [float(x) for x in ((lr,) if lr is not None else lrs)],
        "epochs": epochs,
        "batch_size": batch_size,
        "val_fraction": float(val_fraction) if lr is None else 0.0,
        "weight_decay": float(weight_decay),
        "seed": seed,
    }
