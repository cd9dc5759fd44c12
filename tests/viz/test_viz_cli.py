"""`ijepa viz ...` commands on a tiny run folder and a small image folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ijepa.cli import main


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


@pytest.fixture(scope="module")
def data(image_folder: Path) -> str:
    return f"imagefolder:{image_folder}"


def test_viz_masks(tiny_run: Path, data: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tiny_run / "viz" / "masks.png"
    args = ["viz", "masks", "--run", str(tiny_run), "--data", data, "--batches", "10"]
    assert main(args) == 0
    w, h = _png(out)
    assert w > 400 and h > 300
    text = capsys.readouterr().out
    assert "default: 0 of 64 patches never used" in text
    assert "official: 15 of 64 patches never used" in text


def test_viz_masks_without_a_run(tmp_path: Path, data: str) -> None:
    out = tmp_path / "m.png"
    args = ["viz", "masks", "--img-size", "32", "--patch-size", "4", "--data", data]
    assert main([*args, "--batches", "5", "--modes", "default", "--out", str(out)]) == 0
    assert _png(out)[0] > 100
    assert main([*args, "--patch-size", "5", "--out", str(out)]) == 2


def test_viz_attention(tiny_run: Path, data: str, tmp_path: Path) -> None:
    out = tmp_path / "att.png"
    args = ["viz", "attention", str(tiny_run), "--data", data, "--patch", "2,3", "--out", str(out)]
    assert main([*args, "--layers", "0,-1"]) == 0
    _, h = _png(out)
    assert h > 200  # two layer rows
    assert main([*args, "--layers", "5"]) == 2  # a 2-block encoder has no layer 5


def test_viz_features_and_embeddings(
    tiny_run: Path, data: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tiny_run / "jepa-latest.pth.tar"
    assert main(["viz", "features", str(ckpt), "--data", data, "--num-images", "3"]) == 0
    assert _png(tiny_run / "viz" / "features.png")[0] > 200
    args = ["viz", "embeddings", str(tiny_run), "--data", data, "--method", "pca"]
    assert main([*args, "--encoder", "context"]) == 0
    assert _png(tiny_run / "viz" / "embeddings.png") == (600, 500)
    assert "8 images: effective rank" in capsys.readouterr().out


def test_viz_curves(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["viz", "curves", str(tiny_run)]) == 0
    assert _png(tiny_run / "viz" / "curves.png")[0] > 600
    assert "target_std, probe_rank" in capsys.readouterr().out


def test_viz_curves_reports_bad_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    assert main(["viz", "curves", str(tmp_path)]) == 2
    assert "metrics.jsonl:1" in capsys.readouterr().err


def test_viz_predictor(tiny_run: Path, data: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["viz", "predictor", str(tiny_run), "--data", data, "--steps", "20", "--num-images", "2"]
    assert main(args) == 0
    w, h = _png(tiny_run / "viz" / "predictor.png")
    assert w == 800 and h > 300
    assert "decoder train MSE" in capsys.readouterr().out


def test_viz_missing_checkpoint_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["viz", "features", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
