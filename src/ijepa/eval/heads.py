"""A grid of linear classification heads trained together on cached features.

``HeadGrid`` holds linear heads over one or more feature entries (the heads reading one entry are
stacked, so they cost one matmul); ``GridAdamW`` updates them with a per-head learning rate;
``train_heads`` runs the mini-batch loop (cosine learning rate to 0) and ``evaluate_heads``
scores every head on a split. ``linear_probe`` and ``lowshot_eval`` build on these.

Feature preprocessing: ``standardiser`` (per-feature mean and std) or ``whitener`` (PCA
whitening with a floor on the eigenvalues). Whitening is the default of ``linear_probe`` for
entries of at most :data:`WHITEN_MAX_FEATURES` features, because per-feature standardisation left
the probe far from converged on the features of small self-supervised encoders, whose variance
sits in a few directions (probe rank 8 of 96 on the embedded demo set): with the default
30 epochs the best head was always the largest learning rate of the grid, 200 epochs at lr 1.0
were still climbing (0.31 -> 0.45 test top-1), while whitened features gave 0.50 at 30 epochs,
with every learning rate of the grid within 4 points of it (the optimum of an unregularised
linear classifier does not change under an invertible linear map of its input; only how fast
gradient descent reaches it does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_EVAL_CHUNK = 8192


@dataclass(frozen=True)
class HeadScores:
    """Per-head accuracy and loss on one split; tensors of shape ``(H,)``."""

    top1: Tensor
    top5: Tensor
    loss: Tensor


def standardiser(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and std of ``x`` ``(N, F)``; a constant feature gets std 1."""
    x = x.float()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


#: Entries wider than this are standardised instead of whitened (the eigendecomposition of an
#: ``F x F`` covariance costs ``O(F^3)``: about 10 s for 4,096 features on one CPU core).
WHITEN_MAX_FEATURES = 6144

#: Entries are whitened only when the fitting rows number at least this many times the features:
#: a covariance from fewer rows is too noisy, and whitening it gives its noise directions the
#: same scale as the signal (low-shot subsets: 1 % of a set is a few hundred rows).
WHITEN_MIN_ROWS_PER_FEATURE = 10

#: Eigenvalues are floored at this fraction of the largest before inverting (directions with
#: less variance than that are scaled as if they had that much), so that near-null directions
#: of rank-deficient features (``F`` close to or above the number of rows) are not blown up.
WHITEN_EPS = 1e-3


def whitener(x: Tensor, eps: float = WHITEN_EPS) -> tuple[Tensor, Tensor]:
    """PCA whitening of ``x`` ``(N, F)``: ``(mean (F,), transform (F, F))``.

    ``(x - mean) @ transform`` has (close to) identity covariance: the transform is
    ``U diag(1 / sqrt(max(lambda, 0) + eps * lambda_max))`` from the eigendecomposition
    ``U diag(lambda) U^T`` of the covariance (float64). Constant features give the identity.
    """
    x = x.float()
    mean = x.mean(dim=0)
    centred = (x - mean).double()
    cov = centred.T @ centred / max(x.shape[0], 1)
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(0.0)
    top = float(evals.max())
    if top <= 0.0:
        return mean, torch.eye(x.shape[1], dtype=torch.float32, device=x.device)
    transform = evecs / torch.sqrt(evals + eps * top)
    return mean, transform.float()


class HeadGrid(nn.Module):
    """Linear heads over several feature entries, evaluated in one call.

    The heads reading the same entry are stacked into one weight ``(F, L, C)`` and one bias
    ``(L, C)`` so they cost one matmul; each head has its own peak learning rate.

    Args:
        groups: ``(feature key, in_features, lrs)`` per entry; the heads are the entry's lrs, in
            order, and the grid's head order is entry-major.
        num_classes: Output classes ``C``.
    """

    def __init__(
        self, groups: Sequence[tuple[str, int, Sequence[float]]], num_classes: int
    ) -> None:
        super().__init__()
        keys = [key for key, _, _ in groups]
        if len(set(keys)) != len(keys):
            raise ValueError(f"HeadGrid got a feature key twice: {keys}")
        self.keys = keys
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(f, len(lrs), num_classes)) for _, f, lrs in groups
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(len(lrs), num_classes)) for _, _, lrs in groups
        )
        for i, (_, _, lrs) in enumerate(groups):
            self.register_buffer(f"lrs_{i}", torch.tensor([float(lr) for lr in lrs]))
        self.heads = [(key, float(lr)) for key, _, lrs in groups for lr in lrs]

    def peak_lrs(self, i: int) -> Tensor:
        """Peak learning rates ``(L,)`` of the heads reading entry ``i``."""
        lrs: Tensor = getattr(self, f"lrs_{i}")
        return lrs

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        """Logits ``(B, H, C)`` of every head, from ``{key: (B, F_key)}``."""
        out = []
        for key, w, b in zip(self.keys, self.weights, self.biases, strict=True):
            f, n_lrs, c = w.shape
            logits = torch.addmm(b.flatten(), feats[key], w.view(f, n_lrs * c))  # (B, L*C)
            out.append(logits.view(-1, n_lrs, c))
        return torch.cat(out, dim=1)


