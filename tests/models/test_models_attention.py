"""The SDPA and plain attention kernels agree, and "auto" picks by device and dtype."""

from __future__ import annotations

import pytest
import torch

from ijepa.models import Attention, VisionTransformer, select_attn_impl


def paired(dim: int = 48, heads: int = 3) -> tuple[Attention, Attention]:
    torch.manual_seed(0)
    sdpa = Attention(dim, heads, attn_impl="sdpa")
    plain = Attention(dim, heads, attn_impl="plain")
    plain.load_state_dict(sdpa.state_dict())
    return sdpa, plain


@pytest.mark.parametrize(("batch", "tokens"), [(4, 7), (2, 49)])
def test_sdpa_equals_plain_forward_and_backward(batch: int, tokens: int) -> None:
    sdpa, plain = paired()
    x = torch.randn(batch, tokens, 48)
    xs, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_s, out_p = sdpa(xs), plain(xp)
    torch.testing.assert_close(out_s, out_p, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out_s)
    out_s.backward(grad)
    out_p.backward(grad)
    assert xs.grad is not None and xp.grad is not None
    torch.testing.assert_close(xs.grad, xp.grad, atol=1e-5, rtol=1e-5)
    for (name, ps), pp in zip(sdpa.named_parameters(), plain.parameters(), strict=True):
        assert ps.grad is not None and pp.grad is not None
        torch.testing.assert_close(ps.grad, pp.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_attention_is_not_trivial() -> None:
    # Guard against both kernels agreeing because attention degenerates to a mean.
    sdpa, _ = paired()
    weights = sdpa.attention_weights(torch.randn(2, 9, 48) * 5)
    assert weights.shape == (2, 3, 9, 9)
    assert weights.max() > 0.5


def test_sdpa_equals_plain_under_bf16_autocast() -> None:
    sdpa, plain = paired()
    x = torch.randn(2, 16, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_s, out_p = sdpa(x), plain(x)
    assert out_s.dtype == out_p.dtype == torch.bfloat16
    torch.testing.assert_close(out_s.float(), out_p.float(), atol=3e-2, rtol=3e-2)


def test_whole_encoder_switches_kernel() -> None:
    torch.manual_seed(0)
    enc = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, attn_impl="sdpa"
    )
    x = torch.randn(2, 3, 16, 16)
    ref = enc(x)
    enc.set_attn_impl("plain")
    assert all(b.attn.attn_impl == "plain" for b in enc.blocks)
    torch.testing.assert_close(enc(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attn_impl"):
        enc.set_attn_impl("flash")  # type: ignore[arg-type]


def test_auto_selection_rule() -> None:
    assert select_attn_impl("cuda", torch.bfloat16) == "sdpa"
    assert select_attn_impl("cuda", torch.float32) == "sdpa"
    assert select_attn_impl("cpu", torch.float32) == "sdpa"
    assert select_attn_impl("cpu", torch.bfloat16) == "sdpa"


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="attn_impl"):
        Attention(48, 3, attn_impl="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible"):
        Attention(50, 3)


def test_auto_dispatches_through_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import ijepa.models.attention as attention_module

    calls: list[tuple[str, torch.dtype]] = []
    real_sdpa = attention_module.F.scaled_dot_product_attention

    def counting_sdpa(*args: torch.Tensor) -> torch.Tensor:
        calls.append((args[0].device.type, args[0].dtype))
        return real_sdpa(*args)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", counting_sdpa)
    attn = Attention(48, 3, attn_impl="auto")
    x = torch.randn(2, 5, 48)
    attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(x)
    assert calls == [("cpu", torch.float32), ("cpu", torch.bfloat16)]
    # When the rule says "plain", SDPA is not called.
    monkeypatch.setattr(attention_module, "select_attn_impl", lambda device_type, dtype: "plain")
    attn(x)
    assert len(calls) == 2
