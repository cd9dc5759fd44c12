"""Evaluation sharded across ranks: feature extraction, and kNN with a top-k merge.

Each rank extracts the features of its contiguous shard of a split (:func:`shard_range`) with
:func:`ijepa.eval.extract_features`; :func:`all_gather_rows` concatenates the shards in rank order,
which restores the split's order. For kNN the train bank stays sharded: every rank scores all test
queries against its own shard, the per-rank top-``k`` (similarity, label) lists are all-gathered
and merged into the global top-``k``, and the weighted vote is the one of
:func:`ijepa.eval.knn_classify` on the whole bank (equal up to ties in similarity).

Every function also works without a process group (one process). Collectives use the default
group unless ``group`` is given; tensors travel on CUDA for NCCL and on the CPU otherwise, and
results come back on the CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import Tensor, nn

from ijepa.dist import all_gather_into
from ijepa.eval.checks import check_labels
from ijepa.eval.features import extract_features

logger = logging.getLogger(__name__)


def _world(group: Any = None) -> tuple[int, int]:
    if not (tdist.is_available() and tdist.is_initialized()):
        return 0, 1
    return tdist.get_rank(group), tdist.get_world_size(group)


def _comm_device(group: Any = None) -> torch.device:
    if tdist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_range(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """The contiguous slice of ``range(n)`` that ``rank`` evaluates (sizes differ by at most 1).

    ``rank`` and ``world_size`` default to the default process group's (0 and 1 without one).
    """
    r, w = _world()
    rank = r if rank is None else rank
    world_size = w if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def all_gather_rows(tensor: Tensor, group: Any = None) -> Tensor:
    """Concatenate every rank's ``tensor`` ``(n_r, ...)`` along dim 0, in rank order, on the CPU.

    The first dimension may differ between ranks; the others must agree.
    """
    _, world = _world(group)
    if world == 1:
        return tensor.detach().cpu()
    dev = _comm_device(group)
    local = tensor.detach().to(dev).contiguous()
    sizes = torch.empty(world, dtype=torch.long, device=dev)
    all_gather_into(sizes, torch.tensor([local.shape[0]], device=dev), group)
    counts = sizes.tolist()
    longest = max(counts)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    out = local.new_empty((world * longest, *local.shape[1:]))
    all_gather_into(out, padded, group)
    parts = [out[r * longest : r * longest + counts[r]] for r in range(world)]
    return torch.cat(parts).cpu()


def extract_features_distributed(
    encoder: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    poolings: Sequence[str] = ("avg",),
    *,
    gather: bool = True,
    group: Any = None,
    **kwargs: Any,
) -> dict[str, Tensor]:
    """:func:`ijepa.eval.extract_features` on this rank's shard, then (optionally) gathered.

    Args:
        encoder: frozen encoder ``(B, C, H, W) -> (B, N, D)`` (the same on every rank).
        batches: this rank's shard of the split, e.g. the images at :func:`shard_range`.
        poolings: as for :func:`~ijepa.eval.extract_features`.
        gather: return every rank's features concatenated in rank order (else only this shard).
        group: process group (default: the default group).
        **kwargs: passed to :func:`~ijepa.eval.extract_features` (``device``, ``bf16``, ...).

    Returns:
        ``{pooling: (N, ...), "labels": (N,)}`` on the CPU, ``N`` the whole split when gathered.
    """
    local = extract_features(encoder, batches, poolings, **kwargs)
    if not gather:
        return local
    return {key: all_gather_rows(value, group) for key, value in local.items()}


def knn_classify_distributed(
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
    group: Any = None,
) -> dict[str, Any]:
    """Weighted kNN accuracy with the train bank sharded over ranks (every rank gets the result).

    Args:
        train_x: this rank's shard of the train features, ``(n_r, D)`` (may be empty).
        train_y: its labels, ``(n_r,)``.
        test_x: this rank's shard of the test features, ``(m_r, D)``; all shards are gathered so
            that every rank scores every query against its train shard.
        test_y: its labels, ``(m_r,)``.
        k: neighbours, at most the total number of train points.
        temperature: vote weights ``exp(cosine / temperature)``.
        num_classes: number of classes; None infers ``max(label) + 1`` over all ranks.
        batch_size: queries per chunk (memory ``batch_size x n_r`` similarities per rank).
        device: where to compute (default: ``train_x``'s device).
        group: process group (default: the default group).

    Returns:
        The dict of :func:`ijepa.eval.knn_classify` (``top1``, ``top5``, ``n_train`` and
        ``n_test`` of the whole splits, ...) plus ``world_size``.
    """
    if train_x.ndim != 2 or test_x.ndim != 2:
        raise ValueError(
            f"train_x and test_x must be (N, D); got {tuple(train_x.shape)} and "
            f"{tuple(test_x.shape)}"
        )
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError("features and labels must have the same number of rows on each rank")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _, world = _world(group)
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else train_x.device
    queries = all_gather_rows(test_x.float(), group)
    query_y = all_gather_rows(test_y.long(), group)
    query_y = check_labels(query_y, "test_y")
    n_train = int(all_gather_rows(torch.tensor([train_x.shape[0]]), group).sum())
    if not 1 <= k <= n_train:
        raise ValueError(f"k must be in [1, N_train={n_train}], got {k}")
    if train_x.shape[0]:
        train_y = check_labels(train_y, "train_y")
    local_max = max(int(train_y.max()) if train_y.numel() else 0, int(query_y.max()))
    if num_classes is None:
        num_classes = int(all_gather_rows(torch.tensor([local_max]), group).max()) + 1
    elif local_max >= num_classes:
        raise ValueError(f"a label ({local_max}) is >= num_classes ({num_classes})")
    bank = F.normalize(train_x.to(dev, torch.float32), dim=1)
    bank_y = train_y.to(dev).long()
    top5_k = min(5, num_classes)
    correct1 = correct5 = 0
    for lo in range(0, queries.shape[0], batch_size):
        query = F.normalize(queries[lo : lo + batch_size].to(dev), dim=1)
        m = query.shape[0]
        # this shard's best min(k, n_r) neighbours, padded to k with -inf
        sims = torch.full((m, k), -torch.inf, device=dev)
        labels = torch.zeros((m, k), dtype=torch.long, device=dev)
        kk = min(k, bank.shape[0])
        if kk:
            top_s, top_i = (query @ bank.T).topk(kk, dim=1)  # (m, kk)
            sims[:, :kk] = top_s
            labels[:, :kk] = bank_y[top_i]
        # merge: the global top-k is the top-k of the union of the shards' top-k
        all_s = _gather_columns(sims, group, world)  # (m, world * k)
        all_l = _gather_columns(labels, group, world)
        best_s, best = all_s.topk(k, dim=1)
        weights = (best_s / temperature).exp()  # (m, k); padding never wins, as k <= n_train
        scores = torch.zeros(m, num_classes, dtype=weights.dtype)
        scores.scatter_add_(1, all_l.gather(1, best), weights)
        target = query_y[lo : lo + m]
        ranked = scores.topk(top5_k, dim=1).indices
        hits = ranked == target[:, None]
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
    n_test = int(queries.shape[0])
    result: dict[str, Any] = {
        "method": "knn",
        "top1": correct1 / n_test,
        "top5": correct5 / n_test,
        "top5_k": top5_k,
        "k": k,
        "temperature": float(temperature),
        "num_classes": num_classes,
        "n_train": n_train,
        "n_test": n_test,
        "world_size": world,
    }
    logger.info(
        "sharded kNN over %d rank(s) (k=%d, T=%g): top1 %.4f top5 %.4f in %.1f s",
        world,
        k,
        temperature,
        result["top1"],
        result["top5"],
        time.perf_counter() - start,
    )
    return result


def _gather_columns(t: Tensor, group: Any, world: int) -> Tensor:
    """``(m, c)`` on every rank -> ``(m, world * c)`` (rank r's columns at ``r*c:(r+1)*c``)."""
    if world == 1:
        return t.cpu()
    rows = all_gather_rows(t, group)  # (world * m, c)
    m = t.shape[0]
    return rows.view(world, m, -1).permute(1, 0, 2).reshape(m, -1)