class GridAdamW:
    """AdamW over a ``HeadGrid`` with a per-head learning rate, vectorised over heads.

    Same update as ``torch.optim.AdamW`` (decoupled weight decay ``p -= lr * wd * p``, then
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)``), but one group of tensor ops per feature entry
    instead of one optimiser parameter group per head. Weight decay applies to weights only.

    Args:
        grid: The heads to update.
        weight_decay: Decoupled weight decay of the weights.
        betas: Adam moment coefficients.
        eps: Adam denominator epsilon.
    """

    def __init__(
        self,
        grid: HeadGrid,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.items: list[tuple[Tensor, Tensor, float]] = []
        for i, (w, b) in enumerate(zip(grid.weights, grid.biases, strict=True)):
            lrs = grid.peak_lrs(i)
            self.items.append((w, lrs.view(1, -1, 1), weight_decay))  # w: (F, L, C)
            self.items.append((b, lrs.view(-1, 1), 0.0))  # b: (L, C)
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p, _, _ in self.items]
        self.betas, self.eps, self.steps = betas, eps, 0

    @torch.no_grad()
    def step(self, lr_scale: float) -> None:
        """One update with learning rates ``peak * lr_scale``; clears the gradients."""
        self.steps += 1
        beta1, beta2 = self.betas
        corr1 = 1.0 - beta1**self.steps
        corr2_sqrt = math.sqrt(1.0 - beta2**self.steps)
        for (p, peak, wd), (m, v) in zip(self.items, self.state, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            lr = peak * lr_scale
            if wd:
                p.mul_(1.0 - lr * wd)
            p.sub_((lr / corr1) * m / (v.sqrt() / corr2_sqrt + self.eps))
            p.grad = None


def train_heads(
    grid: HeadGrid,
    feats: Mapping[str, Tensor],
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    weight_decay: float,
    generator: torch.Generator,
) -> None:
    """Train every head of ``grid`` with AdamW and a cosine learning-rate schedule to 0.

    Args:
        grid: The heads, each with its own peak learning rate.
        feats: ``{key: (N, F_key)}`` standardised, on the grid's device.
        y: Labels int64 ``(N,)`` on the grid's device.
        epochs: Passes over the data.
        batch_size: Rows per step.
        weight_decay: AdamW decoupled weight decay on the weights (not biases).
        generator: CPU generator for the shuffles.
    """
    opt = GridAdamW(grid, weight_decay)
    n = y.shape[0]
    total = epochs * math.ceil(n / batch_size)
    n_heads = len(grid.heads)
    step = 0
    grid.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(y.device)
        for lo in range(0, n, batch_size):
            idx = perm[lo : lo + batch_size]
            logits = grid({key: feats[key].index_select(0, idx) for key in grid.keys})  # (B, H, C)
            target = y[idx].repeat_interleave(n_heads)  # matches (B, H) flattened row-major
            # Mean over B*H rows, times H: the sum over heads of each head's mean loss.
            loss = F.cross_entropy(logits.flatten(0, 1), target) * n_heads
            loss.backward()
            opt.step(0.5 * (1.0 + math.cos(math.pi * step / total)))
            step += 1


@torch.no_grad()
def evaluate_heads(grid: HeadGrid, feats: Mapping[str, Tensor], y: Tensor) -> HeadScores:
    """Top-1, top-5 (``min(5, C)``) and mean cross-entropy of every head on one split."""
    grid.eval()
    n_heads = len(grid.heads)
    top1 = torch.zeros(n_heads, dtype=torch.float64)
    top5 = torch.zeros(n_heads, dtype=torch.float64)
    loss = torch.zeros(n_heads, dtype=torch.float64)
    for lo in range(0, y.shape[0], _EVAL_CHUNK):
        target = y[lo : lo + _EVAL_CHUNK]
        logits = grid({key: feats[key][lo : lo + _EVAL_CHUNK] for key in grid.keys})
        ranked = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # (B, H, k)
        hits = ranked == target[:, None, None]
        top1 += hits[..., 0].sum(dim=0).cpu().double()
        top5 += hits.any(dim=-1).sum(dim=0).cpu().double()
        per_row = F.cross_entropy(
            logits.permute(0, 2, 1), target[:, None].expand(-1, n_heads), reduction="none"
        )  # (B, H)
        loss += per_row.sum(dim=0).cpu().double()
    n = max(y.shape[0], 1)
    return HeadScores(top1 / n, top5 / n, loss / n)
