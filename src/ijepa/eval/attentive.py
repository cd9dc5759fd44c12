"""Attentive probing: a learned query cross-attends over frozen patch tokens, then a linear head.

The pooling block follows the attentive probe of V-JEPA: one learned query token attends over
the LayerNorm-ed patch tokens with multi-head attention (residual on the query), followed by a
pre-norm MLP (residual), then a linear classifier on the pooled vector. Unlike average pooling it
can weight tokens by content, and since patch tokens carry their position it can read where a
feature is, not only whether it is there. ``AttentivePooler`` computes the single-query attention
in a factorised form that is exact and far cheaper on a CPU (see its docstring).

Training: AdamW (no decay on biases, norms and the query), linear warm-up then cosine decay of the
learning rate; fixed hyper-parameters, no selection, so the test split is used only for the
reported accuracy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ijepa.eval.checks import check_features, check_split_labels

logger = logging.getLogger(__name__)


def default_num_heads(dim: int) -> int:
    """Heads of width 64 when ``dim`` allows it, else a single head."""
    return dim // 64 if dim % 64 == 0 else 1


class AttentivePooler(nn.Module):
    """One learned query cross-attending over tokens, then a linear classifier.

    Computes ``query + proj(MHA(q(query), k(LN(tokens)), v(LN(tokens))))``, then
    ``x + mlp(LN(x))``, then ``classifier(x)``. Two exact rewrites make it cheap on a CPU:

    - The token LayerNorm has no affine parameters: an affine LN followed by the ``k``/``v``
      linear maps is the same family of functions (the scale and shift fold into them), and
      without them no gradient has to flow back through the ``T`` tokens.
    - With a single query, attention is computed without projecting every token: the score of
      token ``x`` in head ``h`` is ``x . (W_k,h^T q_h) / sqrt(d_h)`` (the key bias adds the same
      constant to every score, which softmax ignores), and since the weights sum to 1 the
      output is ``W_v,h (sum_t a_t x_t) + b_v,h``. Cost ``O(B T D h)`` instead of
      ``O(B T D^2)``; same function as the usual ``softmax(q K^T / sqrt(d)) V``.

    Args:
        dim: Token width ``D``.
        num_classes: Output classes ``C``.
        num_heads: Attention heads (must divide ``dim``); ``None`` uses ``default_num_heads``.
        mlp_ratio: Hidden width of the MLP as a multiple of ``dim``.
        init_std: Std of the truncated-normal init of the query and every Linear weight.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        heads = default_num_heads(dim) if num_heads is None else num_heads
        if heads < 1 or dim % heads != 0:
            raise ValueError(f"num_heads={heads} must be >= 1 and divide the token width {dim}")
        self.num_heads = heads
        self.query = nn.Parameter(torch.zeros(1, dim))
        self.norm_tokens = nn.LayerNorm(dim, elementwise_affine=False)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.query, std=init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)

    def attend(self, tokens: Tensor) -> Tensor:
        """Multi-head attention output ``(B, D)`` of the query over tokens ``(B, T, D)``."""
        b, _, d = tokens.shape
        h, dh = self.num_heads, d // self.num_heads
        x = self.norm_tokens(tokens)  # (B, T, D)
        q = self.q(self.query).view(h, dh)  # (h, dh)
        w_k = self.k.weight.view(h, dh, d)
        w_v = self.v.weight.view(h, dh, d)
        u = torch.einsum("hi,hid->hd", q, w_k) / math.sqrt(dh)  # (h, D): q_h^T W_k,h, scaled
        weights = (x @ u.T).softmax(dim=1)  # (B, T, h), softmax over tokens
        mixed = torch.einsum("bth,btd->bhd", weights, x)  # (B, h, D)
        out = torch.einsum("bhd,hid->bhi", mixed, w_v) + self.v.bias.view(h, dh)  # (B, h, dh)
        return out.reshape(b, d)

    def pool(self, tokens: Tensor) -> Tensor:
        """Pooled vectors ``(B, D)`` from tokens ``(B, T, D)``."""
        x = self.query + self.proj(self.attend(tokens))  # (B, D)
        return x + self.mlp(self.norm_mlp(x))

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(B, C)`` from tokens ``(B, T, D)``."""
        return self.classifier(self.pool(tokens))


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[Tensor]:
    order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


def attentive_probe(
    train_tokens: Tensor,
    train_y: Tensor,
    test_tokens: Tensor,
    test_y: Tensor,
    *,
    num_heads: int | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    batch_size: int = 256,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    bf16: bool = False,
) -> dict[str, Any]:
    """Train an attentive pooling probe on frozen patch tokens and report its test accuracy.

    Args:
        train_tokens: Train patch tokens, shape ``(N_train, T, D)`` (any float dtype; each batch
            is cast to float32).
        train_y: Train labels, shape ``(N_train,)``.
        test_tokens: Test patch tokens, shape ``(N_test, T', D)``.
        test_y: Test labels, shape ``(N_test,)``.
        num_heads: Attention heads; ``None`` uses width-64 heads when ``D`` allows, else 1.
        epochs: Passes over the train tokens.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay (weights of Linear layers only).
        warmup_epochs: Linear warm-up length before the cosine decay to 0.
        batch_size: Images per step.
        num_classes: Number of classes; ``None`` infers ``max(label) + 1``.
        seed: Seeds the initialisation and the shuffles.
        device: Where to train.
        bf16: Run forward/backward under bfloat16 autocast.

    Returns:
        ``{"method": "attentive", "top1", "top5" (test, fractions), "train_top1", "train_loss"
        (last epoch)}`` plus the settings.
    """
    check_features(train_tokens, "train_tokens", 3)
    check_features(test_tokens, "test_tokens", 3)
    if train_tokens.shape[2] != test_tokens.shape[2]:
        raise ValueError(
            f"train tokens have width {train_tokens.shape[2]} but test tokens {test_tokens.shape[2]}"
        )
    train_y, test_y, num_classes = check_split_labels(
        train_y,
        test_y,
        n_train=train_tokens.shape[0],
        n_test=test_tokens.shape[0],
        num_classes=num_classes,
    )
    if epochs < 1 or batch_size < 1 or lr <= 0 or warmup_epochs < 0:
        raise ValueError(
            "need epochs >= 1, batch_size >= 1, lr > 0, warmup_epochs >= 0; got "
            f"{epochs}, {batch_size}, {lr}, {warmup_epochs}"
        )
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttentivePooler(train_tokens.shape[2], num_classes, num_heads=num_heads).to(dev)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "query"]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or n == "query"]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    n_train = train_tokens.shape[0]
    steps_per_epoch = math.ceil(n_train / batch_size)
    total = epochs * steps_per_epoch
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    step, train_correct, train_loss = 0, 0, 0.0
    model.train()
    for _ in range(epochs):
        train_correct, train_loss = 0, 0.0
        for idx in _batches(n_train, batch_size, generator):
            x = train_tokens[idx].to(dev, torch.float32, non_blocking=True)
            y = train_y[idx].to(dev)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            train_loss += float(loss.detach()) * idx.numel()
            train_correct += int((logits.detach().argmax(dim=1) == y).sum())

    model.eval()
    top5_k = min(5, num_classes)
    correct1 = correct5 = 0
    with torch.no_grad():
        for idx in _batches(test_tokens.shape[0], batch_size, None):
            x = test_tokens[idx].to(dev, torch.float32)
            y = test_y[idx].to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            hits = logits.float().topk(top5_k, dim=1).indices == y[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
    n_test = test_tokens.shape[0]
    result: dict[str, Any] = {
        "method": "attentive",
        "top1": correct1 / n_test,
        "top5": correct5 / n_test,
        "top5_k": top5_k,
        "train_top1": train_correct / n_train,
        "train_loss": train_loss / n_train,
        "num_heads": model.num_heads,
        "epochs": epochs,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "warmup_epochs": float(warmup_epochs),
        "batch_size": batch_size,
        "bf16": bf16,
        "seed": seed,
        "num_classes": num_classes,
        "n_train": n_train,
        "n_test": n_test,
    }
    logger.info(
        "attentive probe: test top1 %.4f (train %.4f) in %.1f s",
        result["top1"],
        result["train_top1"],
        time.perf_counter() - start,
    )
    return result
