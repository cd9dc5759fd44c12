"""Transformer building blocks: patch embedding, MLP, stochastic depth and the pre-norm block.

Module and parameter names (``proj``, ``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
follow the official I-JEPA checkpoints, so their state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ijepa.models.attention import Attention, AttnImpl, SharedContext

__all__ = ["MLP", "Block", "DropPath", "PatchEmbed", "init_official_"]


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``Conv2d(kernel = stride = patch_size)``.

    Args:
        patch_size: side of a square patch in pixels.
        in_chans: image channels.
        embed_dim: token width ``D``.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x (B, C, H, W)`` into tokens ``(B, (H/p) * (W/p), D)`` in row-major order."""
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {self.patch_size}"
            )
        # The convolution's stride equals its kernel, so it is one matrix product of the weight
        # (D, C*p*p) with the non-overlapping patches: cut them out (a reshape and one copy of the
        # image) and apply F.linear. Same parameters and result as ``self.proj(x)``, and the
        # tokens come out contiguous (the conv's flatten + transpose left D as the outer stride,
        # and every LayerNorm of a full-image pass then copied them). Forward + backward, Intel
        # Xeon AMX, 2 threads (conv vs linear, ms): W-small (16x3x224, p16, D192) fp32 13.4 vs
        # 8.2, bf16 13.4 vs 5.0; W-S (8x3x224, D384) bf16 9.6 vs 2.8; W-28 (128x3x28, p4) bf16
        # 4.2 vs 1.9; demo (64x3x32, p4, D96) fp32 1.16 vs 0.98.
        b, c = x.shape[:2]
        p = self.patch_size
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)  # (B, N, C*p*p)
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)  # (D, C*p*p)
        return F.linear(patches, weight, self.proj.bias)


class MLP(nn.Module):
    """Two-layer perceptron ``fc2(GELU(fc1(x)))`` with exact (erf) GELU.

    Args:
        dim: input and output width.
        hidden_dim: hidden width.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., dim) -> (..., dim)``."""
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``drop_prob``.

    Kept samples are scaled by ``1 / (1 - drop_prob)``; the identity in eval mode or when
    ``drop_prob == 0``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to a branch output ``x (B, ...)``."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        dim: token width ``D``.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width is ``int(dim * mlp_ratio)`` (as in the official code).
        qkv_bias: bias on the fused ``qkv`` projection.
        norm_eps: LayerNorm epsilon.
        drop_path: stochastic-depth probability of both residual branches.
        attn_impl: attention kernel, see :class:`~ijepa.models.attention.Attention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
        attn_impl: AttnImpl = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_impl=attn_impl)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        keep_from: int = 0,
        attn_mask: torch.Tensor | None = None,
        shared_context: SharedContext | None = None,
    ) -> torch.Tensor:
        """``x (B, N, D) -> (B, N - keep_from, D)``.

        With ``keep_from > 0`` only the outputs of tokens ``keep_from:`` are computed: every token
        is still a key and value of the attention, so the result equals ``forward(x)[:,
        keep_from:]``, but the attention output projection and the MLP skip the dropped tokens.
        (A keyword of ``forward``, not a separate method, so that module hooks such as FSDP's
        and instance-level forward wrappers such as activation checkpointing still apply.)
        ``attn_mask`` and ``shared_context`` restrict what each token attends to (see
        :class:`~ijepa.models.attention.Attention`).
        """
        tail = x[:, keep_from:] if keep_from else x
        attn = self.attn(
            self.norm1(x), keep_from=keep_from, attn_mask=attn_mask, shared_context=shared_context
        )
        tail = tail + self.drop_path(attn)
        return tail + self.drop_path(self.mlp(self.norm2(tail)))


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Linearly increasing stochastic-depth rates ``0 .. drop_path_rate`` over ``depth`` blocks."""
    if depth <= 1:
        return [0.0] * depth
    return [drop_path_rate * i / (depth - 1) for i in range(depth)]


@torch.no_grad()
def init_official_(module: nn.Module, std: float) -> None:
    """Initialise one module as the official I-JEPA training did (use with ``Module.apply``).

    Linear and Conv2d weights: truncated normal with standard deviation ``std`` (the official
    bounds are the absolute values ±2, so at ``std = 0.02`` nothing is actually truncated);
    their biases zero. LayerNorm: weight 1, bias 0. No depth-dependent rescaling: the official
    training script re-initialises every Linear after the constructors' rescale, undoing it.
    """
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
