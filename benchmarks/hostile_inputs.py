"""A corpus of hostile image files for an ImageFolder, and what the data path should do with each.

:func:`build_corpus` writes, under ``root/hostile/``, one file (or folder entry) per hostile
input, and ``root/good/`` a few ordinary images so that a training over ``root`` has batches to
draw; it returns one :class:`HostileInput` per entry with the expected outcome: ``read`` (the
file decodes to RGB) or ``skipped`` (the dataset logs a warning, records it in ``.skipped`` and
moves on). :func:`classify` runs :meth:`ijepa.data.ImageFolderDataset.verify` and reports what
actually happened to each entry.

Used by ``benchmarks/faults.py`` (the hostile-input table) and ``tests/reliability``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_IMAGES = 13
"""Ordinary images in ``good/``: with the 15 listed hostile files, 28 = 7 batches of 4."""


@dataclass(frozen=True)
class HostileInput:
    """One corpus entry: its name, its path, and what should happen to it."""

    name: str
    path: Path
    expected: str
    """``read`` or ``skipped``."""
    note: str = ""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb_png(side: int = 40_000) -> bytes:
    """A tiny PNG whose header claims ``side x side`` greyscale pixels (1.6 G for 40 000)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)  # far too little data: never decoded anyway
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _rgb(rng: np.random.Generator, h: int = 40, w: int = 48) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def write_good_images(root: str | Path, n: int, seed: int = 1) -> Path:
    """An ImageFolder of ``n`` ordinary RGB PNGs in two classes (``a/``, ``b/``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / ("a" if i % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        _rgb(rng).save(folder / f"{i:03d}.png")
    return root


def build_corpus(root: str | Path, seed: int = 0) -> list[HostileInput]:
    """Write the corpus under ``root`` (class folders ``good/`` and ``hostile/``).

    Returns:
        The hostile entries, in a fixed order. ``unreadable permissions`` is expected ``read``
        when running as root (root reads a ``chmod 000`` file), ``skipped`` otherwise.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    good, bad = root / "good", root / "hostile"
    good.mkdir(parents=True, exist_ok=True)
    bad.mkdir(parents=True, exist_ok=True)
    for i in range(GOOD_IMAGES):
        _rgb(rng).save(good / f"good{i:02d}.png")

    jpeg = _encode(_rgb(rng), "JPEG")
    png = _encode(_rgb(rng), "PNG")
    grey = rng.integers(0, 256, size=(36, 36), dtype=np.uint8)
    entries: list[tuple[str, str, bytes | None, str, str]] = [
        # (name, file name, content, expected, note)
        ("truncated JPEG", "truncated.jpg", jpeg[: len(jpeg) // 2], "skipped", ""),
        ("truncated PNG", "truncated.png", png[: len(png) // 2], "skipped", ""),
        ("zero-byte JPEG", "zero.jpg", b"", "skipped", ""),
        ("zero-byte PNG", "zero.png", b"", "skipped", ""),
        ("PNG named .jpg", "png_named.jpg", png, "read", "decoded by content"),
        (
            "CMYK JPEG",
            "cmyk.jpg",
            _encode(_rgb(rng).convert("CMYK"), "JPEG"),
            "read",
            "",
        ),
        (
            "16-bit greyscale PNG",
            "gray16.png",
            _encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
            "read",
            "",
        ),
        (
            "palette PNG",
            "palette.png",
            _encode(_rgb(rng).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
            "read",
            "",
        ),
        ("palette PNG with transparency", "palette_trns.png", None, "read", ""),
        (
            "RGBA PNG",
            "rgba.png",
            _encode(Image.fromarray(rng.integers(0, 256, size=(30, 30, 4), dtype=np.uint8)), "PNG"),
            "read",
            "",
        ),
        ("greyscale JPEG", "gray.jpg", _encode(Image.fromarray(grey), "JPEG"), "read", ""),
        (
            "decompression bomb (40000^2 px header)",
            "bomb.png",
            decompression_bomb_png(),
            "skipped",
            "",
        ),
        ("non-image file", "notes.jpg", b"this is not an image\n" * 20, "skipped", ""),
        ("unreadable permissions (chmod 000)", "unreadable.png", png, "?", ""),
        ("symlink loop (file -> itself)", "selfloop.jpg", None, "skipped", ""),
        ("dangling symlink", "dangling.png", None, "skipped", ""),
        ("symlink loop (folder -> its parent)", "loop", None, "skipped", "not entered"),
    ]
    out: list[HostileInput] = []
    for name, fname, data, expected, note in entries:
        path = bad / fname
        if fname == "palette_trns.png":
            img = _rgb(rng).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
            img.info["transparency"] = 0
            img.save(path, transparency=0)
        elif fname == "selfloop.jpg":
            os.symlink(fname, path)
        elif fname == "dangling.png":
            os.symlink("does-not-exist.png", path)
        elif fname == "loop":
            os.symlink("..", path)
        else:
            assert data is not None
            path.write_bytes(data)
        if fname == "unreadable.png":
            path.chmod(0)
            expected = "read" if os.geteuid() == 0 else "skipped"
            note = "root reads any file" if os.geteuid() == 0 else ""
        out.append(HostileInput(name, path, expected, note))
    return out


def classify(root: str | Path, corpus: list[HostileInput]) -> dict[str, str]:
    """What :class:`ijepa.data.ImageFolderDataset` does with each entry: ``read`` or the skip.

    Returns:
        ``{entry name: "read" | "skipped: <reason>" | "not listed"}``.
    """
    from ijepa.data import ImageFolderDataset

    ds = ImageFolderDataset(root)
    skipped = {os.path.normpath(s.path): s.reason for s in ds.verify()}
    listed = {os.path.normpath(p) for p, _ in ds.samples}
    result = {}
    for item in corpus:
        key = os.path.normpath(item.path)
        if key in skipped:
            result[item.name] = f"skipped: {skipped[key]}"
        elif key in listed:
            result[item.name] = "read"
        else:
            result[item.name] = "not listed"
    return result


def classify_json(root: str, names: list[str], paths: list[str], out_path: str) -> None:
    """:func:`classify` for entries given as names and paths; writes ``{name: outcome}`` JSON."""
    import json

    corpus = [HostileInput(n, Path(p), "") for n, p in zip(names, paths, strict=True)]
    Path(out_path).write_text(json.dumps(classify(root, corpus)))
