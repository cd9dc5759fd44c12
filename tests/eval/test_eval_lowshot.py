"""Low-shot evaluation: stratified draws, reproducibility from the seed, too-few-images errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch

from ijepa.eval import draw_lowshot_indices, lowshot_eval


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: extra threads only add overhead, and stall on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clusters(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 16, generator=torch.Generator().manual_seed(7)) * 3
    y = torch.arange(4).repeat(n_per_class)
    return centers[y] + torch.randn(y.shape[0], 16, generator=g), y


def test_draws_are_stratified() -> None:
    y = torch.tensor([0] * 200 + [1] * 100 + [2] * 30)
    g = torch.Generator().manual_seed(0)
    idx = draw_lowshot_indices(y, fraction=0.1, generator=g)
    assert torch.bincount(y[idx]).tolist() == [20, 10, 3]
    assert idx.unique().numel() == idx.numel()
    idx = draw_lowshot_indices(y, fraction=0.001, generator=g)
    assert torch.bincount(y[idx]).tolist() == [1, 1, 1]
    idx = draw_lowshot_indices(y, shots=5, generator=g)
    assert torch.bincount(y[idx]).tolist() == [5, 5, 5]


def test_too_few_images_and_bad_settings() -> None:
    y = torch.tensor([0] * 10 + [1] * 3)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"class 1: 3"):
        draw_lowshot_indices(y, shots=4, generator=g)
    with pytest.raises(ValueError, match="exactly one"):
        draw_lowshot_indices(y, fraction=0.1, shots=2, generator=g)
    with pytest.raises(ValueError, match="exactly one"):
        draw_lowshot_indices(y, generator=g)
    with pytest.raises(ValueError, match="fraction"):
        draw_lowshot_indices(y, fraction=1.5, generator=g)
    x = torch.randn(13, 4)
    with pytest.raises(ValueError, match="needs 4 images per class"):
        lowshot_eval(x, y, x, y, shots=4)


def test_reproducible_for_a_seed_and_different_across_seeds() -> None:
    xtr, ytr = _clusters(60, seed=0)
    xte, yte = _clusters(50, seed=1)
    kw = {"fraction": 0.1, "draws": 3, "epochs": 10, "lrs": (1e-2, 3e-2)}
    a = lowshot_eval(xtr, ytr, xte, yte, seed=0, **kw)  # type: ignore[arg-type]
    b = lowshot_eval(xtr, ytr, xte, yte, seed=0, **kw)  # type: ignore[arg-type]
    c = lowshot_eval(xtr, ytr, xte, yte, seed=1, **kw)  # type: ignore[arg-type]
    assert a == b
    json.dumps(a)
    hashes_a = [d["subset_sha1"] for d in a["draws"]]
    assert len(set(hashes_a)) == 3  # the draws of one run differ from each other
    assert not set(hashes_a) & {d["subset_sha1"] for d in c["draws"]}
    assert all(d["n_labelled"] == 24 for d in a["draws"])
    assert a["mean"] >= 0.95 and a["std"] >= 0.0 and a["selection"] == "val"
    # The same generator state gives the same indices.
    i1 = draw_lowshot_indices(ytr, fraction=0.1, generator=torch.Generator().manual_seed(3))
    i2 = draw_lowshot_indices(ytr, fraction=0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(i1, i2)


def test_one_shot_needs_a_fixed_lr() -> None:
    xtr, ytr = _clusters(30, seed=0)
    xte, yte = _clusters(50, seed=1)
    with pytest.raises(ValueError, match="fixed lr"):
        lowshot_eval(xtr, ytr, xte, yte, shots=1, draws=1)
    res = lowshot_eval(xtr, ytr, xte, yte, shots=1, draws=2, lr=3e-2, epochs=20)
    assert res["selection"] == "fixed_lr" and res["shots"] == 1 and res["fraction"] is None
    assert [d["n_labelled"] for d in res["draws"]] == [4, 4]
    assert res["mean"] >= 0.8  # well-separated clusters: one image per class suffices
    with pytest.raises(ValueError, match="one feature entry"):
        feats = {"avg": xtr, "avg4": xtr}
        lowshot_eval(feats, ytr, {"avg": xte, "avg4": xte}, yte, shots=1, lr=1e-2)
