"""Batched and per-image transforms: shapes, ranges, equivalences, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ijepa.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    eval_transform_batch,
    official_train_transform,
    sample_crop_boxes,
    train_transform_batch,
)
from ijepa.data.transforms import eval_resize, normalize_batch

MEAN3, STD3 = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _images(b: int = 8, c: int = 3, h: int = 28, w: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("c", "h", "w", "size"), [(1, 28, 28, 28), (3, 32, 32, 24), (3, 40, 30, 32)]
)
def test_train_transform_shape_dtype_range(c: int, h: int, w: int, size: int) -> None:
    x = _images(16, c, h, w)
    mean, std = (0.5,) * c, (0.25,) * c
    g = torch.Generator().manual_seed(0)
    y = train_transform_batch(x, size, mean=mean, std=std, generator=g, hflip=True)
    assert y.shape == (16, c, size, size) and y.dtype == torch.float32
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25  # bilinear output stays in the input range
    assert y.min() >= lo - 1e-5 and y.max() <= hi + 1e-5
    assert torch.isfinite(y).all()


def test_full_crop_equals_plain_resize() -> None:
    x = _images(4, 3, 28, 28)
    g = torch.Generator().manual_seed(1)
    for size in (28, 32, 20):
        y = train_transform_batch(
            x, size, crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), mean=MEAN3, std=STD3, generator=g
        )
        ref = F.interpolate(
            normalize_batch(x, MEAN3, STD3), size=(size, size), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
    same = train_transform_batch(
        x, 28, crop_scale=(1, 1), ratio=(1, 1), mean=MEAN3, std=STD3, generator=g
    )
    torch.testing.assert_close(same, normalize_batch(x, MEAN3, STD3), atol=1e-5, rtol=1e-5)


def test_downscale_is_antialiased() -> None:
    # A 1-pixel checkerboard at 64 px becomes flat grey at 16 px when box-filtered first;
    # plain bilinear sampling would alias it into a pattern.
    board = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 255).to(torch.uint8)
    x = board.expand(2, 1, 64, 64).contiguous()
    y = train_transform_batch(x, 16, crop_scale=(1, 1), ratio=(1, 1), mean=(0.0,), std=(1.0,))
    assert (y - 0.5).abs().max() < 0.05


def test_flip_mirrors_exactly() -> None:
    x = _images(64, 3, 16, 16)
    kwargs = dict(crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), mean=MEAN3, std=STD3)
    plain = train_transform_batch(x, 16, generator=torch.Generator().manual_seed(0), **kwargs)
    flipped = train_transform_batch(
        x, 16, hflip=True, generator=torch.Generator().manual_seed(0), **kwargs
    )
    is_flipped = torch.tensor(
        [torch.allclose(f, p.flip(-1), atol=1e-5) for f, p in zip(flipped, plain, strict=True)]
    )
    is_same = torch.tensor(
        [torch.allclose(f, p, atol=1e-5) for f, p in zip(flipped, plain, strict=True)]
    )
    assert (is_flipped | is_same).all()
    assert 16 < int(is_flipped.sum()) < 48  # about half are mirrored


def test_crop_is_the_sampled_box() -> None:
    # Box sampling is shared with train_transform_batch: resampling the chosen box of an image
    # at its own size reproduces the crop exactly.
    x = _images(32, 3, 32, 32)
    boxes = sample_crop_boxes(
        32, 32, 32, crop_scale=(0.3, 1.0), generator=torch.Generator().manual_seed(5)
    )
    top, left, h, w = boxes.unbind(1)
    assert (h >= 1).all() and (w >= 1).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).float() / 1024
    assert area.min() >= 0.25 and area.max() <= 1.0
    aspect = w.float() / h.float()
    assert aspect.min() > 0.6 and aspect.max() < 1.6
    from ijepa.data.transforms import _resample_boxes

    sq = torch.tensor([[4, 6, 16, 16]])
    out = _resample_boxes(x[:1].float(), sq, 16, None)
    torch.testing.assert_close(out, x[:1, :, 4:20, 6:22].float())


def test_separable_grid_equals_affine_grid() -> None:
    from ijepa.data.transforms import _axis_aligned_grid, crop_affine

    boxes = sample_crop_boxes(6, 30, 40, generator=torch.Generator().manual_seed(2))
    flip = torch.tensor([True, False, True, False, False, True])
    theta = crop_affine(boxes, 30, 40, flip)
    ref = F.affine_grid(theta, [6, 3, 24, 24], align_corners=False)
    torch.testing.assert_close(_axis_aligned_grid(theta, 24), ref)


def test_generator_makes_augmentation_reproducible() -> None:
    x = _images(8)
    a = train_transform_batch(
        x,
        20,
        hflip=True,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        generator=torch.Generator().manual_seed(3),
    )
    b = train_transform_batch(
        x,
        20,
        hflip=True,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        generator=torch.Generator().manual_seed(3),
    )
    c = train_transform_batch(
        x,
        20,
        hflip=True,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        generator=torch.Generator().manual_seed(4),
    )
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fallback_when_no_box_fits() -> None:
    # A very wide image with ratio (1, 1) and full scale cannot fit: centre crop fallback.
    boxes = sample_crop_boxes(4, 10, 40, crop_scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert boxes.tolist() == [[0, 15, 10, 10]] * 4


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="uint8"):
        train_transform_batch(torch.zeros(2, 3, 8, 8), 8, mean=MEAN3, std=STD3)
    with pytest.raises(ValueError, match="channels"):
        eval_transform_batch(_images(2, 1, 8, 8), 8, mean=MEAN3, std=STD3)
    with pytest.raises(ValueError, match="crop_scale"):
        sample_crop_boxes(2, 8, 8, crop_scale=(0.0, 1.0))


def test_eval_transform_batch() -> None:
    x = _images(3, 3, 40, 30)
    y = eval_transform_batch(x, 24, mean=MEAN3, std=STD3)
    assert y.shape == (3, 3, 24, 24) and y.dtype == torch.float32
    # crop_pct=1 on an image of the eval size: normalisation only
    same = eval_transform_batch(_images(2, 1, 28, 28), 28, mean=(0.5,), std=(0.5,), crop_pct=1.0)
    torch.testing.assert_close(same, normalize_batch(_images(2, 1, 28, 28), (0.5,), (0.5,)))
    # A constant image stays constant (normalised value) after resize and crop.
    flat = torch.full((1, 3, 50, 70), 128, dtype=torch.uint8)
    out = eval_transform_batch(flat, 32, mean=MEAN3, std=STD3)
    expected = (128 / 255 - torch.tensor(MEAN3)) / torch.tensor(STD3)
    torch.testing.assert_close(out[0, :, 16, 16], expected)


def test_official_pipelines_on_pil_and_tensor() -> None:
    pil = Image.new("RGB", (300, 260), (120, 60, 30))
    tf = official_train_transform(
        224, hflip=True, color_distortion=True, color_jitter=0.5, blur=True
    )
    y = tf(pil)
    assert y.shape == (3, 224, 224) and y.dtype == torch.float32
    y2 = official_train_transform(64)(torch.full((3, 100, 80), 200, dtype=torch.uint8))
    expected = (200 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(y2[:, 10, 10], expected, atol=1e-4, rtol=1e-4)
    ev = eval_transform(224)(pil)
    assert ev.shape == (3, 224, 224)
    torch.testing.assert_close(
        ev[:, 100, 100],
        (torch.tensor([120, 60, 30]) / 255 - torch.tensor(IMAGENET_MEAN))
        / torch.tensor(IMAGENET_STD),
        atol=1e-4,
        rtol=1e-4,
    )


def test_eval_resize_follows_timm_crop_pct() -> None:
    # the official evaluation: 224 crops of images whose shorter side is resized to 256
    assert eval_resize(300, 400, (224, 224), 0.875) == (256, 341)
    assert eval_resize(400, 300, (224, 224), 0.875) == (341, 256)
    assert eval_resize(28, 28, (28, 28), 0.875) == (32, 32)  # floor(28 / 0.875)
    assert eval_resize(50, 70, (32, 32), 1.0) == (32, 44)
    with pytest.raises(ValueError, match="crop_pct"):
        eval_resize(8, 8, (8, 8), 0.0)


def test_eval_transform_centre_crops_the_resized_image() -> None:
    # a 32x32 image with a bright 28x28 centre: resized to 32 (no change) and cropped to 28 it is
    # all bright; a 1-pixel frame survives only with crop_pct=1 (resize to 28, crop nothing)
    x = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    x[..., 2:30, 2:30] = 255
    out = eval_transform_batch(x, 28, mean=(0.0,), std=(1.0,), crop_pct=0.875)
    assert out.shape == (1, 1, 28, 28) and bool((out == 1.0).all())
    whole = eval_transform_batch(x, 28, mean=(0.0,), std=(1.0,), crop_pct=1.0)
    assert float(whole[0, 0, 0, 0]) < 0.5 < float(whole[0, 0, 14, 14])


def test_one_eval_transform_for_files_tensors_and_exports() -> None:
    from ijepa.compat import build_transform

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)
    pil = Image.fromarray(arr)
    batch = torch.from_numpy(arr).permute(2, 0, 1)[None]
    ref = eval_transform_batch(batch, 32, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for tf in (eval_transform(32), eval_transform(32, in_chans=3), build_transform(32, 3)):
        torch.testing.assert_close(tf(pil), ref[0])  # the same pixels, exactly
        torch.testing.assert_close(tf(batch[0]), ref[0])
    grey = eval_transform(32, mean=(0.5,), std=(0.5,), in_chans=1)(pil)
    assert grey.shape == (1, 32, 32)
