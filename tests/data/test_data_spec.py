"""Spec parsing, split names, option checking and the ImageSet container."""

from __future__ import annotations

import pytest
import torch

from ijepa.data import KINDS, DataSpecError, ImageSet, channel_stats, load_imageset, parse_spec
from ijepa.data.spec import normalize_split


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("embedded", ("embedded", None)),
        ("shapes", ("embedded", None)),
        ("Embedded:500", ("embedded", "500")),
        ("embedded:", ("embedded", None)),
        ("fashion-mnist", ("fashion-mnist", None)),
        ("fashion-mnist:/data/fm", ("fashion-mnist", "/data/fm")),
        ("imagefolder:/data/x:y", ("imagefolder", "/data/x:y")),
        ("hf:rel/path", ("hf", "rel/path")),
    ],
)
def test_parse_spec(spec: str, expected: tuple[str, str | None]) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty data spec"),
        ("imagenet", "unknown data kind 'imagenet'"),
        ("imagefolder", "needs a path"),
        ("hf:", "needs a path"),
        ("embedded:many", "whole number"),
        ("embedded:0", "positive"),
    ],
)
def test_parse_spec_errors(spec: str, match: str) -> None:
    with pytest.raises(DataSpecError, match=match):
        parse_spec(spec)


def test_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(DataSpecError) as err:
        parse_spec("cifar10")
    for kind in KINDS:
        assert f"'{kind}'" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_split_names() -> None:
    assert normalize_split("train") == "train"
    assert normalize_split("val") == normalize_split("Test") == "test"
    with pytest.raises(DataSpecError, match="unknown split"):
        normalize_split("dev")
    with pytest.raises(DataSpecError, match="unknown split"):
        load_imageset("embedded:4", "holdout")


def test_unknown_option_names_valid_ones() -> None:
    with pytest.raises(DataSpecError, match=r"unknown option\(s\) \['download'\].*'size'"):
        load_imageset("embedded:4", download=True)


def _set(n: int = 6, c: int = 3) -> ImageSet:
    images = (
        torch.arange(n * c * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, c, 2, 2)
    )
    return ImageSet(images, torch.arange(n) % 2, ["a", "b"], (0.5,) * c, (0.2,) * c, "toy")


def test_imageset_subset_and_validation() -> None:
    s = _set()
    assert len(s) == 6 and s.num_classes == 2 and s.image_shape == (3, 2, 2)
    sub = s.subset(torch.tensor([4, 1]))
    assert (
        len(sub) == 2 and sub.labels.tolist() == [0, 1] and torch.equal(sub.images[0], s.images[4])
    )
    assert sub.classes == s.classes and sub.mean == s.mean and sub.name == "toy"
    assert len(s.subset(s.labels == 1)) == 3
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(s.images.float(), s.labels, s.classes, s.mean, s.std, "bad")
    with pytest.raises(ValueError, match="labels"):
        ImageSet(s.images, s.labels.int(), s.classes, s.mean, s.std, "bad")
    with pytest.raises(ValueError, match="mean/std"):
        ImageSet(s.images, s.labels, s.classes, (0.5,), (0.2,), "bad")
    with pytest.raises(ValueError, match="classes"):
        ImageSet(s.images, s.labels + 5, s.classes, s.mean, s.std, "bad")


def test_channel_stats() -> None:
    images = torch.zeros(10, 2, 4, 4, dtype=torch.uint8)
    images[:, 0] = 255
    images[:5, 1] = 255
    mean, std = channel_stats(images)
    assert mean == pytest.approx((1.0, 0.5))
    assert std[0] == pytest.approx(1e-3 / 255) and std[1] == pytest.approx(0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 8, 8), generator=g, dtype=torch.uint8)
    m, s = channel_stats(x)
    f = x.double() / 255
    torch.testing.assert_close(torch.tensor(m, dtype=torch.float64), f.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(
        torch.tensor(s, dtype=torch.float64), f.std(dim=(0, 2, 3), unbiased=False)
    )
