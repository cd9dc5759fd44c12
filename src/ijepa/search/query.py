"""Query a :class:`~ijepa.search.build.SearchSource`: answers as records, a text table and PNGs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ijepa.search.build import SearchSource, embed_images, read_query_images
from ijepa.search.index import Neighbours, SearchError, SimilarityIndex, agreement

__all__ = ["Answers", "compare_backends", "draw_answers", "format_answers", "search"]


@dataclass
class Answers:
    """Neighbours of a batch of queries, and what names them.

    Attributes:
        neighbours: scores and ids ``(Q, k)``.
        query_names: ``Q`` names (``index I`` / a path, or an image file).
        query_labels: ``Q`` label texts (``-`` when unknown, e.g. for image files).
        query_images: uint8 ``(Q, C, H, W)`` query pictures, or ``None``.
        query_ids: ``Q`` index rows of the queries (``-1`` for image files).
        query_features: ``(Q, D)`` the query features.
        exclude: ``(Q,)`` the row left out of each answer (``-1``: none).
    """

    neighbours: Neighbours
    query_names: list[str]
    query_labels: list[str]
    query_images: Tensor | None
    query_ids: list[int]
    query_features: Tensor
    exclude: Tensor

    def records(self, index: SimilarityIndex) -> list[dict[str, Any]]:
        """JSON-ready answers: per query its name, label and ranked neighbours."""
        out = []
        for q, name in enumerate(self.query_names):
            rows = self.neighbours.ids[q].tolist()
            sims = self.neighbours.scores[q].tolist()
            out.append(
                {
                    "query": name,
                    "query_index": self.query_ids[q] if self.query_ids[q] >= 0 else None,
                    "label": self.query_labels[q],
                    "neighbours": [
                        {
                            "rank": r + 1,
                            "index": row,
                            "name": index.item_name(row),
                            "label": index.label_name(row),
                            "similarity": round(float(sim), 6),
                        }
                        for r, (row, sim) in enumerate(zip(rows, sims, strict=True))
                    ],
                }
            )
        return out


def search(
    source: SearchSource,
    *,
    indices: Sequence[int] = (),
    images: Sequence[str | Path] = (),
    k: int = 5,
    include_self: bool = False,
    progress: bool = False,
) -> Answers:
    """Answer queries given as data-set indices and/or image files (indices first).

    Args:
        source: the index and its encoder/data.
        indices: rows of the index to use as queries; their own row is left out of their answer
            unless ``include_self``.
        images: image files, embedded with the index's encoder.
        k: neighbours per query.
        include_self: keep a data-set query's own row among its neighbours.
    """
    index = source.index
    if not indices and not images:
        raise SearchError("no queries: give data-set indices and/or image files")
    n = len(index)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise SearchError(f"query indices {bad} are outside the indexed set of {n} items")
    rows = torch.tensor(list(indices), dtype=torch.long)
    feats = [index.features[rows]]
    names = [index.item_name(i) for i in indices]
    labels = [index.label_name(i) for i in indices]
    pictures = [source.data.images[rows]] if source.data is not None else []
    if images:
        size = source.img_size
        if size is None:
            raise SearchError(
                "querying with image files needs the encoder that made the index: give --checkpoint"
            )
        channels = int(getattr(source.encoder, "in_chans", 3))
        # decoded at the indexed images' size, so that they go through the same resize
        side = int(source.data.images.shape[-1]) if source.data is not None else size
        decoded = read_query_images(images, channels=channels, size=side)
        feats.append(embed_images(source, decoded, progress=progress))
        names += [str(p) for p in images]
        labels += ["-"] * len(images)
        if source.data is not None:
            pictures.append(decoded)
    query_ids = [*indices, *([-1] * len(images))]
    # -1: nothing to leave out (image files; or data-set queries with include_self)
    exclude = torch.tensor([-1 if include_self else i for i in indices] + [-1] * len(images))
    queries = torch.cat(feats)
    neighbours = index.search(queries, k, exclude=exclude)
    shown = torch.cat(pictures) if pictures else None
    return Answers(neighbours, names, labels, shown, query_ids, queries, exclude)


def compare_backends(source: SearchSource, answers: Answers, k: int) -> dict[str, Any]:
    """Answer the same queries with FAISS and with exact torch search and compare.

    Returns:
        :func:`~ijepa.search.index.agreement` of the two answers, plus ``backends``.
    """
    index = source.index
    answers_of = {}
    for backend in ("faiss", "torch"):
        other = index if index.backend == backend else None
        if other is None:
            other = SimilarityIndex(
                index.features, index.labels, backend=backend, faiss_factory=index.faiss_factory
            )
        answers_of[backend] = other.search(answers.query_features, k, exclude=answers.exclude)
    result: dict[str, Any] = agreement(answers_of["faiss"], answers_of["torch"])
    result["backends"] = ["faiss", "torch"]
    result["faiss_index"] = index.faiss_factory
    return result


def format_answers(answers: Answers, index: SimilarityIndex) -> str:
    """A plain-text table: a header line per query, then one line per neighbour."""
    lines = []
    for rec in answers.records(index):
        lines.append(f"query {rec['query']}  label {rec['label']}")
        width = max(len(nb["name"]) for nb in rec["neighbours"])
        for nb in rec["neighbours"]:
            lines.append(
                f"  {nb['rank']:>2}. {nb['name']:<{width}}  label {nb['label']:<12} "
                f"similarity {nb['similarity']:.4f}"
            )
    return "\n".join(lines)


def draw_answers(
    answers: Answers, source: SearchSource, folder: str | Path, *, per_query: bool = True
) -> list[Path]:
    """PNG grids: ``neighbours.png`` (one row per query) and ``query-NN.png`` for each query.

    Needs the indexed images (``source.data``).
    """
    from ijepa.viz.neighbours import draw_neighbours

    if source.data is None or answers.query_images is None:
        raise SearchError(
            "drawing neighbours needs the indexed images: give the data spec (--data) the "
            "features were made from"
        )
    index = source.index
    ids = answers.neighbours.ids
    shown = source.data.images[ids.reshape(-1)].reshape(*ids.shape, *source.data.images.shape[1:])
    records = answers.records(index)
    titles = [[f"#{nb['rank']} {nb['label']}\n{nb['similarity']:.4f}" for nb in r["neighbours"]]
              for r in records]  # fmt: skip
    # "query LABEL" over the item's file name or index ("query" alone for unlabelled files)
    heads = [
        ("query" if r["label"] == "-" else f"query {r['label']}") + f"\n{Path(r['query']).name}"
        for r in records
    ]
    matches = None
    if index.labels is not None:
        query_labels = torch.tensor(
            [int(index.labels[i]) if i >= 0 else -1 for i in answers.query_ids]
        )
        matches = (index.labels[ids] == query_labels[:, None]).long()
        matches[query_labels < 0] = -1  # image files: no label to compare with
    folder = Path(folder)
    written = [
        draw_neighbours(
            answers.query_images, heads, shown, titles, folder / "neighbours.png", matches=matches
        )
    ]
    if per_query:
        for q in range(len(records)):
            written.append(
                draw_neighbours(
                    answers.query_images[q : q + 1],
                    heads[q : q + 1],
                    shown[q : q + 1],
                    titles[q : q + 1],
                    folder / f"query-{q:02d}.png",
                    matches=None if matches is None else matches[q : q + 1],
                )
            )
    return written
