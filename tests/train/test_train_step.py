"""The training step: loss semantics, gradient flow, EMA, and fast-vs-plain equivalence."""

import copy

import pytest
import torch
import torch.nn.functional as F

from ijepa.masks import MultiBlockMaskGenerator, make_generator
from ijepa.models import build_models
from ijepa.train.optim import build_optimizer, param_groups
from ijepa.train.step import (
    compute_targets,
    ema_update,
    forward_loss,
    jepa_loss,
    token_stds,
    train_step,
)

ARGS = {
    "model_name": "vit_tiny",
    "img_size": 16,
    "patch_size": 4,
    "in_chans": 3,
    "pred_depth": 2,
    "pred_emb_dim": 48,
    "enc_depth": 2,
    "enc_emb_dim": 48,
    "enc_num_heads": 3,
}


def _setup(attn="plain", seed=0):
    torch.manual_seed(seed)
    models = build_models(ARGS, attn_impl=attn)
    gen = MultiBlockMaskGenerator(input_size=(4, 4), min_keep=2, pred_mask_scale=(0.1, 0.2))
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    me, mp = gen(4, make_generator(0, 0, 0))
    return models, images, me, mp


def test_targets_are_layernormed_and_ordered():
    models, images, _, mp = _setup()
    t, std, img_std = compute_targets(models.target_encoder, images, mp, nenc=1)
    full = F.layer_norm(models.target_encoder(images), (48,))
    m, b, k = mp.shape
    assert t.shape == (m * b, k, 48)
    # batch order is (target block, image)
    for i in range(m):
        for j in range(b):
            assert torch.allclose(t[i * b + j], full[j, mp[i, j]], atol=1e-6)
    assert std.ndim == 0 and std > 0
    torch.testing.assert_close(img_std, full.std(dim=0).mean())


def test_targets_from_several_blocks_average_the_layernormed_blocks():
    models, images, _, mp = _setup()
    t, _, _ = compute_targets(models.target_encoder, images, mp, nenc=1, layers=2)
    blocks = models.target_encoder.get_intermediate_layers(images, 2, norm=False)
    mean = torch.stack([F.layer_norm(b, (48,)) for b in blocks]).mean(0)
    full = F.layer_norm(mean, (48,))
    m, b, _ = mp.shape
    for i in range(m):
        for j in range(b):
            torch.testing.assert_close(t[i * b + j], full[j, mp[i, j]])
    one, _, _ = compute_targets(models.target_encoder, images, mp, nenc=1, layers=1)
    assert not torch.allclose(one, t)


def test_target_image_std_is_zero_for_position_only_targets():
    """Targets that depend on the position only (a known collapse) have image std 0."""

    class PositionOnly(torch.nn.Module):
        def forward(self, x):
            pos = torch.arange(16 * 8, dtype=torch.float32).reshape(1, 16, 8).sin()
            return pos.expand(x.shape[0], 16, 8)

    images = torch.randn(6, 3, 16, 16)
    mp = torch.zeros(1, 6, 2, dtype=torch.long)
    _, std, img_std = compute_targets(PositionOnly(), images, mp, nenc=1)
    assert float(std) > 0.5 and float(img_std) == 0.0


def test_gradients_reach_encoder_and_predictor_only():
    models, images, me, mp = _setup()
    out = forward_loss(models, images, me, mp)
    out.loss.backward()
    assert all(p.grad is None for p in models.target_encoder.parameters())
    assert models.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert models.predictor.mask_token.grad is not None
    assert models.encoder.pos_embed.grad is None  # frozen sin-cos table


def test_loss_kinds():
    a, b = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    assert jepa_loss(a, b, "l2").item() == pytest.approx(4.0)
    assert jepa_loss(a, b, "smooth_l1").item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown loss"):
        jepa_loss(a, b, "l1")


def test_ema_update_formula():
    models, *_ = _setup()
    t0 = copy.deepcopy(models.target_encoder.state_dict())
    with torch.no_grad():
        for p in models.encoder.parameters():
            p.add_(1.0)
    ema_update(models.target_encoder, models.encoder, 0.9)
    for name, p in models.target_encoder.named_parameters():
        c = dict(models.encoder.named_parameters())[name]
        assert torch.allclose(p, 0.9 * t0[name] + 0.1 * c, atol=1e-6), name


def test_param_groups_official():
    models, *_ = _setup()
    decay, no_decay = param_groups(models.encoder, models.predictor)
    decay_ids = {id(p) for p in decay["params"]}
    assert id(models.predictor.mask_token) in decay_ids  # decayed, as in the official groups
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert id(models.encoder.pos_embed) not in decay_ids | {id(p) for p in no_decay["params"]}


def test_step_lowers_loss_on_fixed_batch():
    models, images, me, mp = _setup()
    opt = build_optimizer(models.encoder, models.predictor, lr=1e-3)
    losses = [
        float(train_step(models, opt, images, me, mp, lr=1e-3, wd=0.0, momentum=0.99).loss)
        for _ in range(15)
    ]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("bf16", [False, True])
def test_fast_and_plain_attention_steps_agree(bf16):
    """The SDPA path and the plain path give the same loss and gradients."""
    results = []
    for attn in ("plain", "sdpa"):
        models, images, me, mp = _setup(attn)
        out = forward_loss(models, images, me, mp, bf16=bf16)
        out.loss.backward()
        grads = [p.grad.clone() for p in models.encoder.parameters() if p.grad is not None]
        grads += [p.grad.clone() for p in models.predictor.parameters() if p.grad is not None]
        results.append((out.loss.detach(), grads))
    (l1, g1), (l2, g2) = results
    tol = 2e-2 if bf16 else 1e-5
    assert torch.allclose(l1, l2, rtol=tol, atol=tol)
    for a, b in zip(g1, g2, strict=True):
        scale = a.abs().max().clamp_min(1e-6)
        assert (a - b).abs().max() / scale < (5e-2 if bf16 else 1e-4)


def test_skip_nonfinite():
    models, images, me, mp = _setup()
    opt = build_optimizer(models.encoder, models.predictor, lr=1e-3)
    before = copy.deepcopy(models.encoder.state_dict())
    images = images.clone()
    images[0, 0, 0, 0] = float("nan")
    out = train_step(
        models, opt, images, me, mp, lr=1e-3, wd=0.0, momentum=0.99, skip_nonfinite=True
    )
    assert out.skipped
    for k, v in models.encoder.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 4, 2), (16, 49, 32)])
def test_token_stds_equal_the_direct_formulas(shape: tuple[int, int, int]) -> None:
    h = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 2.0 + 0.5
    std, img_std = token_stds(h)
    torch.testing.assert_close(std, h.flatten(0, 1).std(dim=0).mean())
    want = h.std(dim=0).mean() if shape[0] > 1 else torch.tensor(0.0)
    torch.testing.assert_close(img_std, want)
    # position-only tokens (the same for every image): no std over images, none lost to rounding
    same = h[:1].expand(4, -1, -1)
    assert token_stds(same)[1].item() == 0.0
