"""The fast training path computes what the plain one does.

Fast: SDPA attention, the predictor's last block computing only target tokens, fused AdamW, one
``lerp`` for the EMA. Plain: spelled-out attention, every block on every token, foreach AdamW, the
EMA formula written out. Both must give the same loss and the same parameters within fp32
tolerance; bf16 autocast must give the fp32 loss within bf16 tolerance.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch

from ijepa.masks import MultiBlockMaskGenerator, make_generator
from ijepa.models import Block, JEPAModels, VisionTransformerPredictor, build_models
from ijepa.train.optim import build_optimizer
from ijepa.train.step import ema_update, forward_loss, train_step

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


def _full_last_block(predictor: VisionTransformerPredictor) -> None:
    """Make the predictor's last block run on every token and slice afterwards (the plain path)."""
    block = predictor.predictor_blocks[-1]

    def forward(self: Block, x: torch.Tensor, keep_from: int = 0) -> torch.Tensor:
        return Block.forward(self, x)[:, keep_from:]

    block.forward = types.MethodType(forward, block)  # type: ignore[method-assign]


def _batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    gen = MultiBlockMaskGenerator(input_size=(4, 4), min_keep=2, pred_mask_scale=(0.1, 0.2))
    out = []
    for step in range(steps):
        images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(step))
        me, mp = gen(4, make_generator(0, step, 0))
        out.append((images, me, mp))
    return out


def _train(models: JEPAModels, fused: bool, steps: int) -> list[float]:
    opt = build_optimizer(models.encoder, models.predictor, lr=1e-3, fused=fused)
    losses = []
    for images, me, mp in _batches(steps):
        out = train_step(models, opt, images, me, mp, lr=1e-3, wd=0.04, momentum=0.99)
        losses.append(float(out.loss))
    return losses


@pytest.mark.parametrize("impl", ["sdpa", "plain"])
def test_block_keep_from_equals_sliced_full_forward(impl: str) -> None:
    torch.manual_seed(0)
    block = Block(48, num_heads=3, attn_impl=impl)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in block.parameters():  # larger than the init, so attention is far from uniform
            p.normal_(0.0, 0.3)
    x = torch.randn(5, 11, 48, requires_grad=True)
    fast = block(x, keep_from=7)
    assert fast.shape == (5, 4, 48)
    fast.square().sum().backward()
    grads_fast = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    x.grad = None
    block.zero_grad()
    plain = block(x)[:, 7:]
    plain.square().sum().backward()
    grads_plain = [x.grad] + [p.grad for p in block.parameters()]
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # the context tokens still matter: they are the keys and values
    y = x.detach().clone()
    y[:, 0] = torch.randn(5, 48)  # (a constant shift would vanish in the LayerNorm)
    assert (block(y, keep_from=7) - fast).abs().max() > 1e-2


def test_predictor_equals_full_blocks_then_slice() -> None:
    torch.manual_seed(0)
    fast = VisionTransformerPredictor(
        grid_size=4, embed_dim=24, predictor_embed_dim=16, depth=3, num_heads=2
    )
    plain = copy.deepcopy(fast)
    _full_last_block(plain)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2 * 3, 5, 24, generator=g)
    masks_x = torch.randint(0, 16, (2, 3, 5), generator=g)
    masks = torch.randint(0, 16, (4, 3, 3), generator=g)
    out_fast, out_plain = fast(z, masks_x, masks), plain(z, masks_x, masks)
    assert out_fast.shape == (4 * 2 * 3, 3, 24)
    torch.testing.assert_close(out_fast, out_plain, atol=1e-5, rtol=1e-5)


def test_fast_and_plain_training_steps_agree() -> None:
    """Loss and every parameter after three full steps (forward, backward, AdamW, EMA)."""
    torch.manual_seed(0)
    fast = build_models(ARGS, attn_impl="sdpa")
    plain = copy.deepcopy(fast)
    plain.encoder.set_attn_impl("plain")
    plain.target_encoder.set_attn_impl("plain")
    plain.predictor.set_attn_impl("plain")
    _full_last_block(plain.predictor)
    losses_fast = _train(fast, fused=True, steps=3)
    losses_plain = _train(plain, fused=False, steps=3)
    assert losses_fast[0] != losses_fast[-1]  # the steps did something
    assert losses_fast == pytest.approx(losses_plain, rel=1e-4, abs=1e-6)
    for name in ("encoder", "predictor", "target_encoder"):
        a, b = getattr(fast, name).state_dict(), getattr(plain, name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)


def test_fused_and_foreach_adamw_agree() -> None:
    torch.manual_seed(0)
    a = build_models(ARGS)
    b = copy.deepcopy(a)
    assert _train(a, fused=True, steps=3) == pytest.approx(_train(b, fused=False, steps=3))
    for pa, pb in zip(a.encoder.parameters(), b.encoder.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_ema_lerp_matches_formula() -> None:
    torch.manual_seed(0)
    models = build_models(ARGS)
    with torch.no_grad():
        for p in models.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in models.target_encoder.parameters()]
    ema_update(models.target_encoder, models.encoder, 0.996)
    for t0, t1, c in zip(
        before, models.target_encoder.parameters(), models.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(t1, 0.996 * t0 + 0.004 * c, atol=1e-6, rtol=1e-6)


def test_bf16_loss_is_close_to_fp32() -> None:
    torch.manual_seed(0)
    models = build_models(ARGS)
    images, me, mp = _batches(1)[0]
    with torch.no_grad():
        fp32 = forward_loss(models, images, me, mp, bf16=False).loss
        bf16 = forward_loss(models, images, me, mp, bf16=True).loss
    assert bf16.dtype == torch.float32  # the loss itself is computed in fp32
    assert float(bf16) == pytest.approx(float(fp32), rel=0.02)
