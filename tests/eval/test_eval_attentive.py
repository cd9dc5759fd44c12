"""Attentive probe: learns a rule about *where* a signal token is, which mean pooling cannot."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from ijepa.eval import AttentivePooler, attentive_probe, linear_probe

T, D = 4, 16


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: extra threads only add overhead, and stall on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _where_is_the_signal(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens = position embedding + small noise; one token also carries a strong signal.

    Label 1 if the signal token is in the first half of the sequence. The mean over tokens is the
    same whichever token carries the signal, so a mean-pooled linear probe sits at chance.
    """
    g = torch.Generator().manual_seed(seed)
    pos = F.normalize(torch.randn(T, D, generator=torch.Generator().manual_seed(123)), dim=1) * 2
    tokens = torch.randn(n, T, D, generator=g) * 0.1 + pos
    where = torch.randint(0, T, (n,), generator=g)
    tokens[torch.arange(n), where, 0] += 6.0
    return tokens, (where < T // 2).long()


def test_learns_a_position_rule_mean_pooling_cannot() -> None:
    xtr, ytr = _where_is_the_signal(512, seed=0)
    xte, yte = _where_is_the_signal(400, seed=1)
    res = attentive_probe(xtr.half(), ytr, xte.half(), yte, epochs=10, lr=1e-2, batch_size=64)
    assert res["top1"] >= 0.95
    json.dumps(res)
    assert res["num_heads"] == 1 and res["n_train"] == 512 and res["top5_k"] == 2
    mean_pool = linear_probe(xtr.mean(1), ytr, xte.mean(1), yte, epochs=10, batch_size=64)
    assert mean_pool["top1"] < 0.65


def test_pooler_shapes_and_heads() -> None:
    pooler = AttentivePooler(128, num_classes=7)
    assert pooler.num_heads == 2
    tokens = torch.randn(3, 9, 128)
    assert pooler(tokens).shape == (3, 7) and pooler.pool(tokens).shape == (3, 128)
    with pytest.raises(ValueError, match="num_heads"):
        AttentivePooler(10, num_classes=2, num_heads=3)


def test_factorised_attention_equals_standard_attention() -> None:
    torch.manual_seed(0)
    pooler = AttentivePooler(24, num_classes=3, num_heads=3, init_std=0.5)
    torch.nn.init.normal_(pooler.k.bias)
    torch.nn.init.normal_(pooler.v.bias)
    tokens = torch.randn(5, 7, 24) * 3 + 1
    b, t, d, h = 5, 7, 24, 3
    x = F.layer_norm(tokens, (d,))
    q = pooler.q(pooler.query).view(1, h, 1, d // h).expand(b, -1, -1, -1)
    k = pooler.k(x).view(b, t, h, d // h).transpose(1, 2)
    v = pooler.v(x).view(b, t, h, d // h).transpose(1, 2)
    expected = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, d)
    torch.testing.assert_close(pooler.attend(tokens), expected, atol=1e-5, rtol=1e-5)
    # Gradients reach the query and the k/v/q weights.
    pooler.attend(tokens).square().sum().backward()
    for p in (pooler.query, pooler.q.weight, pooler.k.weight, pooler.v.weight, pooler.v.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_input_checks() -> None:
    x, y = _where_is_the_signal(8, seed=0)
    with pytest.raises(ValueError, match="3 dimensions"):
        attentive_probe(x.mean(1), y, x, y)
    with pytest.raises(ValueError, match="width"):
        attentive_probe(x, y, x[..., :8], y)
    with pytest.raises(ValueError, match="test_y has"):
        attentive_probe(x, y, x, y[:3])
