"""Data spec strings: the error type and the parser.

A data spec names a labelled image set in one string, e.g. ``"embedded"``, ``"embedded:2000"``,
``"fashion-mnist:/data/fmnist"``, ``"imagefolder:/data/pets"``, ``"hf:/data/my_ds"`` or
``"webdataset:/data/shards/{split}-{000..099}.tar"``.
The part before the first ``:`` is the *kind*, the rest (possibly empty) is the *argument*.
"""

from __future__ import annotations

__all__ = ["KINDS", "SPLITS", "DataSpecError", "normalize_split", "parse_spec"]

#: Kinds accepted by :func:`parse_spec`, with what their argument means.
KINDS: dict[str, str] = {
    "embedded": "procedural coloured-shapes scenes, no download; arg: number of images",
    "fashion-mnist": "Fashion-MNIST idx files; arg: directory holding the four .gz files",
    "imagefolder": "DIR/train and DIR/val class subfolders, decoded into memory; arg: DIR",
    "hf": "a Hugging Face dataset saved with save_to_disk; arg: its path",
    "webdataset": "WebDataset tar shards; arg: a brace pattern ({split} = train/val)",
}

#: Aliases of kinds.
ALIASES: dict[str, str] = {
    "shapes": "embedded",
    "fashion_mnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "wds": "webdataset",
}

#: Split names accepted by the loaders ("val" is an alias of "test").
SPLITS = ("train", "test")


class DataSpecError(ValueError):
    """A data spec, a data option or the data it points to is wrong (message says which)."""


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split a data spec into its kind and argument.

    Args:
        spec: ``"KIND"`` or ``"KIND:ARG"``; kind is case-insensitive and may be an alias
            (``"shapes"`` for ``"embedded"``).

    Returns:
        ``(kind, arg)`` with the canonical kind and ``arg`` ``None`` when absent or empty.

    Raises:
        DataSpecError: empty spec, unknown kind, or a kind that needs an argument without one.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataSpecError(f"empty data spec {spec!r}; valid kinds: {_kinds_help()}")
    head, sep, arg = spec.strip().partition(":")
    kind = head.strip().lower()
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise DataSpecError(
            f"unknown data kind {head!r} in spec {spec!r}; valid kinds: {_kinds_help()}"
        )
    value = arg.strip() if sep else ""
    if kind in ("imagefolder", "hf", "webdataset") and not value:
        raise DataSpecError(f"data spec {spec!r} needs a path: write '{kind}:PATH'")
    if kind == "embedded" and value:
        try:
            n = int(value)
        except ValueError:
            raise DataSpecError(
                f"data spec {spec!r}: 'embedded:N' takes a whole number of images, got {value!r}"
            ) from None
        if n <= 0:
            raise DataSpecError(f"data spec {spec!r}: number of images must be positive, got {n}")
    return kind, (value or None)


def normalize_split(split: str) -> str:
    """Return ``"train"`` or ``"test"`` for a split name (``"val"``/``"validation"`` mean test).

    Raises:
        DataSpecError: any other name.
    """
    s = split.strip().lower()
    if s in ("val", "valid", "validation"):
        return "test"
    if s not in SPLITS:
        raise DataSpecError(f"unknown split {split!r}; use 'train' or 'test' ('val' = 'test')")
    return s


def _kinds_help() -> str:
    kinds = ", ".join(f"'{k}' ({v})" for k, v in KINDS.items())
    aliases = ", ".join(f"'{a}' = '{k}'" for a, k in ALIASES.items())
    return f"{kinds}; aliases: {aliases}"
