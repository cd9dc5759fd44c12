"""Fashion-MNIST idx parsing on tiny files written here; file search and download errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ijepa.data import DataSpecError, load_imageset, read_idx
from ijepa.data import fashion_mnist as fm


def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = 0x800 | arr.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(data)


def _make_split(d: Path, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    img_name, lab_name = fm.FILES[split]
    _write(d / img_name, _idx_bytes(images))
    _write(d / lab_name, _idx_bytes(labels))
    return images, labels


def test_tiny_files_load(tmp_path: Path) -> None:
    images, labels = _make_split(tmp_path, "train", 7)
    timg, tlab = _make_split(tmp_path, "test", 3, seed=1)
    tr = load_imageset(f"fashion-mnist:{tmp_path}", "train")
    te = load_imageset(f"fashion-mnist:{tmp_path}", "test")
    assert tr.images.shape == (7, 1, 28, 28) and tr.images.dtype == torch.uint8
    assert np.array_equal(tr.images[:, 0].numpy(), images)
    assert tr.labels.dtype == torch.int64 and tr.labels.tolist() == labels.tolist()
    assert np.array_equal(te.images[:, 0].numpy(), timg) and te.labels.tolist() == tlab.tolist()
    assert (
        tr.classes[0] == "T-shirt/top" and tr.classes[9] == "Ankle boot" and len(tr.classes) == 10
    )
    assert tr.mean == fm.MEAN and len(tr.std) == 1


def test_read_idx_uncompressed(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x-idx3-ubyte").write_bytes(_idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte", 3), arr)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00", "too short"),
        (struct.pack(">I", 0x0801) + struct.pack(">I", 2) + b"\x00\x01", "magic number 0x00000801"),
        (struct.pack(">I", 0x0D03) + b"\x00" * 12, "magic number 0x00000d03"),
        (struct.pack(">I", 0x0803) + b"\x00" * 4, "truncated header"),
        (
            struct.pack(">III", 0x0803, 2, 28) + struct.pack(">I", 28) + b"\x00" * 100,
            "truncated or corrupt",
        ),
    ],
    ids=["short", "labels-magic", "dtype-magic", "short-header", "short-data"],
)
def test_corrupt_headers(tmp_path: Path, data: bytes, match: str) -> None:
    p = tmp_path / "bad.gz"
    _write(p, data)
    with pytest.raises(DataSpecError, match=match):
        read_idx(p, 3)


def test_not_gzip_and_label_errors(tmp_path: Path) -> None:
    p = tmp_path / "plain.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(DataSpecError, match="cannot read idx file"):
        read_idx(p, 1)
    _make_split(tmp_path, "train", 4)
    _write(tmp_path / fm.FILES["train"][1], _idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataSpecError, match="4 images but 5 labels"):
        load_imageset(f"fashion-mnist:{tmp_path}")
    _write(tmp_path / fm.FILES["train"][1], _idx_bytes(np.full(4, 10, np.uint8)))
    with pytest.raises(DataSpecError, match="out of range"):
        load_imageset(f"fashion-mnist:{tmp_path}")


def test_missing_files_in_given_dir(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", 2)
    with pytest.raises(DataSpecError, match=r"lacks t10k-images-idx3-ubyte\.gz"):
        load_imageset(f"fashion-mnist:{tmp_path}", "test")


def test_search_order_and_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    cache = tmp_path / "cache"
    # not found anywhere, download off
    with pytest.raises(DataSpecError, match="download=False"):
        load_imageset("fashion-mnist", root=str(cache), download=False)
    # download attempted into the cache; its failure is explained
    calls: list[tuple[str, str]] = []

    def failing_download(url: str, root: str, filename: str, md5: str) -> None:
        calls.append((url, root))
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", failing_download)
    with pytest.raises(DataSpecError, match=r"could not download .*dataset-fashion-mnist"):
        load_imageset("fashion-mnist", root=str(cache))
    assert calls == [(fm.URL + "train-images-idx3-ubyte.gz", str(cache / "fashion-mnist"))]
    # files in the cache are found (no download)
    _make_split(cache / "fashion-mnist", "train", 3)
    assert len(load_imageset("fashion-mnist", root=str(cache))) == 3
    # the system folder comes first
    (tmp_path / "system").mkdir()
    _make_split(tmp_path / "system", "train", 5)
    assert len(load_imageset("fashion-mnist", root=str(cache))) == 5


@pytest.mark.skipif(
    not fm.SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist absent"
)
def test_debian_package_files() -> None:
    te = load_imageset("fashion-mnist", "test")
    assert te.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(te.labels).tolist() == [1000] * 10
    # the published training statistics, checked on the test split (close, not equal)
    x = te.images.float() / 255
    assert abs(x.mean().item() - fm.MEAN[0]) < 0.01 and abs(x.std().item() - fm.STD[0]) < 0.01
