"""Data spec strings: the error type and the parser.

A data spec names a labelled image set in one string, e.g. ``"embedded"``, ``"embedded:2000"``,
``"fashion-mnist:/data/fmnist"``, ``"imagefolder:/data/pets"``, ``"hf:/data/my_ds"`` or
``"webdataset:/data/shards/{split}-{000..099}.tar"``.
The part before the first ``:`` is the *kind*, the rest (possibly empty) is the *argument*.
"""

from __future__ import annotations

__all__ = [
    "EMBEDDED_LAYOUTS",
    "KINDS",
    "SPLITS",
    "DataSpecError",
    "embedded_options",
    "normalize_split",
    "parse_spec",
]

#: Kinds accepted by :func:`parse_spec`, with what their argument means.
KINDS: dict[str, str] = {
    "embedded": "procedural shape images, no download; arg: N images, a layout, key=value",
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
        embedded_options(value, spec)  # validates
    return kind, (value or None)


#: Layout names that ``embedded:LAYOUT`` accepts (see :mod:`ijepa.data.embedded`).
EMBEDDED_LAYOUTS = ("shapes", "object", "scene")


def embedded_options(arg: str, spec: str | None = None) -> dict[str, object]:
    """The options an ``embedded:ARG`` spec sets.

    ``ARG`` is a comma-separated list of: a whole number (the number of images, ``size``), a
    layout name (``shapes``, ``object`` or ``scene``), or ``key=value`` with ``key`` one of
    ``size``, ``seed``, ``image_size`` (whole numbers) or ``layout``. Examples: ``embedded:2000``,
    ``embedded:object``, ``embedded:scene,2000``, ``embedded:seed=3,image_size=48``.
    """
    where = spec if spec is not None else f"embedded:{arg}"
    opts: dict[str, object] = {}

    def put(key: str, value: object) -> None:
        if key in opts:
            raise DataSpecError(f"data spec {where!r} sets {key} twice")
        opts[key] = value

    for item in (part.strip() for part in arg.split(",")):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            key, value = ("layout", item) if item in EMBEDDED_LAYOUTS else ("size", item)
        if key == "layout":
            if value not in EMBEDDED_LAYOUTS:
                raise DataSpecError(
                    f"data spec {where!r}: layout must be one of {', '.join(EMBEDDED_LAYOUTS)}, "
                    f"got {value!r}"
                )
            put("layout", value)
        elif key in ("size", "seed", "image_size"):
            try:
                number = int(value)
            except ValueError:
                raise DataSpecError(
                    f"data spec {where!r}: {key} takes a whole number, got {value!r} (write "
                    "'embedded:N', 'embedded:LAYOUT' or 'embedded:key=value,...')"
                ) from None
            if number < 0 or (key == "size" and number == 0):
                raise DataSpecError(f"data spec {where!r}: {key} must be positive, got {number}")
            put(key, number)
        else:
            raise DataSpecError(
                f"data spec {where!r}: unknown embedded option {key!r}; use a number of images, "
                f"a layout ({', '.join(EMBEDDED_LAYOUTS)}) or size=, seed=, image_size=, layout="
            )
    return opts


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
