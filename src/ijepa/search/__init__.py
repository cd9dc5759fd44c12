"""Similarity search over frozen I-JEPA features: "which images look like this one?".

- :class:`SimilarityIndex`: cosine search over ``(N, D)`` features, FAISS when installed (the
  ``faiss`` extra) and exact torch search otherwise; :func:`agreement` compares two answers.
- :func:`index_from_checkpoint` / :func:`index_from_features`: an index from a checkpoint and a
  data spec, or from the features ``ijepa embed`` wrote.
- :func:`search`: queries by data-set index or image file; :func:`format_answers` and
  :func:`draw_answers` print and draw the answers.

Example::

    from ijepa.search import index_from_checkpoint, search, format_answers
    source = index_from_checkpoint("runs/demo/jepa-latest.pth.tar", "embedded", split="test")
    answers = search(source, indices=[0, 1, 2], k=5)
    print(format_answers(answers, source.index))
"""

from ijepa.search.build import (
    SearchSource,
    embed_images,
    index_from_checkpoint,
    index_from_features,
    read_feature_file,
    read_query_images,
)
from ijepa.search.index import (
    BACKENDS,
    Neighbours,
    SearchError,
    SimilarityIndex,
    agreement,
    faiss_available,
)
from ijepa.search.query import Answers, compare_backends, draw_answers, format_answers, search

__all__ = [
    "BACKENDS",
    "Answers",
    "Neighbours",
    "SearchError",
    "SearchSource",
    "SimilarityIndex",
    "agreement",
    "compare_backends",
    "draw_answers",
    "embed_images",
    "faiss_available",
    "format_answers",
    "index_from_checkpoint",
    "index_from_features",
    "read_feature_file",
    "read_query_images",
    "search",
]
