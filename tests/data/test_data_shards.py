"""WebDataset shards written by the test: patterns, splits over ranks and workers, the shuffle
buffer, bad samples and shards skipped and counted, the in-memory loader and the ImageFolder
writer."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ijepa.data import DataSpecError, load_imageset, write_imagefolder_shards
from ijepa.data.shards import WebDatasetStream, count_samples, expand_pattern

wds = pytest.importorskip("webdataset", reason="the webdataset extra is not installed")


def _png(seed: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _write_shards(folder: Path, n_shards: int, per_shard: int, prefix: str = "s") -> list[Path]:
    """Shards whose sample ``i`` has label ``i`` (so a label names its sample)."""
    paths = []
    for s in range(n_shards):
        path = folder / f"{prefix}-{s:03d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for j in range(per_shard):
                i = s * per_shard + j
                sink.write({"__key__": f"{i:06d}", "png": _png(i), "cls": str(i).encode()})
        paths.append(path)
    return paths


def _labels(stream: WebDatasetStream, workers: int) -> list[int]:
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [int(label) for _, label in loader]


def test_brace_pattern_and_split_placeholder(tmp_path) -> None:
    _write_shards(tmp_path, 3, 4, prefix="train")
    _write_shards(tmp_path, 2, 4, prefix="val")
    urls = expand_pattern(str(tmp_path / "train-{000..002}.tar"))
    assert urls == [str(tmp_path / f"train-{i:03d}.tar") for i in range(3)]
    assert len(expand_pattern(str(tmp_path / "{split}-{000..001}.tar"), "test")) == 2
    assert count_samples(urls) == 12
    with pytest.raises(DataSpecError, match=r"1 of 4 shard\(s\) not found: .*train-003.tar"):
        expand_pattern(str(tmp_path / "train-{000..003}.tar"))
    with pytest.raises(DataSpecError, match="name a split"):
        expand_pattern(str(tmp_path / "{split}-000.tar"))


@pytest.mark.parametrize("workers", [0, 2])
def test_shards_split_over_ranks_and_workers(tmp_path, workers: int) -> None:
    urls = [str(p) for p in _write_shards(tmp_path, 8, 5)]
    seen = []
    for rank in range(2):
        stream = WebDatasetStream(urls, seed=3, rank=rank, world_size=2, shuffle_buffer=0)
        seen.append(_labels(stream, workers))
    # each sample exactly once over the ranks, and each rank reads whole shards
    assert sorted(seen[0] + seen[1]) == list(range(40))
    for labels in seen:
        assert len(labels) == 20 and len({i // 5 for i in labels}) == 4
    # the workers of one rank share its shards without overlap
    stream = WebDatasetStream(urls, seed=3, rank=0, world_size=2)
    per_worker = [set(stream.shards_for(w, 2)) for w in range(2)]
    assert not per_worker[0] & per_worker[1]
    assert per_worker[0] | per_worker[1] == set(stream.shards_for(0, 1))


def test_shuffle_buffer_is_seeded_by_seed_and_epoch(tmp_path) -> None:
    urls = [str(p) for p in _write_shards(tmp_path, 2, 30)]

    def order(seed: int, epoch: int, buffer: int) -> list[int]:
        stream = WebDatasetStream(urls, seed=seed, shuffle_buffer=buffer)
        stream.set_epoch(epoch)
        return _labels(stream, 0)

    plain = order(0, 0, 0)
    shuffled = order(0, 0, 16)
    assert sorted(shuffled) == sorted(plain) == list(range(60))
    assert shuffled != plain  # samples mixed within and across shards
    assert order(0, 0, 16) == shuffled  # reproducible
    assert order(0, 1, 16) != shuffled and order(1, 0, 16) != shuffled


def test_cycle_streams_past_one_pass(tmp_path) -> None:
    urls = [str(p) for p in _write_shards(tmp_path, 2, 3)]
    stream = WebDatasetStream(urls, shuffle_buffer=0, cycle=True)
    it = iter(stream)
    labels = [int(next(it)[1]) for _ in range(15)]
    assert sorted(labels[:6]) == list(range(6)) and sorted(labels[6:12]) == list(range(6))


def test_bad_samples_and_shards_are_skipped_and_counted(tmp_path, caplog) -> None:
    good = _write_shards(tmp_path, 1, 6, prefix="good")[0]
    bad = tmp_path / "bad-000.tar"
    with wds.TarWriter(str(bad)) as sink:
        sink.write({"__key__": "000100", "png": _png(100), "cls": b"100"})
        sink.write({"__key__": "000101", "png": b"not a png", "cls": b"101"})  # undecodable
        sink.write({"__key__": "000102", "png": _png(102)})  # no label
        sink.write({"__key__": "000103", "png": _png(103), "cls": b"103"})
    cut = tmp_path / "cut-000.tar"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 100])  # a shard cut short (a failed copy)
    stream = WebDatasetStream([str(good), str(bad), str(cut)], shuffle_buffer=0)
    with caplog.at_level(logging.WARNING, logger="ijepa.data.shards"):
        labels = _labels(stream, 0)
    assert set(labels) >= {0, 1, 2, 3, 4, 5, 100, 103}
    assert 101 not in labels and 102 not in labels
    reasons = {s.path.rsplit(":", 1)[-1]: s.reason for s in stream.skipped if ":" in s.path}
    assert "000101" in reasons and "000102" in reasons and "'cls'" in reasons["000102"]
    assert any("cut-000.tar" in s.path for s in stream.skipped)  # the truncated shard
    assert "skipping sample" in caplog.text and "000101" in caplog.text


def test_too_few_shards_for_ranks_and_workers(tmp_path) -> None:
    urls = [str(p) for p in _write_shards(tmp_path, 2, 2)]
    stream = WebDatasetStream(urls, rank=1, world_size=2)
    with pytest.raises(DataSpecError, match=r"cannot feed 2 rank\(s\) x 2 worker\(s\)"):
        stream.shards_for(1, 2)


def _imagefolder(root: Path, classes: dict[str, int]) -> None:
    n = 0
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for _ in range(count):
            Image.open(io.BytesIO(_png(n, 12))).save(root / name / f"img.{n}.png")
            n += 1


def _contents(data) -> list[tuple[bytes, int]]:
    return sorted((data.images[i].numpy().tobytes(), int(data.labels[i])) for i in range(len(data)))


def test_imagefolder_to_shards_and_back(tmp_path) -> None:
    for split in ("train", "val"):
        _imagefolder(tmp_path / "folder" / split, {"cat": 5, "dog": 4})
        written = write_imagefolder_shards(
            tmp_path / "folder" / split, str(tmp_path / "shards" / f"{split}-%03d.tar"), max_count=4
        )
        assert [Path(w).name for w in written] == [f"{split}-000.tar", f"{split}-001.tar",
                                                   f"{split}-002.tar"]  # fmt: skip
    spec = f"webdataset:{tmp_path / 'shards'}/{{split}}-{{000..002}}.tar"
    shards = load_imageset(spec, "train", image_size=12)
    folder = load_imageset(f"imagefolder:{tmp_path / 'folder'}", "train", image_size=12)
    assert len(shards) == 9 and shards.classes == folder.classes == ["cat", "dog"]
    assert shards.paths is not None and all(":" in p for p in shards.paths)
    # the same images with the same labels (in another order: the writer shuffles)
    assert _contents(shards) == _contents(folder)
    assert len(load_imageset(spec, "test", image_size=12)) == 9
    with pytest.raises(DataSpecError, match="max_images=3"):
        load_imageset(spec, "train", image_size=12, max_images=3)
    with pytest.raises(DataSpecError, match="needs a path"):
        load_imageset("webdataset:", "train")
    assert isinstance(shards.images, torch.Tensor)
