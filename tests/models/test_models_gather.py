"""apply_masks gathers the right rows, in mask-major order, with the right gradient."""

from __future__ import annotations

import pytest
import torch

from ijepa.models import apply_masks


def reference(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    n, b, k = masks.shape
    out = torch.empty(n * b, k, x.shape[-1], dtype=x.dtype)
    for i in range(n):
        for j in range(b):
            for t in range(k):
                out[i * b + j, t] = x[j, masks[i, j, t]]
    return out


def test_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 5, generator=g)
    masks = torch.randint(0, 10, (2, 3, 4), generator=g)
    torch.testing.assert_close(apply_masks(x, masks), reference(x, masks), rtol=0, atol=0)


def test_accepts_2d_3d_and_list_forms() -> None:
    x = torch.randn(2, 6, 3)
    m0 = torch.tensor([[0, 5], [1, 2]])
    m1 = torch.tensor([[3, 3], [4, 0]])
    single = apply_masks(x, m0)
    assert single.shape == (2, 2, 3)
    assert torch.equal(single[1, 0], x[1, 1])
    stacked = apply_masks(x, torch.stack([m0, m1]))
    listed = apply_masks(x, [m0, m1])
    assert stacked.shape == (4, 2, 3)
    assert torch.equal(stacked, listed)
    # Mask-major: rows 0-1 are mask 0, rows 2-3 mask 1.
    assert torch.equal(stacked[:2], single)
    assert torch.equal(stacked[3, 0], x[1, 4])


def test_gradient_counts_selections() -> None:
    x = torch.randn(2, 5, 3, requires_grad=True)
    masks = torch.tensor([[[0, 0, 4], [1, 2, 3]]])
    apply_masks(x, masks).sum().backward()
    assert x.grad is not None
    counts = torch.tensor([[2.0, 0, 0, 0, 1], [0, 1, 1, 1, 0]])
    torch.testing.assert_close(x.grad, counts[..., None].expand(2, 5, 3))


def test_errors_are_loud() -> None:
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="integer"):
        apply_masks(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch"):
        apply_masks(x, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        apply_masks(x, [torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)])
    with pytest.raises(ValueError, match="empty"):
        apply_masks(x, [])
    with pytest.raises(IndexError):
        apply_masks(x, torch.tensor([[0, 9], [1, 2]]))
    with pytest.raises(IndexError):
        apply_masks(x, torch.tensor([[0, 1], [-1, 2]]))


def test_split_padding_finds_cpu_padding_and_takes_a_given_valid_mask() -> None:
    from ijepa.models.gather import PAD, split_padding

    plain = torch.tensor([[0, 1], [2, 3]])
    idx, valid = split_padding(plain)
    assert torch.equal(idx[0], plain) and valid is None
    padded = torch.tensor([[[0, 4, PAD], [1, 2, 3]]])  # (n=1, B=2, K=3)
    idx, valid = split_padding(padded)
    assert idx.min() >= 0 and valid is not None
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    given = torch.ones(1, 2, 3, dtype=torch.bool)
    _, valid = split_padding(padded, given)
    assert valid is not None and valid.shape == (2, 3) and bool(valid.all())
    with pytest.raises(ValueError, match="valid has 1 rows"):
        split_padding(padded, torch.ones(1, 3, dtype=torch.bool))
