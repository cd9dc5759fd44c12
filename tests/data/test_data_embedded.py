"""The embedded procedural shapes set: determinism, shapes, labels, statistics, both layouts."""

from __future__ import annotations

import time

import pytest
import torch

from ijepa.data import SHAPES, DataSpecError, ImageSet, load_imageset
from ijepa.data.embedded import STATS_IMAGES, generate_scenes


def test_deterministic_and_splits_differ() -> None:
    a = load_imageset("embedded:300", "train")
    b = load_imageset("embedded:300", "train")
    t = load_imageset("embedded:300", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, t.images)
    # no test image equals a train image
    assert not {x.numpy().tobytes() for x in a.images} & {x.numpy().tobytes() for x in t.images}
    other_seed = load_imageset("embedded:300", "train", seed=1)
    assert not torch.equal(a.images, other_seed.images)


def test_shapes_dtypes_and_classes() -> None:
    s = load_imageset("shapes", "test", size=200)
    assert isinstance(s, ImageSet) and len(s) == 200
    assert s.images.shape == (200, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.labels.dtype == torch.int64 and s.classes == list(SHAPES)
    assert len(s.mean) == len(s.std) == 3
    assert all(0.2 < m < 0.8 for m in s.mean) and all(0.1 < v < 0.5 for v in s.std)
    big = load_imageset("embedded:8", "train", image_size=48)
    assert big.images.shape == (8, 3, 48, 48)
    # images use the whole range and are not constant
    assert s.images.float().std() > 30


def test_prefix_does_not_depend_on_size() -> None:
    small = load_imageset("embedded:100", "train")
    large = load_imageset("embedded:600", "train")
    assert torch.equal(small.images, large.images[:100])
    assert torch.equal(small.labels, large.labels[:100])


def test_label_balance_shape_and_count() -> None:
    default = load_imageset("embedded:1000", "train")
    counts = torch.bincount(default.labels, minlength=5)
    assert counts.min() >= 190 and counts.max() <= 210
    shape = load_imageset("embedded:1000", "train", layout="scene")
    counts = torch.bincount(shape.labels, minlength=5)
    assert counts.min() >= 190 and counts.max() <= 210
    count = load_imageset("embedded:1000", "train", label="count", layout="scene")
    assert count.classes == ["1", "2", "3", "4"]
    c = torch.bincount(count.labels, minlength=4)
    assert c.min() >= 240 and c.max() <= 260
    assert torch.equal(count.images, shape.images)  # two labellings of the same images
    one = load_imageset("embedded:50", "train", label="count", layout="scene", max_distractors=0)
    assert one.classes == ["1"] and (one.labels == 0).all()


def test_layout_objects_inside_apart_and_main_largest() -> None:
    from ijepa.data.layouts import _sample_layout
    from ijepa.data.render import EXTENT as _EXTENT

    g = torch.Generator().manual_seed(0)
    shape = torch.arange(400) % 5
    n_distr = torch.arange(400) % 4
    lay = _sample_layout(shape, n_distr, 32, 1.0, 3, g)
    assert torch.equal(lay.cls[:, 0], shape)
    assert torch.equal(lay.active.sum(1).long(), n_distr + 1)  # count label = objects drawn
    rad = lay.r * _EXTENT[lay.cls]  # bounding radius of every object
    on = lay.active.bool()
    assert (
        (lay.cx - rad >= 0) & (lay.cx + rad <= 32) & (lay.cy - rad >= 0) & (lay.cy + rad <= 32)
    )[on].all()
    dist = torch.hypot(lay.cx[:, :, None] - lay.cx[:, None], lay.cy[:, :, None] - lay.cy[:, None])
    both = on[:, :, None] & on[:, None, :] & ~torch.eye(4, dtype=torch.bool)
    assert (dist >= rad[:, :, None] + rad[:, None, :])[both].all()  # no overlap
    main_r = lay.r[:, :1]
    assert (lay.r[:, 1:][on[:, 1:]] < main_r.expand(-1, 3)[on[:, 1:]]).all()


def test_statistics_shared_by_splits_and_from_train() -> None:
    tr = load_imageset("embedded", "train", size=STATS_IMAGES)
    te = load_imageset("embedded:10", "test")
    assert tr.mean == te.mean and tr.std == te.std
    x = tr.images.float() / 255
    mean = x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(mean, torch.tensor(tr.mean), atol=1e-4, rtol=0)


def test_generation_is_fast() -> None:
    t = time.perf_counter()
    generate_scenes(1024, split="train", seed=11)
    generate_scenes(1024, split="train", seed=11, layout="scene")
    assert time.perf_counter() - t < 10.0  # about 0.4 s on one core; generous for busy CI


def test_option_errors() -> None:
    with pytest.raises(DataSpecError, match="label"):
        load_imageset("embedded:10", label="colour")
    with pytest.raises(DataSpecError, match="max_distractors"):
        load_imageset("embedded:10", layout="scene", max_distractors=7)
    with pytest.raises(DataSpecError, match="layout='scene' only"):
        load_imageset("embedded:10", max_distractors=1)
    with pytest.raises(DataSpecError, match="layout='scene' only"):
        load_imageset("embedded:10", label="count")
    with pytest.raises(DataSpecError, match="layout must be"):
        load_imageset("embedded:10", layout="grid")
    with pytest.raises(DataSpecError, match="unknown option"):
        load_imageset("embedded:10", colours=3)
    with pytest.raises(DataSpecError, match="disagree"):
        load_imageset("embedded:10", size=20)
    with pytest.raises(DataSpecError, match="image_size"):
        load_imageset("embedded:10", image_size=8)


def _mode_fraction(img: torch.Tensor) -> float:
    """Fraction of pixels with the most common RGB value; img uint8 (3, H, W)."""
    _, counts = img.flatten(1).unique(dim=1, return_counts=True)
    return counts.max().item() / counts.sum().item()


def test_plain_background_variant() -> None:
    plain = load_imageset(
        "embedded:20", "test", layout="scene", background="plain", max_distractors=0
    )
    textured = load_imageset("embedded:20", "test", layout="scene", max_distractors=0)
    assert min(_mode_fraction(x) for x in plain.images) > 0.4  # flat background
    assert max(_mode_fraction(x) for x in textured.images) < 0.1  # gradient, texture, noise
    assert torch.equal(plain.labels, textured.labels)  # same layouts and labels
    with pytest.raises(DataSpecError, match="background"):
        load_imageset("embedded:4", layout="scene", background="stripes")


def test_object_layout_one_grey_object_near_the_centre() -> None:
    s = load_imageset("embedded:object,200", "test")
    x = s.images.float()
    # grey: the three channels differ only by the pixel noise
    assert (x[:, 0] - x[:, 1]).abs().mean() < 12 and (x[:, 1] - x[:, 2]).abs().mean() < 12
    grey = x.mean(1)  # (N, 32, 32)
    bright = grey > (grey.amin(dim=(1, 2), keepdim=True) + grey.amax(dim=(1, 2), keepdim=True)) / 2
    frac = bright.float().mean(dim=(1, 2))
    assert frac.min() > 0.1 and frac.max() < 0.8  # one large object, never the whole image
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    w = bright.float()
    cy = (w * ys).sum((1, 2)) / w.sum((1, 2))
    cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
    assert ((cx - 15.5).abs() < 6).all() and ((cy - 15.5).abs() < 6).all()
    assert s.classes == list(SHAPES) and s.name.startswith("embedded[object")
    scene = load_imageset("embedded:200", "test", layout="scene")
    assert not torch.equal(scene.images, s.images) and scene.mean != s.mean


def test_shapes_layout_many_objects_of_one_class_anywhere() -> None:
    """The default layout: grey, several objects, and where their pixels fall is not the class."""
    s = load_imageset("embedded:1000", "test")
    assert s.name.startswith("embedded[shapes")
    x = s.images.float()
    assert (x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all()  # grey
    background = x[:, 0].flatten(1).median(dim=1).values  # the plain background level
    differs = (x[:, 0] - background[:, None, None]).abs() > 40  # object pixels
    covered = differs.float().mean(dim=(1, 2))
    assert covered.min() > 0.05 and covered.max() < 0.8  # several small objects, never all
    # the mean object position of each class is near the centre: position does not say the class
    _, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    w = differs.float()
    cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
    for c in range(5):
        assert abs(float(cx[s.labels == c].mean()) - 15.5) < 1.5
    # so does brightness: objects lighter and darker than the background in every class
    lighter = ((x[:, 0] - background[:, None, None]) > 40).flatten(1).any(1)
    darker = ((x[:, 0] - background[:, None, None]) < -40).flatten(1).any(1)
    for c in range(5):
        assert lighter[s.labels == c].float().mean() > 0.3
        assert darker[s.labels == c].float().mean() > 0.3
