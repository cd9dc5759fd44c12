"""Input checks shared by the evaluators: feature shapes and label sanity.

Every evaluator receives a labelled train split and a labelled test split. The checks here turn
the usual mistakes (mismatched lengths, float labels, labels out of range, a test class that never
appears in train, empty splits) into a ``ValueError`` that names the offending argument.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

#: Keys of a feature dict that are not features (``extract_features`` stores labels under this).
LABELS_KEY = "labels"


def check_labels(y: Tensor, name: str) -> Tensor:
    """Check that ``y`` is a non-empty 1-D integer label tensor and return it as int64.

    Args:
        y: Labels, shape ``(N,)``.
        name: Argument name used in error messages.

    Returns:
        ``y`` as an int64 tensor, shape ``(N,)``.
    """
    if not isinstance(y, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(y.shape)}")
    if y.numel() == 0:
        raise ValueError(f"{name} is empty: need at least one labelled example")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ValueError(f"{name} has a negative label ({int(y.min())}); labels must be >= 0")
    return y.long()


def check_features(x: Tensor, name: str, ndim: int) -> None:
    """Check that ``x`` is a non-empty floating-point tensor with ``ndim`` dimensions."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one example")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")


def check_split_labels(
    train_y: Tensor,
    test_y: Tensor,
    *,
    n_train: int,
    n_test: int,
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Check a train/test pair of label tensors against each other and their features.

    Args:
        train_y: Train labels, shape ``(N_train,)``.
        test_y: Test labels, shape ``(N_test,)``.
        n_train: Number of train feature rows the labels must match.
        n_test: Number of test feature rows the labels must match.
        num_classes: Number of classes; ``None`` infers ``max(label) + 1`` over both splits.

    Returns:
        ``(train_y, test_y, num_classes)`` with the labels as int64.
    """
    train_y = check_labels(train_y, "train_y")
    test_y = check_labels(test_y, "test_y")
    if train_y.shape[0] != n_train:
        raise ValueError(
            f"train_y has {train_y.shape[0]} labels but train features have {n_train} rows"
        )
    if test_y.shape[0] != n_test:
        raise ValueError(
            f"test_y has {test_y.shape[0]} labels but test features have {n_test} rows"
        )
    top = max(int(train_y.max()), int(test_y.max()))
    if num_classes is None:
        num_classes = top + 1
    elif num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    elif top >= num_classes:
        raise ValueError(f"a label ({top}) is outside [0, num_classes={num_classes})")
    train_classes = set(torch.unique(train_y).tolist())
    missing = sorted(set(torch.unique(test_y).tolist()) - train_classes)
    if missing:
        shown = ", ".join(str(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} class(es) appear in test_y but never in train_y: {shown}; "
            "a classifier cannot predict a class it was never shown"
        )
    return train_y, test_y, num_classes


def feature_keys(
    feats: Mapping[str, Tensor], keys: list[str] | tuple[str, ...] | None
) -> list[str]:
    """The 2-D feature entries of ``feats`` to evaluate.

    Args:
        feats: Features per pooling, e.g. ``{"avg": (N, D), "avg4": (N, 4D), "labels": (N,)}``.
        keys: Keys to use; ``None`` means every 2-D entry except ``"labels"`` (so the 3-D
            ``"tokens"`` entry is skipped).

    Returns:
        The selected keys, in the mapping's order (or the order given).
    """
    if keys is None:
        chosen = [k for k, v in feats.items() if k != LABELS_KEY and v.ndim == 2]
        if not chosen:
            raise ValueError(
                f"no 2-D feature entry among keys {sorted(feats)}; expected e.g. 'avg' or 'avg4'"
            )
        return chosen
    chosen = list(keys)
    if not chosen:
        raise ValueError("keys is empty: name at least one feature entry")
    unknown = [k for k in chosen if k not in feats]
    if unknown:
        raise ValueError(f"feature key(s) {unknown} not found; available: {sorted(feats)}")
    return chosen
