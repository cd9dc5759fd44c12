"""A corpus of hostile image files for an ImageFolder, and what the data path should do with each.

:func:`build_corpus` writes, under ``root/hostile/``, one file (or folder entry) per hostile
input, and ``root/good/`` a few ordinary images so that a training over ``root`` has batches to
draw; it returns one :class:`HostileInput` per entry with the expected outcome: ``read`` (the
file decodes to RGB) or ``skipped`` (the dataset logs a warning, records it in ``.skipped`` and
moves on) or ``not listed`` (never a sample). :func:`classify` runs :meth:`ijepa.data.ImageFolderDataset.verify` and reports what
actually happened to each entry.

The one hostile-input corpus of the tests: ``tests/data`` (the dataset's API, decoded pixels),
``tests/reliability`` (trainings over it) and the fault suite (its hostile-input table, also
printed by ``benchmarks/faults.py``) all use it.
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

GOOD_IMAGES = 9
"""Ordinary images in ``good/``: with the 19 listed hostile files, 28 = 7 batches of 4."""


@dataclass(frozen=True)
class HostileInput:
    """One corpus entry: its name, its path, and what should happen to it."""

    name: str
    path: Path
    expected: str
    """``read``, ``skipped`` or ``not listed`` (not an image file name: never a sample)."""
    note: str = ""
    """``not entered``: a link the folder walk refuses (recorded as skipped, never a sample)."""
    pixel: tuple[int, int, int] | None = None
    """The decoded RGB value at (0, 0), where the entry is read and its content is solid."""


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


def _png16_rgb(rgb: tuple[int, int, int], side: int = 8) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot write one); 8-bit ``rgb`` * 257."""
    raw = b"".join(
        b"\x00" + struct.pack(">" + "H" * 3 * side, *[c * 257 for c in rgb] * side)
        for _ in range(side)
    )
    header = struct.pack(">IIBBBBB", side, side, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


RED = (200, 30, 40)
"""The colour of the solid test images whose decoded pixel is checked."""


def build_corpus(root: str | Path, seed: int = 0) -> list[HostileInput]:
    """Write the corpus under ``root`` (class folders ``good/`` and ``hostile/``).

    Returns:
        The hostile entries, in a fixed order. ``unreadable permissions`` is expected ``read``
        when running as root (root reads a ``chmod 000`` file), ``skipped`` otherwise; a file
        without an image extension is ``not listed``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    good, bad = root / "good", root / "hostile"
    good.mkdir(parents=True, exist_ok=True)
    bad.mkdir(parents=True, exist_ok=True)
    for i in range(GOOD_IMAGES):
        _rgb(rng).save(good / f"good{i:02d}.png")

    red = Image.new("RGB", (8, 8), RED)
    jpeg = _encode(_rgb(rng), "JPEG")
    png = _encode(_rgb(rng), "PNG")
    grey = rng.integers(0, 256, size=(36, 36), dtype=np.uint8)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, *RED] + [0] * 762)
    entries: list[tuple[str, str, bytes | None, str, str, tuple[int, int, int] | None]] = [
        # (name, file name, content, expected, note, decoded RGB at (0, 0) when read)
        ("truncated JPEG", "truncated.jpg", jpeg[: len(jpeg) // 2], "skipped", "", None),
        ("truncated PNG", "truncated.png", png[: len(png) // 2], "skipped", "", None),
        ("zero-byte JPEG", "zero.jpg", b"", "skipped", "", None),
        ("zero-byte PNG", "zero.png", b"", "skipped", "", None),
        ("PNG named .jpg", "png_named.jpg", _encode(red, "PNG"), "read", "decoded by content", RED),
        ("upper-case extension", "UPPER.PNG", _encode(red, "PNG"), "read", "", RED),
        (
            "CMYK JPEG",
            "cmyk.jpg",
            _encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
            "read",
            "pure CMYK red",
            None,
        ),
        (
            "16-bit greyscale PNG",
            "gray16.png",
            _encode(Image.fromarray(np.full((8, 8), 1600, np.uint16)), "PNG"),
            "read",
            "1600/65535 of white, not clipped",
            (6, 6, 6),
        ),
        ("16-bit RGB PNG", "rgb16.png", _png16_rgb(RED), "read", "", RED),
        ("palette PNG", "palette.png", _encode(palette, "PNG"), "read", "", RED),
        ("palette PNG with transparency", "palette_trns.png", None, "read", "", RED),
        (
            "RGBA PNG (half transparent)",
            "rgba.png",
            _encode(Image.new("RGBA", (8, 8), (*RED, 128)), "PNG"),
            "read",
            "",
            RED,
        ),
        (
            "greyscale PNG",
            "gray.png",
            _encode(Image.new("L", (8, 8), 77), "PNG"),
            "read",
            "",
            (77, 77, 77),
        ),
        ("greyscale JPEG", "gray.jpg", _encode(Image.fromarray(grey), "JPEG"), "read", "", None),
        (
            "decompression bomb (40000^2 px header)",
            "bomb.png",
            decompression_bomb_png(),
            "skipped",
            "",
            None,
        ),
        (
            "decompression bomb warning (9500^2 px header)",
            "bomb_warn.png",
            decompression_bomb_png(9500),
            "skipped",
            "over PIL's limit, under twice it",
            None,
        ),
        ("non-image file", "notes.jpg", b"this is not an image\n" * 20, "skipped", "", None),
        ("unreadable permissions (chmod 000)", "unreadable.png", png, "?", "", None),
        ("symlink loop (file -> itself)", "selfloop.jpg", None, "skipped", "not entered", None),
        ("dangling symlink", "dangling.png", None, "skipped", "", None),
        ("symlink loop (folder -> its parent)", "loop", None, "skipped", "not entered", None),
        ("symlink loop (folder -> itself)", "loop_self", None, "skipped", "not entered", None),
        ("file with another extension", "readme.txt", b"not a sample", "not listed", "", None),
    ]
    out: list[HostileInput] = []
    for name, fname, data, expected, note, pixel in entries:
        path = bad / fname
        if fname == "palette_trns.png":
            palette.save(path, transparency=0)
        elif fname == "selfloop.jpg":
            os.symlink(fname, path)
        elif fname == "dangling.png":
            os.symlink("does-not-exist.png", path)
        elif fname == "loop":
            os.symlink("..", path)
        elif fname == "loop_self":
            os.symlink(".", path)
        else:
            assert data is not None
            path.write_bytes(data)
        if fname == "unreadable.png":
            path.chmod(0)
            expected = "read" if os.geteuid() == 0 else "skipped"
            note = "root reads any file" if os.geteuid() == 0 else ""
        out.append(HostileInput(name, path, expected, note, pixel))
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


def outcome_matches(expected: str, outcome: str) -> bool:
    """Whether :func:`classify`'s ``outcome`` is what an entry ``expected``."""
    if expected in ("read", "not listed"):
        return outcome == expected
    return outcome.startswith("skipped: ")


def classify_json(root: str, names: list[str], paths: list[str], out_path: str) -> None:
    """:func:`classify` for entries given as names and paths; writes ``{name: outcome}`` JSON."""
    import json

    corpus = [HostileInput(n, Path(p), "") for n, p in zip(names, paths, strict=True)]
    Path(out_path).write_text(json.dumps(classify(root, corpus)))
