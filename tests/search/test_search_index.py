"""SimilarityIndex: exact torch search against a float64 brute force, FAISS against exact."""

from __future__ import annotations

import pytest
import torch

from ijepa.search import SearchError, SimilarityIndex, agreement
from ijepa.search import index as index_module


def _features(n: int = 400, d: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


def _brute_force(base: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    b = torch.nn.functional.normalize(base.double(), dim=1)
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    order = torch.argsort(q @ b.T, dim=1, descending=True, stable=True)
    return order[:, :k]


def test_exact_search_matches_a_float64_brute_force() -> None:
    base, queries = _features(), _features(25, seed=1)
    index = SimilarityIndex(base, backend="torch")
    got = index.search(queries, k=7)
    assert got.ids.shape == (25, 7) and got.scores.dtype == torch.float32
    assert torch.equal(got.ids, _brute_force(base, queries, 7))
    cos = torch.nn.functional.cosine_similarity(queries[:, None], base[got.ids], dim=2)
    torch.testing.assert_close(got.scores, cos, atol=1e-5, rtol=0)
    assert bool((got.scores[:, :-1] >= got.scores[:, 1:]).all())  # best first


def test_exact_search_in_query_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    base, queries = _features(), _features(25, seed=1)
    whole = SimilarityIndex(base, backend="torch").search(queries, k=5)
    monkeypatch.setattr(index_module, "QUERY_CHUNK", 4)
    chunked = SimilarityIndex(base, backend="torch").search(queries, k=5)
    assert torch.equal(whole.ids, chunked.ids)


def test_faiss_and_exact_search_agree() -> None:
    pytest.importorskip("faiss", reason="the faiss extra (faiss-cpu) is not installed")
    base, queries = _features(500, 48), _features(40, 48, seed=3)
    exact = SimilarityIndex(base, backend="torch").search(queries, k=10)
    flat = SimilarityIndex(base, backend="faiss").search(queries, k=10)
    assert torch.equal(exact.ids, flat.ids)
    torch.testing.assert_close(exact.scores, flat.scores, atol=1e-5, rtol=0)
    report = agreement(exact, flat)
    assert report["same_ids"] == 1.0 and report["overlap"] == 1.0
    assert report["max_score_diff"] < 1e-5
    # an approximate index still answers in the same format, close to exact on this easy set
    ivf = SimilarityIndex(base, backend="faiss", faiss_factory="IVF4,Flat").search(queries, k=10)
    assert ivf.ids.shape == (40, 10) and agreement(exact, ivf)["overlap"] > 0.3


def test_auto_backend_and_missing_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "faiss_available", lambda: False)
    assert SimilarityIndex(_features(), backend="auto").backend == "torch"
    with pytest.raises(SearchError, match=r"faiss-cpu"):
        SimilarityIndex(_features(), backend="faiss")


def test_exclude_leaves_the_query_out() -> None:
    base = _features(50)
    index = SimilarityIndex(base, backend="torch")
    rows = torch.tensor([3, 10, 42])
    with_self = index.search(base[rows], k=4)
    assert torch.equal(with_self.ids[:, 0], rows)  # each item is its own nearest neighbour
    torch.testing.assert_close(with_self.scores[:, 0], torch.ones(3))
    without = index.search(base[rows], k=4, exclude=rows)
    assert not bool((without.ids == rows[:, None]).any())
    assert torch.equal(without.ids, index.search(base[rows], k=5).ids[:, 1:])
    # -1 leaves nothing out; k may then reach N
    everything = index.search(base[:2], k=50, exclude=torch.tensor([-1, -1]))
    assert sorted(everything.ids[0].tolist()) == list(range(50))


def test_bad_inputs_are_clear_errors() -> None:
    index = SimilarityIndex(_features(20, 8), backend="torch")
    with pytest.raises(SearchError, match="dimension 9"):
        index.search(torch.randn(2, 9))
    with pytest.raises(SearchError, match=r"k must lie in \[1, 19\]"):
        index.search(torch.randn(2, 8), k=20, exclude=torch.tensor([0, 1]))
    with pytest.raises(SearchError, match="NaN or Inf"):
        SimilarityIndex(torch.full((3, 4), float("nan")))
    with pytest.raises(SearchError, match="labels must have shape"):
        SimilarityIndex(torch.randn(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(SearchError, match="backend must be one of"):
        SimilarityIndex(torch.randn(3, 4), backend="annoy")


def test_save_and_load_round_trip(tmp_path) -> None:
    base = _features(30, 6)
    labels = torch.arange(30) % 3
    index = SimilarityIndex(base, labels, classes=["a", "b", "c"], backend="torch")
    path = index.save(tmp_path / "index.safetensors", {"data": "embedded"})
    again, meta = SimilarityIndex.load(path, backend="torch")
    assert meta == {"data": "embedded"}
    torch.testing.assert_close(again.features, index.features)  # normalised again: last bits
    assert torch.equal(again.labels, labels)
    assert again.label_name(4) == "b" and again.item_name(4) == "index 4"
    with pytest.raises(SearchError, match="not found"):
        SimilarityIndex.load(tmp_path / "nothing.safetensors")
