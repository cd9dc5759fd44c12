"""The predictor: shapes, the (target, context, image) batch order, key names and init."""

from __future__ import annotations

import pytest
import torch

from ijepa.models import VisionTransformerPredictor, get_2d_sincos_pos_embed

D, DP, GRID = 24, 16, 4  # encoder width, predictor width, 4 x 4 grid


def make_predictor(**kwargs: object) -> VisionTransformerPredictor:
    torch.manual_seed(0)
    defaults: dict[str, object] = dict(
        grid_size=GRID, embed_dim=D, predictor_embed_dim=DP, depth=2, num_heads=2
    )
    defaults.update(kwargs)
    return VisionTransformerPredictor(**defaults).eval()  # type: ignore[arg-type]


def test_output_shape() -> None:
    pred = make_predictor()
    nenc, batch, kc, m, kt = 2, 3, 5, 4, 3
    z = torch.randn(nenc * batch, kc, D)
    out = pred(z, torch.randint(0, 16, (nenc, batch, kc)), torch.randint(0, 16, (m, batch, kt)))
    assert out.shape == (m * nenc * batch, kt, D)


def test_batch_order_is_target_then_context_then_image() -> None:
    pred = make_predictor()
    g = torch.Generator().manual_seed(1)
    nenc, batch, kc, m, kt = 2, 3, 5, 3, 4
    z = torch.randn(nenc * batch, kc, D, generator=g)
    masks_x = torch.stack([torch.randperm(16, generator=g)[:kc] for _ in range(nenc * batch)]).view(
        nenc, batch, kc
    )
    masks = torch.stack([torch.randperm(16, generator=g)[:kt] for _ in range(m * batch)]).view(
        m, batch, kt
    )
    with torch.no_grad():
        out = pred(z, masks_x, masks)
        for i in range(m):
            for j in range(nenc):
                for b in range(batch):
                    single = pred(
                        z[j * batch + b : j * batch + b + 1],
                        masks_x[j, b : b + 1],
                        masks[i, b : b + 1],
                    )
                    torch.testing.assert_close(
                        out[(i * nenc + j) * batch + b], single[0], atol=1e-5, rtol=1e-5
                    )


def test_mask_argument_forms_agree() -> None:
    pred = make_predictor()
    z = torch.randn(2, 5, D)
    mx = torch.randint(0, 16, (2, 5))
    mt = [torch.randint(0, 16, (2, 3)) for _ in range(2)]
    with torch.no_grad():
        a = pred(z, mx, torch.stack(mt))
        b = pred(z, [mx], mt)
        c = pred(z, mx[None], mt)
    assert a.shape == (4, 3, D)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_prediction_depends_on_target_position() -> None:
    pred = make_predictor()
    z = torch.randn(1, 5, D)
    mx = torch.tensor([[0, 1, 2, 3, 4]])
    with torch.no_grad():
        out = pred(z, mx, torch.tensor([[[10, 15]]]))
    # The two target tokens differ only by their positional embedding.
    assert not torch.allclose(out[0, 0], out[0, 1], atol=1e-4)


def test_state_dict_keys_and_pos_table() -> None:
    pred = make_predictor(depth=1, grid_size=(4, 4))
    per_block = [
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
        "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias",
    ]  # fmt: skip
    expected = {
        "mask_token", "predictor_pos_embed", "predictor_embed.weight", "predictor_embed.bias",
        "predictor_norm.weight", "predictor_norm.bias", "predictor_proj.weight", "predictor_proj.bias",
    }  # fmt: skip
    expected |= {f"predictor_blocks.0.{k}" for k in per_block}
    assert set(pred.state_dict()) == expected
    assert pred.mask_token.shape == (1, 1, DP)
    assert pred.predictor_pos_embed.shape == (1, 16, DP)
    assert not pred.predictor_pos_embed.requires_grad
    torch.testing.assert_close(
        pred.predictor_pos_embed[0], get_2d_sincos_pos_embed(DP, 4), rtol=0, atol=0
    )
    assert pred.predictor_proj.out_features == D and pred.predictor_embed.in_features == D


def test_init_statistics() -> None:
    torch.manual_seed(0)
    pred = VisionTransformerPredictor(
        grid_size=14, embed_dim=192, predictor_embed_dim=384, depth=2, num_heads=3
    )
    assert pred.mask_token.std().item() == pytest.approx(0.02, rel=0.2)
    assert pred.predictor_blocks[1].mlp.fc2.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert pred.predictor_embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(pred.predictor_proj.bias) == 0


