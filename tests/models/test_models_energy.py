"""Energy Transformer encoder: shapes, the written-out gradient, energy descent, state round trip."""

from __future__ import annotations

import io

import pytest
import torch

from ijepa.models.energy import EnergyTransformer


def _encoder(**kw: object) -> EnergyTransformer:
    args: dict[str, object] = dict(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, num_heads=2, steps=6
    )
    args.update(kw)
    return EnergyTransformer(**args)  # type: ignore[arg-type]


def test_shapes_full_masked_and_layers() -> None:
    torch.manual_seed(0)
    enc = _encoder()
    x = torch.randn(3, 1, 16, 16)
    assert enc(x).shape == (3, 16, 32)
    masks = torch.stack([torch.arange(5), torch.arange(5, 10)])[:, None].expand(2, 3, 5)
    assert enc(x, masks).shape == (6, 5, 32)  # mask-major, like the ViT
    layers = enc.get_intermediate_layers(x, 4)
    assert len(layers) == 4 and all(t.shape == (3, 16, 32) for t in layers)
    assert torch.allclose(layers[-1], enc(x))
    with pytest.raises(ValueError, match="n must be in"):
        enc.get_intermediate_layers(x, 7)
    assert enc(torch.randn(2, 1, 24, 24)).shape == (2, 36, 32)  # another grid: sin-cos rebuilt


def test_masked_tokens_equal_full_encoding_of_the_kept_tokens() -> None:
    """Masking keeps only the named tokens, so every other token must be out of the descent."""
    torch.manual_seed(1)
    enc = _encoder()
    x = torch.randn(2, 1, 16, 16)
    keep = torch.tensor([[0, 3, 7, 9], [1, 2, 12, 15]])
    tokens, _ = enc.prepare_tokens(x, keep)
    assert torch.allclose(enc(x, keep), enc.descend(tokens)[-1])
    assert not torch.allclose(enc(x, keep)[0], enc(x)[0, keep[0]])  # context matters


def test_written_out_gradient_equals_autograd() -> None:
    torch.manual_seed(2)
    enc = _encoder(embed_dim=24, num_heads=3).double()
    g = torch.randn(2, 7, 24, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    for v in (None, valid):
        energy = (enc.attn.energy(g, v) + enc.hopfield.energy(g, v)).sum()
        (auto,) = torch.autograd.grad(energy, g)
        ours = enc.attn.grad(g, v) + enc.hopfield.grad(g, v)
        assert torch.allclose(auto, ours, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_energy_decreases_over_the_steps(seed: int) -> None:
    torch.manual_seed(seed)
    enc = _encoder(steps=12, patch_init_std=0.2).double()
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    for masks in (None, torch.stack([torch.randperm(16)[:9].sort().values for _ in range(4)])):
        e = enc.energies(x, masks)  # (steps + 1, B)
        assert e.shape == (13, 4)
        steps = e[1:] - e[:-1]
        assert bool((steps < 0).all()), steps  # strictly down at every step, for every image
        assert float((e[0] - e[-1]).min()) > 0


def test_padding_is_ignored() -> None:
    """A row padded with -1 encodes its real tokens exactly as the unpadded row does."""
    torch.manual_seed(3)
    enc = _encoder()
    x = torch.randn(2, 1, 16, 16)
    short = torch.tensor([[0, 5, 6], [2, 3, 9]])
    padded = torch.tensor([[0, 5, 6, -1, -1], [2, 3, 9, 11, 14]])
    out = enc(x, padded)
    assert out.shape == (2, 5, 32)
    assert torch.allclose(out[0, :3], enc(x[:1], short[:1])[0], atol=1e-6)
    assert torch.allclose(out[1], enc(x[1:], padded[1:])[0], atol=1e-6)
    assert not bool(torch.isnan(out).any())


def test_gradients_reach_every_parameter_and_inference_mode_works() -> None:
    torch.manual_seed(4)
    enc = _encoder()
    x = torch.randn(2, 1, 16, 16)
    enc(x, torch.arange(10)[None].expand(2, 10)).square().mean().backward()
    for name, p in enc.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert not enc.pos_embed.requires_grad
    with torch.inference_mode():
        assert enc(x).shape == (2, 16, 32)


def test_state_dict_round_trip_and_names() -> None:
    torch.manual_seed(5)
    enc = _encoder(num_memories=40, head_dim=8)
    names = set(enc.state_dict())
    assert names == {
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "pos_embed",
        "norm.gamma",
        "norm.delta",
        "attn.wq",
        "attn.wk",
        "hopfield.xi",
    }
    assert enc.attn.wq.shape == (2, 8, 32) and enc.hopfield.xi.shape == (40, 32)
    buf = io.BytesIO()
    torch.save(enc.state_dict(), buf)
    buf.seek(0)
    twin = EnergyTransformer(**enc.architecture())  # type: ignore[arg-type]
    twin.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(enc(x), twin(x))


def test_attention_maps_are_distributions() -> None:
    torch.manual_seed(6)
    enc = _encoder()
    maps = enc.get_attention_maps(torch.randn(2, 1, 16, 16), layer=2)
    assert maps.shape == (2, 2, 16, 16)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 16))
    with pytest.raises(ValueError, match="layer must be in"):
        enc.get_attention_maps(torch.randn(1, 1, 16, 16), layer=6)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="step_size"):
        _encoder(step_size=0.0)
    with pytest.raises(ValueError, match="positive"):
        _encoder(steps=0)
    with pytest.raises(ValueError, match="divisible"):
        _encoder(img_size=18)
