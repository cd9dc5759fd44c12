"""Padded masks (-1) in the ViT encoder and the predictor: real tokens come out exactly as
without padding, for every attention kernel."""

from __future__ import annotations

import pytest
import torch

from ijepa.models import VisionTransformer, VisionTransformerPredictor

CTX = torch.tensor([[[0, 5, 6, -1, -1], [2, 3, 9, 11, 14]]])  # (1, B=2, 5): image 0 padded
TGT = torch.tensor([[[1, 4, -1], [0, 1, 4]], [[8, 12, 13], [5, 6, -1]]])  # (M=2, B=2, 3)


def _nets() -> tuple[VisionTransformer, VisionTransformerPredictor]:
    torch.manual_seed(0)
    enc = VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2
    )
    pred = VisionTransformerPredictor(
        grid_size=4, embed_dim=32, predictor_embed_dim=16, depth=2, num_heads=2
    )
    return enc, pred


@pytest.mark.parametrize("impl", ["sdpa", "plain", "auto"])
def test_padding_leaves_real_tokens_unchanged(impl: str) -> None:
    enc, pred = _nets()
    enc.set_attn_impl(impl)  # type: ignore[arg-type]
    pred.set_attn_impl(impl)  # type: ignore[arg-type]
    x = torch.randn(2, 1, 16, 16)
    z = enc(x, CTX)
    assert z.shape == (2, 5, 32) and bool(torch.isfinite(z).all())
    alone0 = enc(x[:1], CTX[:, :1, :3])  # image 0's context without padding
    assert torch.allclose(z[0, :3], alone0[0], atol=1e-5)
    assert torch.allclose(z[1], enc(x[1:], CTX[:, 1:])[0], atol=1e-5)
    p = pred(z, CTX, TGT)  # rows: (target block i, image b) -> i * 2 + b
    assert p.shape == (4, 3, 32) and bool(torch.isfinite(p).all())
    assert torch.allclose(p[0, :2], pred(alone0, CTX[:, :1, :3], TGT[:1, :1, :2])[0], atol=1e-5)
    z1 = enc(x[1:], CTX[:, 1:])
    assert torch.allclose(p[3, :2], pred(z1, CTX[:, 1:], TGT[1:, 1:, :2])[0], atol=1e-5)


def test_given_valid_masks_equal_found_ones() -> None:
    enc, pred = _nets()
    x = torch.randn(2, 1, 16, 16)
    vc, vt = CTX >= 0, TGT >= 0
    z = enc(x, CTX)
    assert torch.equal(enc(x, CTX.clamp(min=0), valid=vc), z)
    assert torch.equal(pred(z, CTX.clamp(min=0), TGT.clamp(min=0), vc, vt), pred(z, CTX, TGT))


def test_padding_is_refused_with_the_shared_context_pass() -> None:
    torch.manual_seed(0)
    pred = VisionTransformerPredictor(
        grid_size=4, embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2, shared_context=True
    )
    with pytest.raises(ValueError, match="shared_context"):
        pred(torch.randn(2, 5, 32), CTX, TGT)
