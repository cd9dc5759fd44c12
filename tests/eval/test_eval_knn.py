"""Weighted kNN: a hand-computed vote, separable data, and input checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ijepa.eval import knn_classify, knn_scores

# Six train points on the unit circle (scaled, to check the normalisation), one query at 0 deg.
ANGLES = [0.0, 30.0, 60.0, 90.0, 180.0, 200.0]
LABELS = [0, 1, 1, 0, 2, 2]
SCALES = [2.0, 0.5, 3.0, 1.0, 4.0, 0.1]


def _train() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(
        [
            [s * math.cos(math.radians(a)), s * math.sin(math.radians(a))]
            for a, s in zip(ANGLES, SCALES, strict=True)
        ]
    )
    return x, torch.tensor(LABELS)


def test_vote_matches_hand_computation() -> None:
    x, y = _train()
    query = torch.tensor([[5.0, 0.0]])
    # k=3: neighbours at 0, 30, 60 deg with cosines 1, cos 30, cos 60 = 0.5.
    for temperature in (0.5, 0.07):
        w0 = math.exp(1.0 / temperature)
        w30 = math.exp(math.cos(math.radians(30)) / temperature)
        w60 = math.exp(0.5 / temperature)
        scores = knn_scores(
            F.normalize(x, dim=1),
            y,
            F.normalize(query, dim=1),
            k=3,
            temperature=temperature,
            num_classes=3,
        )
        expected = torch.tensor([[w0, w30 + w60, 0.0]])
        torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)
    # At T=0.5 the two class-1 neighbours outvote the nearest (class 0) one; at T=0.07 they don't.
    warm = knn_classify(x, y, query, torch.tensor([1]), k=3, temperature=0.5)
    cold = knn_classify(x, y, query, torch.tensor([1]), k=3, temperature=0.07)
    assert warm["top1"] == 1.0
    assert cold["top1"] == 0.0 and cold["top5"] == 1.0 and cold["top5_k"] == 3
    # k=1 is plain nearest-neighbour.
    assert knn_classify(x, y, query, torch.tensor([0]), k=1)["top1"] == 1.0


def test_separable_clusters_and_chunking() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 32, generator=g) * 4
    ytr = torch.arange(10).repeat(50)
    yte = torch.arange(10).repeat(30)
    xtr = centers[ytr] + torch.randn(500, 32, generator=g)
    xte = centers[yte] + torch.randn(300, 32, generator=g)
    res = knn_classify(xtr, ytr, xte, yte, k=20, batch_size=7)
    assert res["top1"] >= 0.99 and res["top5"] >= res["top1"]
    assert res == knn_classify(xtr, ytr, xte, yte, k=20, batch_size=1000)
    assert res["k"] == 20 and res["temperature"] == 0.07 and res["n_test"] == 300
    json.dumps(res)
    # Random labels: chance level.
    shuffled = ytr[torch.randperm(500, generator=g)]
    assert knn_classify(xtr, shuffled, xte, yte)["top1"] < 0.1 + 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be"),
        ({"k": 7}, "k must be"),
        ({"k": 3, "temperature": 0.0}, "temperature"),
        ({"num_classes": 2}, "outside"),
    ],
)
def test_bad_settings(kwargs: dict[str, float], match: str) -> None:
    x, y = _train()
    with pytest.raises(ValueError, match=match):
        knn_classify(x, y, x[:2], y[:2], **kwargs)  # type: ignore[arg-type]


def test_label_sanity() -> None:
    x, y = _train()
    with pytest.raises(ValueError, match="train_y has 5 labels"):
        knn_classify(x, y[:5], x, y)
    with pytest.raises(ValueError, match="never in train_y"):
        knn_classify(x[:4], y[:4], x, y, k=2)
    with pytest.raises(ValueError, match="integer"):
        knn_classify(x, y.float(), x, y)
    with pytest.raises(ValueError, match="empty"):
        knn_classify(x, y, x[:0], y[:0])
    with pytest.raises(ValueError, match="negative"):
        knn_classify(x, y - 1, x, y)
    with pytest.raises(ValueError, match="features per row"):
        knn_classify(x, y, torch.randn(6, 3), y)
