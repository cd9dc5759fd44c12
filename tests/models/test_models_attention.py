"""The SDPA and plain attention kernels agree (fp32, bf16, masked), and "auto" picks by measurement."""

from __future__ import annotations

import pytest
import torch

from ijepa.models import Attention, VisionTransformer
from ijepa.models import attention_kernels as kernels
from ijepa.models.attention import SharedContext


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


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="attn_impl"):
        Attention(48, 3, attn_impl="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible"):
        Attention(50, 3)


def test_sdpa_equals_plain_bf16_forward_and_backward() -> None:
    torch.manual_seed(0)
    shape = (2, 3, 16, 32)  # (B, h, N, d)
    q, k, v = (torch.randn(shape).bfloat16().requires_grad_() for _ in range(3))
    grad = torch.randn(shape).bfloat16()
    outs, grads = {}, {}
    for impl in ("sdpa", "plain"):
        out = kernels.attend(q, k, v, impl, scale=32**-0.5)  # type: ignore[arg-type]
        assert out.dtype == torch.bfloat16
        outs[impl] = out.float()
        grads[impl] = [g.float() for g in torch.autograd.grad(out, (q, k, v), grad)]
    torch.testing.assert_close(outs["sdpa"], outs["plain"], atol=3e-2, rtol=3e-2)
    for gs, gp in zip(grads["sdpa"], grads["plain"], strict=True):
        torch.testing.assert_close(gs, gp, atol=6e-2, rtol=6e-2)
    assert outs["plain"].abs().max() > 0.1 and grads["plain"][0].abs().max() > 0.1


@pytest.mark.parametrize("impl", ["sdpa", "plain"])
def test_masked_attention_equals_manual_softmax(impl: str) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    mask = torch.rand(2, 1, 6, 6) > 0.4
    mask[..., 0] = True  # every query sees a key
    out = kernels.attend(q, k, v, impl, scale=8**-0.5, attn_mask=mask)  # type: ignore[arg-type]
    logits = torch.einsum("bhqd,bhkd->bhqk", q, k) / 8**0.5
    weights = torch.where(mask, logits.exp(), torch.zeros(())).div(
        torch.where(mask, logits.exp(), torch.zeros(())).sum(-1, keepdim=True)
    )
    torch.testing.assert_close(out, weights @ v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "plain"])
@pytest.mark.parametrize("keep_from", [0, 3, 5])
def test_shared_context_equals_its_mask(impl: str, keep_from: int) -> None:
    """Two dense products give what one product under the equivalent boolean mask gives."""
    torch.manual_seed(0)
    attn = Attention(48, 3, attn_impl=impl)  # type: ignore[arg-type]
    with torch.no_grad():
        attn.qkv.weight.normal_(0.0, 0.3)  # attention far from uniform
    layout = SharedContext(n_context=5, n_groups=3)
    x = torch.randn(2, 5 + 3 * 4, 48, requires_grad=True)
    fast = attn(x, keep_from=keep_from, shared_context=layout)
    ref = attn(x, keep_from=keep_from, attn_mask=layout.mask(x.shape[1]))
    assert fast.shape == ref.shape == (2, 17 - keep_from, 48)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(fast)
    (g_fast,) = torch.autograd.grad(fast, x, grad)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-5)
    # the mask is the rule of the issue: context sees context only, group i context + group i
    mask = layout.mask(17)
    assert mask[:5, :5].all() and not mask[:5, 5:].any()
    assert mask[5:9, :9].all() and not mask[5:9, 9:].any()
    assert mask[13:, :5].all() and mask[13:, 13:].all() and not mask[13:, 5:13].any()


def test_shared_context_rejects_bad_layouts() -> None:
    attn = Attention(48, 3)
    with pytest.raises(ValueError, match="groups"):
        attn(torch.randn(1, 5 + 7, 48), shared_context=SharedContext(5, 3))
    with pytest.raises(ValueError, match="keep_from"):
        attn(torch.randn(1, 11, 48), keep_from=6, shared_context=SharedContext(5, 3))
    with pytest.raises(ValueError, match="either"):
        attn(
            torch.randn(1, 11, 48),
            attn_mask=torch.ones(11, 11, dtype=torch.bool),
            shared_context=SharedContext(5, 3),
        )


class FakeTimer:
    """Fake kernel timings: records every measurement request."""

    def __init__(self, winner: str) -> None:
        self.winner = winner
        self.calls: list[tuple[tuple[int, ...], int, bool]] = []

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, backward: bool, mask: torch.Tensor | None
    ) -> dict[str, float]:
        self.calls.append((tuple(q.shape), k.shape[2], backward))
        return (
            {"sdpa": 2.0, "plain": 1.0} if self.winner == "plain" else {"sdpa": 1.0, "plain": 2.0}
        )


