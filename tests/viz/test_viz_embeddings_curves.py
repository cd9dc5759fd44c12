"""Embedding maps (PCA, UMAP, the fallback) and training curves."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from ijepa.errors import UsageError
from ijepa.viz.curves import read_metrics, save_curves_figure
from ijepa.viz.embeddings import embed_2d, save_embedding_figure


def _clusters() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=g) * 5
    labels = torch.arange(90) % 3
    return centres[labels] + torch.randn(90, 32, generator=g) * 0.3, labels


def test_pca_embedding_keeps_clusters_apart(tmp_path: Path) -> None:
    x, y = _clusters()
    coords, method = embed_2d(x, "pca")
    assert method == "pca" and coords.shape == (90, 2)
    means = torch.stack([coords[y == k].mean(0) for k in range(3)])
    spread = max(float(coords[y == k].std(0).norm()) for k in range(3))
    assert float(torch.pdist(means).min()) > 3 * spread
    out = save_embedding_figure(coords, y, ["a", "$b$", "_c"], tmp_path / "e.png")
    with Image.open(out) as im:
        assert im.width == 600 and im.height == 500


def test_auto_falls_back_to_pca_with_a_notice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a)
    )
    x, _ = _clusters()
    with caplog.at_level(logging.INFO, logger="ijepa.viz.embeddings"):
        _, method = embed_2d(x, "auto")
    assert method == "pca"
    assert "umap-learn is not installed" in caplog.text
    with pytest.raises(ValueError, match="umap-learn"):
        embed_2d(x, "umap")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("umap") is None, reason="umap-learn not installed")
def test_umap_embedding_keeps_clusters_apart() -> None:
    x, y = _clusters()
    coords, method = embed_2d(x, "umap", n_neighbors=10)
    assert method == "umap" and coords.shape == (90, 2) and torch.isfinite(coords).all()
    means = torch.stack([coords[y == k].mean(0) for k in range(3)])
    spread = max(float(coords[y == k].std(0).norm()) for k in range(3))
    assert float(torch.pdist(means).min()) > 2 * spread


def test_embed_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="method"):
        embed_2d(torch.randn(10, 4), "tsne")
    with pytest.raises(ValueError, match="N >= 3"):
        embed_2d(torch.randn(2, 4), "pca")


def test_curves_draw_present_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    recs = [{"step": s, "loss": 1.0 / s, "lr": 0.001, "momentum": 0.996} for s in range(1, 6)]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    records = read_metrics(path)
    assert records == recs
    assert save_curves_figure(records, tmp_path / "c.png") == ["loss", "lr", "momentum"]
    recs[0].update(target_std=0.4, probe_rank=7.0)
    drawn = save_curves_figure(recs, tmp_path / "c2.png")
    assert drawn == ["loss", "lr", "momentum", "target_std", "probe_rank"]
    with Image.open(tmp_path / "c2.png") as im:
        assert im.width > 600


def test_curves_errors(tmp_path: Path) -> None:
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1, "loss": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(bad)
    with pytest.raises(UsageError, match="metrics file not found"):
        read_metrics(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="no plottable"):
        save_curves_figure([{"step": 1, "img_per_s": 3.0}], tmp_path / "x.png")
