"""ImageFolderDataset and imagefolder specs on the shared hostile-input corpus made in tmp_path."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hostile_inputs
import pytest
import torch
from PIL import Image

from ijepa.data import DataSpecError, ImageFolderDataset, load_imageset
from ijepa.data.folder import load_rgb

RED = hostile_inputs.RED


@pytest.fixture()
def hostile(tmp_path: Path) -> tuple[Path, list[hostile_inputs.HostileInput]]:
    """The shared hostile-input corpus (``tests/faults/hostile_inputs.py``) in ``tmp_path``."""
    root = tmp_path / "set"
    return root, hostile_inputs.build_corpus(root)


def _named(items: list[hostile_inputs.HostileInput], expected: str) -> set[str]:
    return {i.path.name for i in items if i.expected == expected}


def test_hostile_inputs_read_or_skipped_and_counted(hostile, caplog) -> None:
    root, items = hostile
    ds = ImageFolderDataset(root)
    names = [Path(p).name for p, _ in ds.samples]
    assert not _named(items, "not listed") & set(names)
    walked_past = {i.path.name for i in items if i.note == "not entered"}  # links not followed
    listed = {i.path.name for i in items if i.expected != "not listed"} - walked_past
    # every listed file once (the folder loops added no duplicates), and the good images
    assert len(names) == len(set(names)) == len(listed) + hostile_inputs.GOOD_IMAGES
    assert listed <= set(names)
    assert ds.classes == ["good", "hostile"]
    with caplog.at_level(logging.WARNING, logger="ijepa.data.folder"):
        skipped = ds.verify()
    by_name = {Path(s.path).name: s.reason for s in skipped}
    assert set(by_name) == _named(items, "skipped")
    for name in by_name:  # every skip is logged, naming the file
        assert any(name in r.getMessage() for r in caplog.records)
    folder_loops = [name for name in walked_past if name.startswith("loop")]
    assert len(folder_loops) == 2 and all("symlink loop" in by_name[n] for n in folder_loops)
    for bomb in ("bomb.png", "bomb_warn.png"):  # over twice PIL's limit, and just over it
        assert by_name[bomb].startswith("decompression bomb"), by_name[bomb]
    assert ds.num_good == len(ds.samples) - len(set(by_name) - walked_past)


def test_hostile_files_decode_to_correct_rgb(hostile) -> None:
    _, items = hostile
    checked = 0
    for item in items:
        if item.expected != "read":
            continue
        img = load_rgb(item.path)
        assert img.mode == "RGB", item.name
        if item.pixel is not None:
            assert img.getpixel((0, 0)) == item.pixel, item.name
            checked += 1
    assert checked >= 7  # palette, transparency, RGBA, 16-bit grey and RGB, grey, renamed PNG
    cmyk = load_rgb(next(i.path for i in items if i.name == "CMYK JPEG"))
    r, g, b = cmyk.getpixel((4, 4))
    assert r > 200 and g < 50 and b < 50  # CMYK (0, 255, 255, 0) is red


def test_getitem_returns_next_good_sample_deterministically(hostile) -> None:
    root, items = hostile
    ds = ImageFolderDataset(root)
    bad_files = _named(items, "skipped")
    names = [Path(p).name for p, _ in ds.samples]
    bad = next(k for k, n in enumerate(names) if n in bad_files)
    good = next(k for k in range(bad + 1, len(names)) if names[k] not in bad_files)
    img, label = ds[bad]  # the next good sample in order stands in
    assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.shape[0] == 3
    assert label == ds.samples[good][1]
    assert torch.equal(img, ds[good][0])
    again, _ = ds[bad]
    assert torch.equal(again, img)
    recorded = [Path(s.path).name for s in ds.skipped if Path(s.path).name in names]
    assert recorded == [n for n in names[bad:good] if n in bad_files]  # the walk's links aside
    n_skipped = len(ds.skipped)
    ds[bad]  # a known bad file is not retried nor recorded twice
    assert len(ds.skipped) == n_skipped


def test_full_epoch_through_dataloader_never_crashes(hostile) -> None:
    root, items = hostile
    from torchvision.transforms import v2

    tf = v2.Compose(
        [v2.ToImage(), v2.Resize((16, 16), antialias=True), v2.ToDtype(torch.float32, scale=True)]
    )
    ds = ImageFolderDataset(root, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)
    seen = 0
    for x, y in loader:
        assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32
        seen += len(y)
    assert seen == len(ds)
    files = {Path(s.path).name for s in ds.skipped if Path(s.path).suffix}
    assert files == {n for n in _named(items, "skipped") if Path(n).suffix}


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = tmp_path / "c"
    cls.mkdir()
    Image.new("RGB", (4, 4), RED).save(cls / "locked.png")
    Image.new("RGB", (4, 4), RED).save(cls / "open.png")
    os.chmod(cls / "locked.png", 0)
    try:
        ds = ImageFolderDataset(tmp_path)
        ds.verify()
        if os.geteuid() == 0:  # root reads anything: the file is simply read
            assert ds.skipped == []
        else:
            assert [Path(s.path).name for s in ds.skipped] == ["locked.png"]
            assert "PermissionError" in ds.skipped[0].reason
    finally:
        os.chmod(cls / "locked.png", 0o644)
    # The permission path itself, independent of who runs the test:
    real_open = open

    def deny(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    ds = ImageFolderDataset(tmp_path)
    img, _ = ds[0]  # locked.png sorts first: replaced by open.png
    assert img.shape == (3, 4, 4)
    assert len(ds.skipped) == 1 and "PermissionError" in ds.skipped[0].reason


def test_all_files_bad_raises_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.jpg").write_bytes(b"")
    ds = ImageFolderDataset(tmp_path)
    with pytest.raises(DataSpecError, match="none of its 1 files"):
        ds[0]


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataSpecError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(DataSpecError, match="no class subfolders"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "notes.txt").write_text("x")
    with pytest.raises(DataSpecError, match="hold no file"):
        ImageFolderDataset(tmp_path)


def test_nested_files_and_index_range(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    Image.new("RGB", (5, 3), RED).save(tmp_path / "a" / "deep" / "er" / "x.png")
    Image.new("RGB", (5, 3), RED).save(tmp_path / "b" / "y.bmp")
    ds = ImageFolderDataset(tmp_path)
    assert ds.targets == [0, 1] and len(ds) == 2
    assert ds[-1][0].shape == (3, 3, 5)
    with pytest.raises(IndexError):
        ds[2]


def _make_split_folder(root: Path, split: str, classes: list[str], n: int) -> None:
    for k, cls in enumerate(classes):
        d = root / split / cls
        d.mkdir(parents=True)
        for i in range(n):
            colour = (40 * k, 10 * i, 100)
            Image.new("RGB", (48 + 8 * i, 32), colour).save(d / f"{i}.png")


def test_load_imageset_imagefolder(tmp_path: Path) -> None:
    _make_split_folder(tmp_path, "train", ["cat", "dog"], 3)
    _make_split_folder(tmp_path, "val", ["cat", "dog"], 2)
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    tr = load_imageset(f"imagefolder:{tmp_path}", "train", image_size=16)
    te = load_imageset(f"imagefolder:{tmp_path}", "val", image_size=16)
    assert tr.images.shape == (6, 3, 16, 16) and tr.images.dtype == torch.uint8
    assert tr.labels.tolist() == [0, 0, 0, 1, 1, 1] and tr.classes == ["cat", "dog"]
    assert te.images.shape == (4, 3, 16, 16) and te.classes == tr.classes
    assert tr.images[3, :, 8, 8].tolist() == [40, 0, 100]  # colour kept through resize
    grey = load_imageset(f"imagefolder:{tmp_path}", "test", image_size=8, grayscale=True)
    assert grey.images.shape == (4, 1, 8, 8) and len(grey.mean) == 1


def test_load_imageset_imagefolder_errors(tmp_path: Path) -> None:
    _make_split_folder(tmp_path, "train", ["cat", "dog"], 1)
    with pytest.raises(DataSpecError, match="no val or test"):
        load_imageset(f"imagefolder:{tmp_path}", "test")
    _make_split_folder(tmp_path, "val", ["cat", "cow"], 1)
    with pytest.raises(DataSpecError, match="differ from train classes"):
        load_imageset(f"imagefolder:{tmp_path}", "test")
    with pytest.raises(DataSpecError, match="max_images"):
        load_imageset(f"imagefolder:{tmp_path}", "train", max_images=1)
    with pytest.raises(DataSpecError, match="does not exist"):
        load_imageset(f"imagefolder:{tmp_path / 'nope'}", "train")