@pytest.fixture
def count_sdpa(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    calls: list[torch.dtype] = []
    real = kernels.F.scaled_dot_product_attention

    def counting(q: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(q.dtype)
        return real(q, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels.F, "scaled_dot_product_attention", counting)
    return calls


@pytest.mark.parametrize("winner", ["sdpa", "plain"])
def test_auto_uses_the_measured_winner(
    winner: str, monkeypatch: pytest.MonkeyPatch, count_sdpa: list[torch.dtype]
) -> None:
    timer = FakeTimer(winner)
    monkeypatch.setattr(kernels, "_CHOOSER", kernels.KernelChooser(timer=timer))
    attn = Attention(48, 3, attn_impl="auto")
    x = torch.randn(2, 5, 48)
    attn(x).sum().backward()  # forward+backward: one measurement
    attn(torch.randn(2, 7, 48))  # same bucket (8 tokens): no new measurement
    with torch.no_grad():
        attn(x)  # forward only: a measurement of its own
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(x)  # bf16: a measurement of its own
    assert timer.calls == [
        ((2, 3, 5, 16), 5, True),
        ((2, 3, 5, 16), 5, False),
        ((2, 3, 5, 16), 5, True),
    ]
    assert len(count_sdpa) == (4 if winner == "sdpa" else 0)
    assert [d.kernel for d in kernels.kernel_chooser().decisions()] == [winner] * 3
    assert attn._chosen["self"] == winner  # what torch.compile will use


def test_auto_needs_a_clear_win_for_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    chooser = kernels.KernelChooser(timer=lambda q, k, b, m: {"sdpa": 1.0, "plain": 0.97})
    q = torch.randn(1, 1, 4, 8)
    assert chooser.choose(q, q, backward=False) == "sdpa"
    chooser = kernels.KernelChooser(timer=lambda q, k, b, m: {"sdpa": 1.0, "plain": 0.5})
    assert chooser.choose(q, q, backward=False) == "plain"


def test_shared_context_products_are_measured_separately(monkeypatch: pytest.MonkeyPatch) -> None:
    timer = FakeTimer("plain")
    monkeypatch.setattr(kernels, "_CHOOSER", kernels.KernelChooser(timer=timer))
    attn = Attention(48, 3, attn_impl="auto")
    attn(torch.randn(2, 5 + 3 * 4, 48), shared_context=SharedContext(5, 3))
    # context queries over context keys; 3 groups x 3 heads of 4 queries over 5 + 4 keys
    assert [(s, n) for s, n, _ in timer.calls] == [((2, 3, 5, 16), 5), ((2, 9, 4, 16), 9)]
    assert set(attn._chosen) == {"context", "groups"}


def test_real_timer_times_both_kernels() -> None:
    q = torch.randn(2, 3, 10, 16)
    for backward in (False, True):
        seconds = kernels.time_kernels(q, q, backward=backward, budget_s=0.01)
        assert set(seconds) == {"sdpa", "plain"}
        assert all(s > 0 for s in seconds.values())


class FakeClock:
    """A clock that the fake kernels below advance: SDPA 'takes' 30 ms a call, plain 10 ms."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[tuple[str, int]] = []

    def perf_counter(self) -> float:
        return self.now

    def attend(self, q, k, v, impl, scale, attn_mask=None):
        self.now += 0.03 if impl == "sdpa" else 0.01
        self.calls.append((impl, q.shape[0]))
        return (q * scale) @ k.transpose(-2, -1) @ v


@pytest.mark.parametrize(("clear_ratio", "runs_each"), [(2.0, 2), (None, 4)])
def test_timer_stops_once_one_kernel_is_clearly_slower(
    monkeypatch: pytest.MonkeyPatch, clear_ratio: float | None, runs_each: int
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(kernels, "attend", clock.attend)
    monkeypatch.setattr(kernels, "time", clock)
    q = torch.randn(2, 3, 8, 16)
    seconds = kernels.time_kernels(q, q, backward=False, budget_s=0.0, clear_ratio=clear_ratio)
    assert seconds == pytest.approx({"sdpa": 0.03, "plain": 0.01})
    # a warm-up run each, then one round (3x apart: clear) or the three rounds of the minimum
    assert [impl for impl, _ in clock.calls].count("sdpa") == runs_each
    assert [impl for impl, _ in clock.calls].count("plain") == runs_each


def test_timer_cuts_large_cpu_calls_to_a_slice_of_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(kernels, "attend", clock.attend)
    monkeypatch.setattr(kernels, "time", clock)
    q = torch.randn(64, 3, 8, 16)
    kernels.time_kernels(q, q, backward=True, budget_s=0.0, cpu_rows=48)
    assert {b for _, b in clock.calls} == {16}  # 16 samples x 3 heads = 48 rows
    clock.calls.clear()
    kernels.time_kernels(q, q, backward=False, budget_s=0.0, cpu_rows=None)
    assert {b for _, b in clock.calls} == {64}
