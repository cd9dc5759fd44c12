"""Pixel targets: patch order, per-patch normalisation, batch order; the pixel predictor."""

from __future__ import annotations

import pytest
import torch

from ijepa.models import VisionTransformer
from ijepa.models.heads import PixelPredictor, patchify, pixel_targets


def test_patchify_matches_patch_positions() -> None:
    images = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).view(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    # patch (row 1, col 2) of image 1 is index 1 * 3 + 2 = 5
    block = images[1, :, 4:8, 8:12]  # (C, p, p)
    assert torch.equal(patches[1, 5], block.permute(1, 2, 0).reshape(-1))
    with pytest.raises(ValueError, match="divisible"):
        patchify(images, 5)


def test_pixel_targets_are_normalised_and_in_predictor_order() -> None:
    torch.manual_seed(0)
    images = torch.rand(3, 1, 8, 8) * 5 + 2
    masks = torch.tensor([[[0, 1], [2, 3], [1, 3]], [[3, 0], [0, 2], [2, 1]]])  # (M=2, B=3, 2)
    t = pixel_targets(images, 4, masks, nenc=2)
    assert t.shape == (2 * 2 * 3, 2, 16) and not t.requires_grad
    assert torch.allclose(t.mean(-1), torch.zeros(()), atol=1e-5)
    assert torch.allclose(t.std(-1, unbiased=False), torch.ones(()), atol=1e-3)
    # row (i * nenc + j) * B + b holds target block i of image b, for every context mask j
    patches = patchify(images, 4)
    for i in range(2):
        for j in range(2):
            for b in range(3):
                raw = patches[b, masks[i, b]]
                want = (raw - raw.mean(-1, keepdim=True)) / raw.var(
                    -1, keepdim=True, unbiased=False
                ).add(1e-6).sqrt()
                assert torch.allclose(t[(i * 2 + j) * 3 + b], want, atol=1e-5)


def test_pixel_predictor_shapes_and_state() -> None:
    torch.manual_seed(1)
    enc = VisionTransformer(
        img_size=16, patch_size=4, in_chans=2, embed_dim=32, depth=1, num_heads=2
    )
    pred = PixelPredictor(
        4, 2, grid_size=4, embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2
    )
    x = torch.randn(3, 2, 16, 16)
    ctx = torch.arange(6)[None, None].expand(1, 3, 6)
    tgt = torch.arange(8, 12)[None, None].expand(2, 3, 4)
    out = pred(enc(x, ctx), ctx, tgt)
    assert out.shape == (2 * 3, 4, 4 * 4 * 2)
    assert {"pixel_head.weight", "pixel_head.bias", "predictor_proj.weight"} <= set(
        pred.state_dict()
    )
    out.square().mean().backward()
    assert pred.pixel_head.weight.grad is not None
