"""'hf:PATH' specs: a clear error without `datasets`, and real round trips when it is installed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ijepa.data import DataSpecError, load_imageset


def test_missing_datasets_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataSpecError, match=r"pip install 'ijepa\[datasets\]'"):
        load_imageset("hf:/nowhere", "train")


def _pil(colour: tuple[int, int, int], size: tuple[int, int] = (6, 4)) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.mark.slow  # importing datasets (pyarrow, pandas) takes ~10 s on 2 busy cores
def test_round_trip_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["red", "green"])}
    )
    train = datasets.Dataset.from_dict(
        {"img": [_pil((255, 0, 0)), _pil((0, 255, 0)), _pil((255, 0, 0))], "label": [0, 1, 0]},
        features=features,
    )
    val = datasets.Dataset.from_dict({"img": [_pil((0, 255, 0))], "label": [1]}, features=features)
    datasets.DatasetDict({"train": train, "validation": val}).save_to_disk(str(tmp_path / "ds"))
    tr = load_imageset(f"hf:{tmp_path / 'ds'}", "train")
    assert tr.images.shape == (3, 3, 4, 6) and tr.images.dtype == torch.uint8
    assert tr.labels.tolist() == [0, 1, 0] and tr.classes == ["red", "green"]
    assert tr.images[1, :, 0, 0].tolist() == [0, 255, 0]
    te = load_imageset(f"hf:{tmp_path / 'ds'}", "test", image_size=4, grayscale=True)
    assert te.images.shape == (1, 1, 4, 4) and len(te.mean) == 1


def test_plain_dataset_int_and_string_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    arrays = [np.full((5, 5), v, np.uint8) for v in (10, 20, 30)]
    ds = datasets.Dataset.from_dict({"image": arrays, "label": ["b", "a", "b"]})
    ds.save_to_disk(str(tmp_path / "plain"))
    s = load_imageset(f"hf:{tmp_path / 'plain'}", "train")
    assert s.classes == ["a", "b"] and s.labels.tolist() == [1, 0, 1]
    assert s.images.shape == (3, 3, 5, 5) and s.images[2, 0, 0, 0].item() == 30
    with pytest.raises(DataSpecError, match="usable as 'train' only"):
        load_imageset(f"hf:{tmp_path / 'plain'}", "test")
    mixed = datasets.Dataset.from_dict(
        {"image": [_pil((1, 2, 3), (4, 4)), _pil((1, 2, 3), (5, 4))], "y": [3, 0]}
    )
    mixed.save_to_disk(str(tmp_path / "mixed"))
    with pytest.raises(DataSpecError, match="pass image_size"):
        load_imageset(f"hf:{tmp_path / 'mixed'}", "train", label_column="y")
    ok = load_imageset(f"hf:{tmp_path / 'mixed'}", "train", label_column="y", image_size=3)
    assert ok.classes == ["0", "1", "2", "3"] and ok.images.shape == (2, 3, 3, 3)
    with pytest.raises(DataSpecError, match="no column 'label'"):
        load_imageset(f"hf:{tmp_path / 'mixed'}", "train")
    with pytest.raises(DataSpecError, match="cannot load a saved dataset"):
        load_imageset(f"hf:{tmp_path / 'nothing_here'}", "train")
