"""``ijepa search`` end to end on a tiny trained checkpoint: from a checkpoint and a data spec,
from ``ijepa embed`` features, with data-set indices and image files as queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa.cli import main as cli_main
from ijepa.data import load_imageset
from ijepa.recipes import TINY_OVERRIDES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("search-run")
    code = cli_main(["train", "--preset", "demo", *TINY_OVERRIDES, "data.batch_size=16",
                     "optimization.max_steps=2", f"logging.folder={run}"])  # fmt: skip
    assert code == 0
    return run / "jepa-latest.pth.tar"


def _png(path: Path, image_chw: np.ndarray) -> Path:
    Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0))).save(path)
    return path


def test_search_from_checkpoint_prints_top_k_and_draws(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "search"
    args = ["search", "--checkpoint", str(checkpoint), "--data", "embedded:64", "--split",
            "test", "--query-index", "0", "7", "--k", "4", "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "index: 64 images x 48 features" in text
    assert "query index 7  label" in text and text.count("similarity ") == 8
    record = json.loads((out / "results.json").read_text())
    assert record["source"]["data"] == "embedded:64" and record["source"]["split"] == "test"
    labels = load_imageset("embedded:64", "test").labels
    classes = load_imageset("embedded:64", "test").classes
    for answer, query in zip(record["answers"], (0, 7), strict=True):
        assert answer["query_index"] == query and answer["label"] == classes[int(labels[query])]
        ranks = [nb["rank"] for nb in answer["neighbours"]]
        sims = [nb["similarity"] for nb in answer["neighbours"]]
        assert ranks == [1, 2, 3, 4] and sims == sorted(sims, reverse=True)
        assert query not in [nb["index"] for nb in answer["neighbours"]]  # itself left out
        for nb in answer["neighbours"]:
            assert nb["label"] == classes[int(labels[nb["index"]])]
    for name in ("neighbours.png", "query-00.png", "query-01.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 100


def test_search_with_faiss_agrees_with_exact(checkpoint, tmp_path, capsys) -> None:
    pytest.importorskip("faiss", reason="the faiss extra (faiss-cpu) is not installed")
    out = tmp_path / "cmp"
    args = ["search", "--checkpoint", str(checkpoint), "--data", "embedded:64", "--backend",
            "faiss", "--compare", "--query-index", *map(str, range(10)), "--k", "5", "--out",
            str(out), "--no-grid", "--no-progress"]  # fmt: skip
    assert cli_main(args) == 0
    assert "faiss search" in capsys.readouterr().out
    agree = json.loads((out / "results.json").read_text())["agreement"]
    assert agree["same_ids"] == 1.0 and agree["max_score_diff"] < 1e-5
    assert not (out / "neighbours.png").exists()


def test_search_embed_features_with_an_image_file(checkpoint, tmp_path, capsys) -> None:
    feats = tmp_path / "feats.safetensors"
    assert cli_main(["embed", "--checkpoint", str(checkpoint), "--data", "embedded:64",
                     "--split", "test", "--out", str(feats), "--no-progress"]) == 0  # fmt: skip
    test_set = load_imageset("embedded:64", "test")
    query = _png(tmp_path / "q.png", test_set.images[5].numpy())  # lossless copy of image 5
    out = tmp_path / "from-feats"
    args = ["search", "--features", str(feats), "--split", "test", "--backend", "torch",
            "--query-image", str(query), "--query-index", "3", "--k", "3", "--out", str(out)]  # fmt: skip
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert f"query {query}  label -" in text
    record = json.loads((out / "results.json").read_text())
    by_index, by_file = record["answers"]
    assert by_index["query_index"] == 3 and by_file["query_index"] is None
    # the file is image 5, embedded the same way as the index: it finds itself first
    assert by_file["neighbours"][0]["index"] == 5
    assert by_file["neighbours"][0]["similarity"] > 0.9999
    assert (out / "query-01.png").is_file()


def test_search_names_imagefolder_files_by_path(checkpoint, tmp_path, capsys) -> None:
    data = load_imageset("embedded:64", "test")
    root = tmp_path / "folder"
    for split in ("train", "val"):
        for i in range(12):
            cls = data.classes[int(data.labels[i])]
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            _png(root / split / cls / f"img{i:02d}.png", data.images[i].numpy())
    out = tmp_path / "folder-search"
    args = ["search", "--checkpoint", str(checkpoint), "--data", f"imagefolder:{root}",
            "--split", "test", "--query-index", "0", "--k", "2", "--out", str(out),
            "--backend", "torch", "--no-progress"]  # fmt: skip
    assert cli_main(args) == 0
    record = json.loads((out / "results.json").read_text())
    answer = record["answers"][0]
    assert answer["query"].startswith(str(root / "val"))
    assert all(Path(nb["name"]).is_file() for nb in answer["neighbours"])


def test_search_errors_are_one_line(checkpoint, tmp_path, capsys) -> None:
    base = ["search", "--checkpoint", str(checkpoint), "--data", "embedded:64",
            "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert cli_main([*base, "--query-index", "64"]) == 2
    assert "outside the indexed set of 64" in capsys.readouterr().err
    assert cli_main([*base]) == 2
    assert "no queries" in capsys.readouterr().err
    assert cli_main(["search", "--features", str(tmp_path / "none.safetensors"),
                     "--query-index", "0"]) == 2  # fmt: skip
    assert "feature file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert cli_main([*base, "--query-image", str(bad)]) == 2
    assert "query image" in capsys.readouterr().err