def test_gradients_reach_mask_token_and_input() -> None:
    pred = make_predictor().train()
    z = torch.randn(2, 5, D, requires_grad=True)
    pred(
        z, torch.randint(0, 16, (1, 2, 5)), torch.randint(0, 16, (2, 2, 3))
    ).square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert pred.mask_token.grad is not None and pred.mask_token.grad.abs().sum() > 0
    assert pred.predictor_pos_embed.grad is None


def test_mismatched_inputs_are_rejected() -> None:
    pred = make_predictor()
    with pytest.raises(ValueError, match="nenc"):
        pred(torch.randn(3, 5, D), torch.randint(0, 16, (2, 2, 5)), torch.randint(0, 16, (1, 2, 3)))
    with pytest.raises(ValueError, match="images"):
        pred(torch.randn(2, 5, D), torch.randint(0, 16, (1, 2, 5)), torch.randint(0, 16, (1, 3, 3)))


def reference_shared(
    pred: VisionTransformerPredictor,
    z: torch.Tensor,
    masks_x: torch.Tensor,
    masks: torch.Tensor,
    impl: str,
) -> torch.Tensor:
    """The shared-context computation spelled out: one sequence per (context mask, image) of the
    context tokens and then every target block's mask tokens; every block runs on every token
    under a boolean mask built here (context -> context; block i -> context and block i)."""
    nenc, batch, kc = masks_x.shape
    m, _, kt = masks.shape
    pos = pred.predictor_pos_embed[0]
    x = pred.predictor_embed(z) + pos[masks_x.reshape(-1)].view(nenc * batch, kc, DP)
    rows = []
    for j in range(nenc):
        for b in range(batch):
            blocks = [pred.mask_token[0] + pos[masks[i, b]] for i in range(m)]
            rows.append(torch.cat([x[j * batch + b], *blocks]))
    seq = torch.stack(rows)
    n = seq.shape[1]
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:kc, :kc] = True
    for i in range(m):
        start = kc + i * kt
        allowed[start : start + kt, :kc] = True
        allowed[start : start + kt, start : start + kt] = True
    pred.set_attn_impl(impl)  # type: ignore[arg-type]
    for block in pred.predictor_blocks:
        seq = block(seq, attn_mask=allowed)
    out = pred.predictor_proj(pred.predictor_norm(seq))
    rows_out = [
        out[j * batch + b, kc + i * kt : kc + (i + 1) * kt]
        for i in range(m)
        for j in range(nenc)
        for b in range(batch)
    ]
    return torch.stack(rows_out)  # (M * nenc * B, Kt, D), row (i * nenc + j) * B + b


@pytest.mark.parametrize("impl", ["sdpa", "plain"])
@pytest.mark.parametrize(("nenc", "depth"), [(1, 3), (2, 1)])
def test_shared_context_equals_reference(impl: str, nenc: int, depth: int) -> None:
    pred = make_predictor(depth=depth, attn_impl=impl)
    with torch.no_grad():  # weights far from the init, so every attention pattern matters
        for p in pred.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.3)
    g = torch.Generator().manual_seed(2)
    batch, kc, m, kt = 3, 5, 4, 3
    z = torch.randn(nenc * batch, kc, D, generator=g)
    masks_x = torch.randint(0, 16, (nenc, batch, kc), generator=g)
    masks = torch.randint(0, 16, (m, batch, kt), generator=g)
    trainable = [p for p in pred.parameters() if p.requires_grad]
    pred.shared_context = True
    fast = pred(z, masks_x, masks)
    grads_fast = torch.autograd.grad(fast.square().sum(), trainable)
    ref = reference_shared(pred, z, masks_x, masks, impl)
    grads_ref = torch.autograd.grad(ref.square().sum(), trainable)
    assert fast.shape == (m * nenc * batch, kt, D)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # Not the official pairing, where context tokens also see one block's mask tokens, from the
    # second block on; with one block only the mask tokens' outputs are used, and they agree.
    pred.shared_context = False
    gap = (pred(z, masks_x, masks) - fast).abs().max()
    assert gap > 1e-3 if depth > 1 else gap < 1e-5


def test_shared_context_block_does_not_see_other_blocks() -> None:
    pred = make_predictor(depth=2, shared_context=True)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 5, D, generator=g)
    masks_x = torch.randint(0, 16, (1, 2, 5), generator=g)
    masks = torch.randint(0, 16, (3, 2, 2), generator=g)
    out = pred(z, masks_x, masks)
    moved = masks.clone()
    moved[2] = (moved[2] + 1) % 16  # block 2 elsewhere: blocks 0 and 1 must not change
    out_moved = pred(z, masks_x, moved)
    torch.testing.assert_close(out[:4], out_moved[:4])
    assert (out[4:] - out_moved[4:]).abs().max() > 1e-4
