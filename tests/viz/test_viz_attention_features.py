"""Attention maps and the PCA-of-patch-features picture on a tiny ViT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from viz_helpers import synthetic_images

from ijepa.models import vit_encoder
from ijepa.viz.attention import attention_maps, patch_attention, save_attention_figure
from ijepa.viz.features import feature_pca_figure, pca_rgb


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return vit_encoder("tiny", depth=2, img_size=32, patch_size=8)


def test_attention_maps_shape_and_rows_are_distributions(encoder: torch.nn.Module) -> None:
    x = synthetic_images(2)
    encoder.train()
    maps = attention_maps(encoder, x)
    assert maps.shape == (2, 2, 3, 16, 16)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 3, 16), atol=1e-5)
    assert encoder.training  # mode restored
    last = attention_maps(encoder, x, layers=[-1])
    assert torch.allclose(last[:, 0], maps[:, 1])


def test_patch_attention_is_the_query_row(encoder: torch.nn.Module) -> None:
    x = synthetic_images(1)
    full = attention_maps(encoder, x)[0]  # (L, h, N, N)
    m = patch_attention(encoder, x[0], (1, 2))
    assert m.shape == (2, 3, 4, 4)
    assert torch.allclose(m.flatten(2), full[:, :, 1 * 4 + 2])
    assert torch.allclose(patch_attention(encoder, x[0], 6), m)
    with pytest.raises(ValueError, match="outside"):
        patch_attention(encoder, x[0], (4, 0))
    with pytest.raises(ValueError, match="layer"):
        attention_maps(encoder, x, layers=[2])


def test_attention_figure(tmp_path: Path, encoder: torch.nn.Module) -> None:
    x = synthetic_images(1)
    maps = patch_attention(encoder, x[0], (1, 1))
    out = save_attention_figure(x[0], maps, (1, 1), 8, tmp_path / "att.png")
    with Image.open(out) as im:
        assert im.width > 200 and im.height > 200


def test_pca_rgb_separates_two_feature_groups() -> None:
    # patches of the left half share one feature vector, the right half another (plus noise)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, generator=g)
    tokens = torch.randn(2, 16, 16, generator=g) * 0.01
    left = (torch.arange(16) % 4) < 2
    tokens[:, left] += a
    tokens[:, ~left] += b
    rgb = pca_rgb(tokens, (4, 4))
    assert rgb.shape == (2, 4, 4, 3)
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    first = rgb[..., 0].reshape(2, 16)
    gap = (first[:, left].mean() - first[:, ~left].mean()).abs()
    assert gap > 0.9  # first component = the group, scaled to the full range
    with pytest.raises(ValueError, match="grid"):
        pca_rgb(tokens, (3, 4))


def test_feature_figure(tmp_path: Path, encoder: torch.nn.Module) -> None:
    rgb = feature_pca_figure(encoder, synthetic_images(3), tmp_path / "f.png")
    assert rgb.shape == (3, 4, 4, 3)
    assert (tmp_path / "f.png").stat().st_size > 1000
