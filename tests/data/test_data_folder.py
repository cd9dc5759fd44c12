"""ImageFolderDataset and imagefolder specs on hostile inputs made in tmp_path."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ijepa.data import DataSpecError, ImageFolderDataset, load_imageset
from ijepa.data.folder import load_rgb

RED = (200, 30, 40)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _noise(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _write_png16_rgb(path: Path, arr: np.ndarray) -> None:
    """Hand-written 16-bit RGB PNG (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(png + chunk(b"IEND", b""))


# name -> (writer, expected outcome: "ok" or "skip", expected top-left RGB pixel or None)
def _make_hostile(cls_dir: Path) -> dict[str, str]:
    """Write one file per hostile case into ``cls_dir``; return name -> expected outcome."""
    out: dict[str, str] = {}
    Image.new("RGB", (8, 8), RED).save(cls_dir / "a_good.png")
    out["a_good.png"] = "ok"
    jpg = io.BytesIO()
    _noise().save(jpg, "JPEG", quality=90)
    (cls_dir / "b_truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    out["b_truncated.jpg"] = "skip"
    png = _png_bytes(_noise(seed=1))
    (cls_dir / "c_truncated.png").write_bytes(png[: len(png) // 2])
    out["c_truncated.png"] = "skip"
    (cls_dir / "d_zero.jpg").write_bytes(b"")
    out["d_zero.jpg"] = "skip"
    (cls_dir / "e_png_named.jpg").write_bytes(_png_bytes(Image.new("RGB", (8, 8), RED)))
    out["e_png_named.jpg"] = "ok"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cls_dir / "f_cmyk.jpg", "JPEG", quality=95)
    out["f_cmyk.jpg"] = "ok"
    Image.fromarray(np.full((8, 8), 1600, np.uint16)).save(cls_dir / "g_grey16.png")
    out["g_grey16.png"] = "ok"
    _write_png16_rgb(cls_dir / "h_rgb16.png", np.full((8, 8, 3), (51400, 7710, 10280), np.uint16))
    out["h_rgb16.png"] = "ok"
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, *RED] + [0] * 762)
    pal.save(cls_dir / "i_palette.png")
    out["i_palette.png"] = "ok"
    pal.save(cls_dir / "j_palette_transparent.png", transparency=0)
    out["j_palette_transparent.png"] = "ok"
    Image.new("RGBA", (8, 8), (*RED, 128)).save(cls_dir / "k_rgba.png")
    out["k_rgba.png"] = "ok"
    Image.new("L", (8, 8), 77).save(cls_dir / "l_grey.png")
    out["l_grey.png"] = "ok"
    (cls_dir / "m_not_image.png").write_text("this is not an image\n")
    out["m_not_image.png"] = "skip"
    Image.new("RGB", (40, 40), RED).save(cls_dir / "n_bomb_warn.png")  # > MAX, < 2*MAX
    out["n_bomb_warn.png"] = "skip"
    Image.new("RGB", (64, 64), RED).save(cls_dir / "o_bomb_error.png")  # > 2*MAX
    out["o_bomb_error.png"] = "skip"
    os.symlink(cls_dir / "does_not_exist.png", cls_dir / "p_dangling.png")
    out["p_dangling.png"] = "skip"
    Image.new("RGB", (8, 8), RED).save(cls_dir / "q_UPPER.PNG")
    out["q_UPPER.PNG"] = "ok"
    (cls_dir / "z_readme.txt").write_text("not a sample")  # wrong extension: not listed
    os.symlink(".", cls_dir / "loop_self")  # symlink loops: no hang, no duplicates
    os.symlink("..", cls_dir / "loop_up")
    return out


@pytest.fixture()
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = tmp_path / "set"
    (root / "hostile").mkdir(parents=True)
    (root / "plain").mkdir()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(root / "plain" / "blue.png")
    return root, _make_hostile(root / "hostile")


def test_hostile_inputs_read_or_skipped_and_counted(hostile, caplog) -> None:
    root, expected = hostile
    ds = ImageFolderDataset(root)
    names = [Path(p).name for p, _ in ds.samples]
    assert "z_readme.txt" not in names
    assert len(names) == len(set(names)) == len(expected) + 1  # loops added no duplicates
    assert ds.classes == ["hostile", "plain"]
    with caplog.at_level(logging.WARNING, logger="ijepa.data.folder"):
        skipped = ds.verify()
    skipped_names = {Path(s.path).name for s in skipped if Path(s.path).suffix}
    assert skipped_names == {n for n, o in expected.items() if o == "skip"}
    for name in skipped_names:  # every skip is logged, naming the file
        assert any(name in r.getMessage() for r in caplog.records)
    loops = [s for s in skipped if "loop" in Path(s.path).name]
    assert len(loops) == 2 and all("symlink loop" in s.reason for s in loops)
    bombs = [s for s in skipped if "bomb" in Path(s.path).name]
    assert all(s.reason.startswith("decompression bomb") for s in bombs)
    assert ds.num_good == len(ds.samples) - len(skipped_names)


def test_hostile_files_decode_to_correct_rgb(hostile) -> None:
    root, _ = hostile
    d = root / "hostile"
    px = {n: load_rgb(d / n).getpixel((0, 0)) for n in ("a_good.png", "e_png_named.jpg")}
    assert px == {"a_good.png": RED, "e_png_named.jpg": RED}
    for name in ("i_palette.png", "j_palette_transparent.png", "k_rgba.png", "q_UPPER.PNG"):
        img = load_rgb(d / name)
        assert img.mode == "RGB" and img.size == (8, 8)
        assert img.getpixel((0, 0)) == RED, name
    cmyk = load_rgb(d / "f_cmyk.jpg")
    assert cmyk.mode == "RGB"
    r, g, b = cmyk.getpixel((4, 4))
    assert r > 200 and g < 50 and b < 50  # CMYK (0, 255, 255, 0) is red
    assert load_rgb(d / "g_grey16.png").getpixel((0, 0)) == (6, 6, 6)  # 1600 >> 8, not clipped
    assert load_rgb(d / "h_rgb16.png").getpixel((0, 0)) == RED  # 16-bit RGB keeps its colour
    assert load_rgb(d / "l_grey.png").getpixel((0, 0)) == (77, 77, 77)


def test_getitem_returns_next_good_sample_deterministically(hostile) -> None:
    root, _ = hostile
    ds = ImageFolderDataset(root)
    names = [Path(p).name for p, _ in ds.samples]
    bad = names.index("b_truncated.jpg")
    img, label = ds[bad]
    # b, c, d are bad: the next good one is e_png_named.jpg (red, class 0)
    assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.shape == (3, 8, 8)
    assert label == 0
    assert img[:, 0, 0].tolist() == list(RED)
    again, _ = ds[bad]
    assert torch.equal(again, img)
    files = [Path(s.path).name for s in ds.skipped if Path(s.path).suffix]  # not the loops
    assert files == ["b_truncated.jpg", "c_truncated.png", "d_zero.jpg"]
    n_skipped = len(ds.skipped)
    ds[bad]  # a known bad file is not retried nor recorded twice
    assert len(ds.skipped) == n_skipped


def test_full_epoch_through_dataloader_never_crashes(hostile) -> None:
    root, expected = hostile
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
    assert {Path(s.path).name for s in ds.skipped if Path(s.path).suffix} == {
        n for n, o in expected.items() if o == "skip"
    }


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
