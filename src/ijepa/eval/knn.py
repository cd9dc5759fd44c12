"""Weighted k-nearest-neighbour classification on frozen features (the DINO protocol).

Features are L2-normalised, so the dot product is the cosine similarity. Each query takes its
``k`` most similar train points; a neighbour with similarity ``s`` votes for its class with weight
``exp(s / temperature)``; the class score is the sum of its neighbours' weights. The test set is
processed in chunks so memory stays at ``batch_size x N_train`` similarities.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ijepa.eval.checks import check_features, check_split_labels

logger = logging.getLogger(__name__)


def knn_scores(
    train_x: Tensor,
    train_y: Tensor,
    query_x: Tensor,
    *,
    k: int,
    temperature: float,
    num_classes: int,
) -> Tensor:
    """Class scores of weighted kNN for a chunk of queries.

    Args:
        train_x: Train features, shape ``(N, D)``, already L2-normalised.
        train_y: Train labels int64, shape ``(N,)``.
        query_x: Query features, shape ``(M, D)``, already L2-normalised.
        k: Number of neighbours (``<= N``).
        temperature: Similarity temperature of the vote weights ``exp(sim / T)``.
        num_classes: Number of classes ``C``.

    Returns:
        Scores ``(M, C)``: for each class, the summed weights of the neighbours of that class.
    """
    sims = query_x @ train_x.T  # (M, N) cosine similarities
    top_sims, top_idx = sims.topk(k, dim=1)  # (M, k)
    weights = (top_sims / temperature).exp()  # (M, k)
    scores = torch.zeros(query_x.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    return scores.scatter_add_(1, train_y[top_idx], weights)  # (M, C)


def knn_classify(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Weighted kNN accuracy of the test features against the train features.

    Args:
        train_x: Train features, shape ``(N_train, D)``.
        train_y: Train labels, shape ``(N_train,)``.
        test_x: Test features, shape ``(N_test, D)``.
        test_y: Test labels, shape ``(N_test,)``.
        k: Number of neighbours; must not exceed ``N_train``.
        temperature: Temperature of the vote weights ``exp(cosine / temperature)``.
        num_classes: Number of classes; ``None`` infers ``max(label) + 1``.
        batch_size: Test queries per chunk (memory is ``batch_size x N_train`` floats).
        device: Where to compute; ``None`` uses ``train_x``'s device.

    Returns:
        ``{"method": "knn", "top1", "top5" (fractions in [0, 1]), "top5_k" (= min(5, C)), "k",
        "temperature", "num_classes", "n_train", "n_test"}``.
    """
    check_features(train_x, "train_x", 2)
    check_features(test_x, "test_x", 2)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x has {train_x.shape[1]} features per row but test_x has {test_x.shape[1]}"
        )
    train_y, test_y, num_classes = check_split_labels(
        train_y, test_y, n_train=train_x.shape[0], n_test=test_x.shape[0], num_classes=num_classes
    )
    if not 1 <= k <= train_x.shape[0]:
        raise ValueError(f"k must be in [1, N_train={train_x.shape[0]}], got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else train_x.device
    start = time.perf_counter()
    bank = F.normalize(train_x.to(dev, torch.float32), dim=1)
    bank_y = train_y.to(dev)
    top5_k = min(5, num_classes)
    correct1 = 0
    correct5 = 0
    for lo in range(0, test_x.shape[0], batch_size):
        query = F.normalize(test_x[lo : lo + batch_size].to(dev, torch.float32), dim=1)
        target = test_y[lo : lo + batch_size].to(dev)
        scores = knn_scores(
            bank, bank_y, query, k=k, temperature=temperature, num_classes=num_classes
        )
        ranked = scores.topk(top5_k, dim=1).indices  # (M, top5_k)
        hits = ranked == target[:, None]
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
    n_test = test_x.shape[0]
    result: dict[str, Any] = {
        "method": "knn",
        "top1": correct1 / n_test,
        "top5": correct5 / n_test,
        "top5_k": top5_k,
        "k": k,
        "temperature": float(temperature),
        "num_classes": num_classes,
        "n_train": train_x.shape[0],
        "n_test": n_test,
    }
    logger.info(
        "kNN (k=%d, T=%g): top1 %.4f top5 %.4f in %.1f s",
        k,
        temperature,
        result["top1"],
        result["top5"],
        time.perf_counter() - start,
    )
    return result
