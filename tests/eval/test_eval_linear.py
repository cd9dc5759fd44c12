"""Linear probe grid: separable data, shuffled labels, selection, the vectorised AdamW."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from ijepa.eval import linear_probe
from ijepa.eval.heads import GridAdamW, HeadGrid
from ijepa.eval.linear import stratified_split


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: extra threads only add overhead, and stall on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clusters(
    n_per_class: int, classes: int, dim: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * spread
    y = torch.arange(classes).repeat(n_per_class)
    # Uneven feature scales (as in real features) and an offset: standardisation must cope.
    x = centers[y] + torch.randn(y.shape[0], dim, generator=g)
    return x * torch.linspace(0.1, 10.0, dim) + 5.0, y


def test_separable_reaches_100_percent() -> None:
    xtr, ytr = _clusters(100, 10, 32, 3.0, seed=0)
    xte, yte = _clusters(50, 10, 32, 3.0, seed=1)
    res = linear_probe({"avg": xtr}, ytr, {"avg": xte}, yte, epochs=20, batch_size=128)
    assert res["top1"] >= 0.98
    assert res["best"]["val_top1"] >= 0.98
    json.dumps(res)
    assert [h["lr"] for h in res["grid"]] == [1e-3, 3e-3, 1e-2, 3e-2]
    assert res["n_train"] + res["n_val"] == 1000 and res["n_val"] == 100
    assert res["n_test"] == 500 and res["num_classes"] == 10


def test_shuffled_labels_near_chance() -> None:
    xtr, ytr = _clusters(300, 4, 16, 3.0, seed=0)
    xte, yte = _clusters(500, 4, 16, 3.0, seed=1)
    g = torch.Generator().manual_seed(5)
    res = linear_probe(
        xtr, ytr[torch.randperm(1200, generator=g)], xte, yte, epochs=10, batch_size=128
    )
    assert res["top1"] < 0.25 + 0.15
    assert res["best"]["pooling"] == "features"


def test_grid_picks_the_informative_entry() -> None:
    xtr, ytr = _clusters(60, 5, 16, 3.0, seed=0)
    xte, yte = _clusters(40, 5, 16, 3.0, seed=1)
    noise = torch.Generator().manual_seed(3)
    train = {"noise": torch.randn(300, 8, generator=noise), "avg": xtr, "labels": ytr}
    test = {"noise": torch.randn(200, 8, generator=noise), "avg": xte, "labels": yte}
    res = linear_probe(
        train, ytr, test, yte, lrs=(1e-2, 3e-2), epochs=15, batch_size=64, refit=True
    )
    assert [(h["pooling"], h["lr"]) for h in res["grid"]] == [
        ("noise", 1e-2),
        ("noise", 3e-2),
        ("avg", 1e-2),
        ("avg", 3e-2),
    ]
    assert res["best"]["pooling"] == "avg" and res["refit"] is True
    assert res["top1"] >= 0.98
    assert max(h["val_top1"] for h in res["grid"][:2]) < 0.5
    # Same seed, same result; the test split plays no part in selection.
    again = linear_probe(
        train, ytr, test, yte, lrs=(1e-2, 3e-2), epochs=15, batch_size=64, refit=True
    )
    assert again == res


def test_selection_needs_a_validation_split() -> None:
    xtr, ytr = _clusters(20, 3, 4, 3.0, seed=0)
    with pytest.raises(ValueError, match="without a validation split"):
        linear_probe(xtr, ytr, xtr, ytr, val_fraction=0.0)
    single = linear_probe(xtr, ytr, xtr, ytr, lrs=(1e-2,), val_fraction=0.0, epochs=5)
    assert single["best"]["val_top1"] is None and single["n_val"] == 0


def test_input_checks() -> None:
    xtr, ytr = _clusters(20, 3, 4, 3.0, seed=0)
    with pytest.raises(ValueError, match="not in test"):
        linear_probe({"avg": xtr}, ytr, {"avg4": xtr}, ytr)
    with pytest.raises(ValueError, match="features"):
        linear_probe(xtr, ytr, xtr[:, :3], ytr)
    with pytest.raises(ValueError, match="never in train_y"):
        linear_probe(xtr[ytr < 2], ytr[ytr < 2], xtr, ytr)
    with pytest.raises(ValueError, match="outside"):
        linear_probe(xtr, ytr, xtr, ytr, num_classes=2)
    with pytest.raises(ValueError, match="lrs"):
        linear_probe(xtr, ytr, xtr, ytr, lrs=())
    with pytest.raises(ValueError, match="no 2-D feature"):
        linear_probe({"tokens": torch.randn(60, 2, 4)}, ytr, {"tokens": torch.randn(60, 2, 4)}, ytr)


def test_stratified_split() -> None:
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 2 + [3])
    fit, val = stratified_split(y, 0.2, torch.Generator().manual_seed(0))
    assert torch.bincount(y[val], minlength=4).tolist() == [10, 2, 1, 0]
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(63))
    fit2, val2 = stratified_split(y, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(val, val2) and torch.equal(fit, fit2)
    _, val3 = stratified_split(y, 0.2, torch.Generator().manual_seed(1))
    assert not torch.equal(val, val3)


def test_grid_adamw_matches_torch_adamw() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    lrs = [0.01, 0.1]
    grid = HeadGrid([("a", 5, lrs)], 3)
    opt = GridAdamW(grid, weight_decay=0.1)
    refs = [
        (torch.zeros(3, 5, requires_grad=True), torch.zeros(3, requires_grad=True)) for _ in lrs
    ]
    ref_opts = [
        torch.optim.AdamW(
            [{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}], lr=lr
        )
        for (w, b), lr in zip(refs, lrs, strict=True)
    ]
    for step in range(10):
        scale = 1.0 - 0.05 * step
        loss = F.cross_entropy(grid({"a": x}).flatten(0, 1), y.repeat_interleave(2)) * 2
        loss.backward()
        opt.step(scale)
        for (w, b), ref_opt, lr in zip(refs, ref_opts, lrs, strict=True):
            for group in ref_opt.param_groups:
                group["lr"] = lr * scale
            ref_opt.zero_grad()
            F.cross_entropy(x @ w.T + b, y).backward()
            ref_opt.step()
    for i, (w, b) in enumerate(refs):
        torch.testing.assert_close(grid.weights[0][:, i, :].T, w.detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(grid.biases[0][i], b.detach(), atol=1e-6, rtol=1e-5)


def _low_variance_signal(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32 features that are one strong shared factor mixed in everywhere plus a weak class signal.

    The class lives in a direction of tiny variance (as in small self-supervised encoders, whose
    features span a few directions): per-feature standardisation leaves it tiny.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    mix = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    factors = torch.randn(n, 4, generator=g) * torch.tensor([10.0, 10.0, 10.0, 0.0])
    factors[:, 3] = (y.float() * 2 - 1) * 0.05 + 0.02 * torch.randn(n, generator=g)
    return factors @ mix + 1e-3 * torch.randn(n, 32, generator=g), y


def test_whitener_gives_identity_covariance() -> None:
    from ijepa.eval.heads import whitener

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 6, generator=g) @ torch.randn(6, 6, generator=g) + 5.0
    mean, transform = whitener(x, eps=0.0)
    z = (x - mean) @ transform
    cov = z.T @ z / z.shape[0]
    assert torch.allclose(cov, torch.eye(6), atol=1e-3)
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-4)
    const_mean, const_t = whitener(torch.ones(50, 3))
    assert torch.equal(const_t, torch.eye(3)) and torch.equal(const_mean, torch.ones(3))


def test_whitening_finds_a_signal_of_low_variance_that_standardising_misses() -> None:
    """The protocol's default reaches the optimum that per-feature standardisation stops short of.

    Both preprocessings see the same rows, epochs and learning-rate grid; only the map differs.
    """
    xtr, ytr = _low_variance_signal(3000, seed=0)
    xte, yte = _low_variance_signal(1000, seed=1)
    white = linear_probe(xtr, ytr, xte, yte)
    plain = linear_probe(xtr, ytr, xte, yte, whiten=False)
    assert white["preprocess"] == {"features": "whiten"}
    assert plain["preprocess"] == {"features": "standardise"}
    assert white["top1"] >= 0.95
    assert plain["top1"] <= white["top1"] - 0.2


def test_too_few_rows_per_feature_are_standardised() -> None:
    xtr, ytr = _low_variance_signal(200, seed=0)  # 180 fitting rows < 10 per feature x 32
    res = linear_probe(xtr, ytr, xtr, ytr)
    assert res["preprocess"] == {"features": "standardise"}
