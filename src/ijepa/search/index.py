"""A cosine-similarity index over frozen features: FAISS when installed, exact torch otherwise.

Features are L2-normalised once, so the inner product is the cosine similarity. Two backends
answer the same question:

- ``torch``: exact search, one matrix product per chunk of queries and ``torch.topk``;
- ``faiss``: FAISS (the ``faiss`` extra, ``faiss-cpu``) with an inner-product index built by
  ``faiss.index_factory``. The default factory ``"Flat"`` is exact too (and multi-threaded);
  other factories (``"IVF1024,Flat"``, ``"HNSW32"``, ...) are approximate and meant for millions
  of images.

``backend="auto"`` takes FAISS when it imports and torch otherwise, and says which in the log.
Nothing here reads files except :meth:`SimilarityIndex.save` / :meth:`SimilarityIndex.load`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "Neighbours",
    "SearchError",
    "SimilarityIndex",
    "agreement",
    "faiss_available",
]

logger = logging.getLogger(__name__)

#: Accepted values of ``backend``.
BACKENDS = ("auto", "faiss", "torch")
#: Queries per matrix product of the exact search (bounds memory at ``chunk x N`` floats).
QUERY_CHUNK = 1024
_META_KEY = "ijepa_search_index"


class SearchError(ValueError):
    """Bad input to a similarity search (shapes, k, backend, a missing extra, an index file)."""


def faiss_available() -> bool:
    """Whether the ``faiss`` module can be imported (the ``faiss`` extra: ``faiss-cpu``)."""
    return importlib.util.find_spec("faiss") is not None


@dataclass
class Neighbours:
    """The answer to a batch of queries.

    Attributes:
        scores: ``(Q, k)`` float32 cosine similarities, best first.
        ids: ``(Q, k)`` int64 row indices into the index, best first.
    """

    scores: Tensor
    ids: Tensor


def _normalise(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise SearchError(f"{what} must be a non-empty (N, D) tensor, got {shape}")
    x = x.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise SearchError(f"{what} hold NaN or Inf values")
    return torch.nn.functional.normalize(x, dim=1).contiguous()


class SimilarityIndex:
    """Cosine-similarity search over a set of feature vectors.

    Args:
        features: ``(N, D)`` features of the indexed images (any float dtype).
        labels: ``(N,)`` int64 labels, or ``None``.
        classes: class names (index = label), or ``None``.
        names: ``N`` strings naming the items (file paths), or ``None`` (items are named by index).
        backend: ``"auto"``, ``"faiss"`` or ``"torch"``.
        faiss_factory: the FAISS index description (``"Flat"`` is exact).

    Raises:
        SearchError: bad shapes, non-finite features, an unknown backend, or ``"faiss"`` asked
            for without FAISS installed.
    """

    def __init__(
        self,
        features: Tensor,
        labels: Tensor | None = None,
        *,
        classes: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        backend: str = "auto",
        faiss_factory: str = "Flat",
    ) -> None:
        self.features = _normalise(features, "indexed features")
        n = self.features.shape[0]
        if labels is not None and tuple(labels.shape) != (n,):
            raise SearchError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if names is not None and len(names) != n:
            raise SearchError(f"names must hold {n} entries, got {len(names)}")
        self.labels = labels.detach().cpu().long() if labels is not None else None
        self.classes = list(classes) if classes is not None else None
        self.names = list(names) if names is not None else None
        self.faiss_factory = faiss_factory
        self.backend = self._resolve(backend)
        self._faiss: Any = self._build_faiss() if self.backend == "faiss" else None
        logger.info("similarity index: %d x %d features, %s backend", n, self.dim, self.backend)

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @staticmethod
    def _resolve(backend: str) -> str:
        if backend not in BACKENDS:
            raise SearchError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "auto":
            return "faiss" if faiss_available() else "torch"
        if backend == "faiss" and not faiss_available():
            raise SearchError(
                "backend 'faiss' needs FAISS: pip install 'torch-ijepa[faiss]' (faiss-cpu), or "
                "use backend 'torch' (exact search)"
            )
        return backend

    def _build_faiss(self) -> Any:
        import faiss

        x = self.features.numpy()
        try:
            index = faiss.index_factory(self.dim, self.faiss_factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise SearchError(f"FAISS cannot build index {self.faiss_factory!r}: {err}") from err
        if not index.is_trained:
            index.train(x)
        index.add(x)
        return index

    def search(
        self, queries: Tensor, k: int = 5, *, exclude: Tensor | Sequence[int] | None = None
    ) -> Neighbours:
        """The ``k`` most similar indexed items of each query.

        Args:
            queries: ``(Q, D)`` query features (normalised here).
            k: neighbours per query, ``1 <= k < N`` (``<= N`` without ``exclude``).
            exclude: ``(Q,)`` one index row per query to leave out (the query itself, when it
                is an item of the index; ``-1`` leaves nothing out), or ``None``.

        Returns:
            :class:`Neighbours` with ``(Q, k)`` scores (cosine similarity) and ids.
        """
        q = _normalise(queries, "query features")
        if q.shape[1] != self.dim:
            raise SearchError(
                f"query features have dimension {q.shape[1]} but the index holds {self.dim}"
            )
        drop = None if exclude is None else torch.as_tensor(exclude, dtype=torch.long).reshape(-1)
        if drop is not None and drop.shape[0] != q.shape[0]:
            raise SearchError(f"exclude needs one id per query ({q.shape[0]}), got {drop.shape[0]}")
        limit = len(self) - (1 if drop is not None and bool((drop >= 0).any()) else 0)
        if not 1 <= k <= limit:
            raise SearchError(f"k must lie in [1, {limit}] for an index of {len(self)}, got {k}")
        fetch = min(k + (1 if drop is not None else 0), len(self))
        if self.backend == "faiss":
            sims, idx = self._faiss.search(q.numpy(), fetch)
            scores, ids = torch.from_numpy(sims).float(), torch.from_numpy(idx).long()
        else:
            parts = [(chunk @ self.features.T).topk(fetch, dim=1) for chunk in q.split(QUERY_CHUNK)]
            scores = torch.cat([p.values for p in parts])
            ids = torch.cat([p.indices for p in parts])
        if drop is not None:
            scores, ids = _drop(scores, ids, drop, k)
        return Neighbours(scores=scores.contiguous(), ids=ids.contiguous())

    def label_name(self, row: int) -> str:
        """The label of indexed item ``row`` as text (class name when known, ``-`` without)."""
        if self.labels is None:
            return "-"
        label = int(self.labels[row])
        if self.classes is not None and 0 <= label < len(self.classes):
            return self.classes[label]
        return str(label)

    def item_name(self, row: int) -> str:
        """The name of indexed item ``row``: its path when known, else ``index ROW``."""
        return self.names[row] if self.names is not None else f"index {row}"

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write the features, labels and names to a safetensors file (``metadata`` is kept)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"features": self.features}
        if self.labels is not None:
            tensors["labels"] = self.labels
        info = {"classes": self.classes, "names": self.names, **(metadata or {})}
        save_file(tensors, str(path), metadata={_META_KEY: json.dumps(info)})
        return path

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> tuple[SimilarityIndex, dict[str, Any]]:
        """Read what :meth:`save` wrote; ``kwargs`` go to the constructor (``backend``, ...).

        Returns:
            ``(index, metadata)``.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise SearchError(f"index file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                info = json.loads((fh.metadata() or {}).get(_META_KEY, "{}"))
                features = fh.get_tensor("features")
                labels = fh.get_tensor("labels") if "labels" in fh.keys() else None  # noqa: SIM118
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
            raise SearchError(f"{path} is not a readable search index: {err}") from err
        index = cls(
            features, labels, classes=info.pop("classes"), names=info.pop("names"), **kwargs
        )
        return index, info


def _drop(scores: Tensor, ids: Tensor, drop: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Remove each row's excluded id (when present) and keep the first ``k`` of the rest."""
    keep = ids != drop[:, None]  # (Q, fetch), fetch = k or k + 1
    # keep the first k kept entries of each row (rows without the id keep their best k)
    keep &= keep.long().cumsum(dim=1) <= k
    q = scores.shape[0]
    return scores[keep].view(q, k), ids[keep].view(q, k)


def agreement(a: Neighbours, b: Neighbours, *, atol: float = 1e-4) -> dict[str, float]:
    """How far two answers to the same queries agree.

    Returns:
        ``{"same_ids": fraction of queries with identical ordered id lists, "overlap": mean
        fraction of shared ids, "max_score_diff": largest |score difference| rank by rank,
        "same_up_to_ties": fraction of queries whose lists differ only where scores tie within
        atol}``.
    """
    if a.ids.shape != b.ids.shape:
        raise SearchError(f"answers of different shapes: {tuple(a.ids.shape)} vs {b.ids.shape}")
    same = (a.ids == b.ids).all(dim=1)
    overlap = [
        len(set(x.tolist()) & set(y.tolist())) / a.ids.shape[1]
        for x, y in zip(a.ids, b.ids, strict=True)
    ]
    diff = (a.scores - b.scores).abs()
    # a differing id is only a tie when the scores rank by rank still agree
    tie_ok = same | (diff <= atol).all(dim=1)
    return {
        "same_ids": float(same.float().mean()),
        "overlap": float(sum(overlap) / len(overlap)),
        "max_score_diff": float(diff.max()),
        "same_up_to_ties": float(tie_ok.float().mean()),
    }
