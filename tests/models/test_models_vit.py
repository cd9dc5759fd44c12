"""The ViT encoder: sizes, key names, init, masking, resolution changes, intermediate layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ijepa.models import (
    VIT_SIZES,
    VisionTransformer,
    apply_masks,
    get_2d_sincos_pos_embed,
    vit_encoder,
)

EXPECTED_SIZES = {
    "tiny": (192, 12, 3, 4.0),
    "small": (384, 12, 6, 4.0),
    "base": (768, 12, 12, 4.0),
    "large": (1024, 24, 16, 4.0),
    "huge": (1280, 32, 16, 4.0),
    "giant": (1408, 40, 16, 48 / 11),
}


def small_vit(**kwargs: object) -> VisionTransformer:
    defaults: dict[str, object] = dict(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2
    )
    defaults.update(kwargs)
    return VisionTransformer(**defaults)  # type: ignore[arg-type]


def test_size_table() -> None:
    assert set(VIT_SIZES) == set(EXPECTED_SIZES)
    for name, (dim, depth, heads, ratio) in EXPECTED_SIZES.items():
        entry = VIT_SIZES[name]
        assert (entry["embed_dim"], entry["depth"], entry["num_heads"]) == (dim, depth, heads)
        assert entry.get("mlp_ratio", 4.0) == ratio


@pytest.mark.parametrize("name", list(EXPECTED_SIZES))
def test_every_size_builds_and_runs(name: str) -> None:
    dim, _, heads, _ = EXPECTED_SIZES[name]
    # One block at 32 px keeps huge/giant cheap; the width and heads are the real ones.
    enc = vit_encoder(name, img_size=32, patch_size=16, depth=1)
    assert (enc.embed_dim, enc.num_heads, enc.depth) == (dim, heads, 1)
    out = enc(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4, dim)
    assert torch.isfinite(out).all()


def expected_param_count(dim: int, depth: int, ratio: float, patch: int, grid: int) -> int:
    hidden = int(dim * ratio)
    block = (
        (3 * dim * dim + 3 * dim)
        + (dim * dim + dim)
        + (dim * hidden + hidden)
        + (hidden * dim + dim)
        + 4 * dim
    )
    return 3 * patch * patch * dim + dim + grid * grid * dim + depth * block + 2 * dim


@pytest.mark.parametrize("name", list(EXPECTED_SIZES))
def test_full_size_parameter_counts_on_meta(name: str) -> None:
    dim, depth, _, ratio = EXPECTED_SIZES[name]
    with torch.device("meta"):
        enc = vit_encoder(f"vit_{name}", patch_size=14, img_size=224)
    assert enc.depth == depth
    total = sum(p.numel() for p in enc.parameters())
    assert total == expected_param_count(dim, depth, ratio, 14, 16)
    if name == "giant":
        assert enc.blocks[0].mlp.fc1.out_features == 6144
    if name == "huge":  # ViT-H/14 backbone: ~631M parameters (plus the frozen table).
        assert 630e6 < total < 633e6


def test_official_state_dict_keys() -> None:
    enc = small_vit(depth=2)
    per_block = [
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
        "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias",
    ]  # fmt: skip
    expected = {
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    }
    expected |= {f"blocks.{i}.{k}" for i in range(2) for k in per_block}
    assert set(enc.state_dict()) == expected
    assert enc.state_dict()["pos_embed"].shape == (1, 16, 32)
    # Drop path adds no state either.
    assert set(small_vit(depth=2, drop_path_rate=0.2).state_dict()) == expected


def test_pos_embed_is_frozen_sincos() -> None:
    enc = small_vit()
    assert not enc.pos_embed.requires_grad
    torch.testing.assert_close(enc.pos_embed[0], get_2d_sincos_pos_embed(32, 4), rtol=0, atol=0)
    assert "pos_embed" not in {n for n, p in enc.named_parameters() if p.requires_grad}


def test_official_init_statistics() -> None:
    torch.manual_seed(0)
    enc = vit_encoder("tiny", img_size=32, patch_size=16, depth=4)
    for name, module in enc.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            assert module.bias is not None
            assert torch.count_nonzero(module.bias) == 0, name
            assert module.weight.std().item() == pytest.approx(0.02, rel=0.05), name
            assert module.weight.mean().abs().item() < 2e-3, name
        elif isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
    # No depth rescale: the last block's output projections keep std 0.02, not 0.02/sqrt(2*4).
    assert enc.blocks[3].attn.proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert enc.blocks[3].mlp.fc2.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_init_std_is_configurable() -> None:
    torch.manual_seed(0)
    enc = vit_encoder("tiny", img_size=32, patch_size=16, depth=1, init_std=0.05)
    assert enc.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.05, rel=0.05)


def test_vit_encoder_names() -> None:
    a = vit_encoder("tiny", patch_size=4, img_size=28, in_chans=1, depth=2)
    b = vit_encoder("vit_tiny", patch_size=4, img_size=28, in_chans=1, depth=2)
    assert a.grid_size == b.grid_size == (7, 7)
    assert a.num_patches == 49 and a.patch_size == 4 and a.embed_dim == 192
    assert a(torch.randn(1, 1, 28, 28)).shape == (1, 49, 192)
    with pytest.raises(ValueError, match="unknown ViT size"):
        vit_encoder("colossal")


@pytest.mark.parametrize("chans", [1, 3])
def test_input_channels(chans: int) -> None:
    enc = small_vit(in_chans=chans)
    assert enc(torch.randn(2, chans, 16, 16)).shape == (2, 16, 32)


def test_masked_forward_shapes() -> None:
    enc = small_vit().eval()
    x = torch.randn(3, 3, 16, 16)
    m = torch.randint(0, 16, (3, 5))
    assert enc(x, m).shape == (3, 5, 32)
    assert enc(x, torch.randint(0, 16, (2, 3, 5))).shape == (6, 5, 32)
    assert enc(x, [m, m]).shape == (6, 5, 32)
    torch.testing.assert_close(enc(x, [m, m])[3:], enc(x, m))


def test_masks_select_tokens_before_the_blocks() -> None:
    enc = small_vit().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        full = enc(x)
        # All tokens in a shuffled order: attention is permutation-equivariant, so the output
        # is the full output, shuffled the same way.
        perm = torch.randperm(16)
        torch.testing.assert_close(enc(x, perm.expand(2, 16)), full[:, perm], atol=1e-5, rtol=1e-5)
        # A subset: the blocks see only the kept tokens, so this is not a gather of `full`...
        subset = torch.tensor([[0, 3, 5, 9], [1, 2, 14, 15]])
        masked = enc(x, subset)
        assert not torch.allclose(masked, apply_masks(full, subset), atol=1e-3)
        # ...but exactly the blocks run on the gathered (embedded + positioned) tokens.
        tokens = apply_masks(enc.prepare_tokens(x), subset)
        for block in enc.blocks:
            tokens = block(tokens)
        torch.testing.assert_close(masked, enc.norm(tokens))


def test_different_resolution_uses_recomputed_table() -> None:
    enc = small_vit(img_size=32, patch_size=8).eval()
    stored = enc.pos_embed.detach().clone()
    x48 = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = enc(x48)
    assert out.shape == (2, 36, 32)
    torch.testing.assert_close(enc.pos_embed_for((6, 6))[0], get_2d_sincos_pos_embed(32, 6))
    assert enc.pos_embed_for((6, 6)) is enc.pos_embed_for((6, 6))  # cached
    assert torch.equal(enc.pos_embed, stored)  # the stored table is untouched
    assert enc(torch.randn(1, 3, 32, 16)).shape == (1, 8, 32)  # non-square works too
    # Rebuilding the stored table for 48 px gives the same function at 48 px.
    enc.resize_pos_embed(48)
    assert enc.grid_size == (6, 6) and enc.num_patches == 36 and enc.img_size == (48, 48)
    assert enc.pos_embed.shape == (1, 36, 32) and not enc.pos_embed.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(enc(x48), out)


def test_bad_input_size_is_rejected() -> None:
    enc = small_vit()
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        enc(torch.randn(1, 3, 18, 16))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        small_vit(img_size=18)


def test_get_intermediate_layers() -> None:
    enc = small_vit(depth=5).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        normed = enc.get_intermediate_layers(x, n=4)
        raw = enc.get_intermediate_layers(x, n=4, norm=False)
        full = enc(x)
    assert len(normed) == len(raw) == 4
    assert all(t.shape == (2, 16, 32) for t in normed)
    torch.testing.assert_close(normed[-1], full)
    torch.testing.assert_close(enc.norm(raw[-1]), full)
    for a, b in zip(normed, raw, strict=True):
        torch.testing.assert_close(a, enc.norm(b))
    # Different blocks give different outputs (shallowest first).
    assert not torch.allclose(raw[0], raw[-1])
    with pytest.raises(ValueError, match="n must be in"):
        enc.get_intermediate_layers(x, n=6)


def test_attention_maps_are_distributions() -> None:
    enc = small_vit()
    maps = enc.get_attention_maps(torch.randn(2, 3, 16, 16), layer=-1)
    assert maps.shape == (2, 2, 16, 16)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 16))


def test_drop_path_is_random_in_training_only() -> None:
    enc = small_vit(depth=4, drop_path_rate=0.5)
    rates = [b.drop_path.drop_prob for b in enc.blocks[1:]]  # block 0 has rate 0 (identity)
    assert rates == pytest.approx([0.5 / 3, 1.0 / 3, 0.5])
    x = torch.randn(8, 3, 16, 16)
    torch.manual_seed(0)
    a = enc(x)
    b = enc(x)
    assert not torch.allclose(a, b)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))


def test_backward_reaches_trainable_params_only() -> None:
    enc = small_vit()
    enc(torch.randn(2, 3, 16, 16), torch.randint(0, 16, (2, 2, 6))).square().mean().backward()
    assert enc.pos_embed.grad is None
    assert all(p.grad is not None for n, p in enc.named_parameters() if n != "pos_embed")


def test_patch_init_std_scales_only_the_patch_embedding() -> None:
    torch.manual_seed(0)
    official = VisionTransformer(img_size=32, patch_size=4, embed_dim=96, depth=1, num_heads=3)
    torch.manual_seed(0)
    wide = VisionTransformer(
        img_size=32, patch_size=4, embed_dim=96, depth=1, num_heads=3, patch_init_std=0.08
    )
    assert abs(official.patch_embed.proj.weight.std().item() - 0.02) < 0.002
    assert abs(wide.patch_embed.proj.weight.std().item() - 0.08) < 0.008
    assert torch.equal(wide.patch_embed.proj.bias, torch.zeros(96))
    # every other weight has the official init std
    for (name, a), (_, b) in zip(official.named_parameters(), wide.named_parameters(), strict=True):
        if name.startswith("blocks") and a.ndim == 2:
            assert abs(b.std().item() - 0.02) < 0.002, name
    with pytest.raises(ValueError, match="patch_init_std"):
        VisionTransformer(img_size=32, patch_size=4, embed_dim=96, depth=1, patch_init_std=0.0)


@pytest.mark.parametrize(("chans", "side", "patch"), [(3, 32, 4), (1, 28, 7), (3, 48, 16)])
def test_patch_embed_equals_its_convolution(chans: int, side: int, patch: int) -> None:
    """The patch embedding is the stride-p convolution of its ``proj`` weights, computed as one
    matrix product: same tokens, same gradients, contiguous output."""
    from ijepa.models.layers import PatchEmbed

    torch.manual_seed(0)
    embed = PatchEmbed(patch, chans, 24)
    x = torch.randn(2, chans, side, side)
    tokens = embed(x)
    want = embed.proj(x).flatten(2).transpose(1, 2)
    assert tokens.shape == (2, (side // patch) ** 2, 24) and tokens.is_contiguous()
    torch.testing.assert_close(tokens, want, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(tokens.square().sum(), [embed.proj.weight, embed.proj.bias])
    want_grads = torch.autograd.grad(want.square().sum(), [embed.proj.weight, embed.proj.bias])
    for got, ref in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_input_norm_image_ignores_brightness_and_contrast() -> None:
    """``input_norm="image"``: the encoder sees each image standardised, so an image and the same
    image brighter and with more contrast give the same tokens; the default (official) does not
    standardise, and an unknown value is refused."""
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    brighter = 2.5 * x + 0.7
    for norm, same in (("image", True), ("none", False)):
        torch.manual_seed(1)
        enc = VisionTransformer(
            img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, input_norm=norm
        ).eval()
        with torch.no_grad():
            a, b = enc(x), enc(brighter)
        assert torch.allclose(a, b, atol=1e-3) is same, norm
    with pytest.raises(ValueError, match="input_norm"):
        VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                          input_norm="batch")  # fmt: skip
