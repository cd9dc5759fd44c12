"""Multi-head self-attention with two interchangeable kernels, chosen by measurement.

``"sdpa"`` calls :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient
kernels on CUDA); ``"plain"`` spells the product out, ``softmax((q * scale) @ k^T) @ v``;
``"auto"`` (the default) times both on the shapes, dtype and device of the call and uses the
faster (see :mod:`ijepa.models.attention_kernels`: which kernel wins flips between machines, dtypes
and between forward-only and forward+backward). Both kernels give the same result; the parameter
names (``qkv``, ``proj``) are those of the official I-JEPA checkpoints.

Two optional attention patterns: a boolean ``attn_mask`` (``True``: may attend), and a
:class:`SharedContext` layout, in which a sequence holds context tokens followed by groups of
query tokens; context tokens attend to the context only, and the tokens of group ``i`` to the
context and to group ``i`` (the I-JEPA predictor's one pass for all target blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ijepa.models.attention_kernels import (
    CUDA_SDPA_BACKENDS,
    Kernel,
    attend,
    choose_kernel,
    kernel_chooser,
)

__all__ = [
    "ATTN_IMPLS",
    "CUDA_SDPA_BACKENDS",
    "Attention",
    "AttnImpl",
    "SharedContext",
    "attend",
    "check_attn_impl",
    "kernel_chooser",
    "select_attn_impl",
]

AttnImpl = Literal["sdpa", "plain", "auto"]
ATTN_IMPLS: tuple[str, ...] = ("sdpa", "plain", "auto")


def check_attn_impl(attn_impl: str) -> AttnImpl:
    """Validate an ``attn_impl`` setting and return it typed."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
    return attn_impl  # type: ignore[return-value]


def select_attn_impl(
    q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> Kernel:
    """The faster kernel for this call, by measurement (cached per shape bucket and process).

    Forward-only calls (no gradient wanted, e.g. the target encoder) and forward+backward calls
    are timed separately: on CPUs with AMX, SDPA's bf16 forward is the fast one but its bf16
    backward the slow one. See :class:`ijepa.models.attention_kernels.KernelChooser`.
    """
    backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    return choose_kernel(q, k, backward=backward, attn_mask=attn_mask)


@dataclass(frozen=True)
class SharedContext:
    """Layout of a sequence ``[context (n_context tokens) | group 0 | ... | group n_groups-1]``.

    The groups have equal length. Context tokens attend to the context only; the tokens of group
    ``i`` attend to the context and to group ``i``. Equivalent to a block-structured boolean
    ``attn_mask`` (see :meth:`mask`), computed in two dense products instead.
    """

    n_context: int
    n_groups: int

    def group_size(self, n_tokens: int) -> int:
        """Tokens per group in a sequence of ``n_tokens``."""
        rest = n_tokens - self.n_context
        if self.n_context < 1 or self.n_groups < 1 or rest < self.n_groups:
            raise ValueError(f"{self} does not fit a sequence of {n_tokens} tokens")
        if rest % self.n_groups:
            raise ValueError(f"{rest} non-context tokens do not split into {self.n_groups} groups")
        return rest // self.n_groups

    def mask(self, n_tokens: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The equivalent boolean attention mask ``(n_tokens, n_tokens)`` (for reference)."""
        size = self.group_size(n_tokens)
        group = torch.full((n_tokens,), -1, dtype=torch.long, device=device)
        group[self.n_context :] = torch.arange(self.n_groups, device=device).repeat_interleave(size)
        ctx = group < 0
        same = group[:, None] == group[None, :]
        return ctx[None, :] | (same & ~ctx[:, None])  # every query sees the context; groups own


class Attention(nn.Module):
    """Multi-head self-attention: one fused ``qkv`` projection, then ``proj``.

    Args:
        dim: token width ``D`` (divisible by ``num_heads``).
        num_heads: number of heads ``h``.
        qkv_bias: whether ``qkv`` has a bias (on in I-JEPA).
        attn_impl: ``"sdpa"``, ``"plain"`` or ``"auto"`` (measure, see :func:`select_attn_impl`).
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_impl: AttnImpl = "auto"
    ) -> None:
        super().__init__()
        if num_heads <= 0 or dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_impl: AttnImpl = check_attn_impl(attn_impl)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # What "auto" chose at the last eager call of each product (read under torch.compile,
        # which cannot time kernels while tracing). Not state: rebuilt on the next eager call.
        self._chosen: dict[str, Kernel] = {}

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split ``x (B, N, D)`` into ``q, k, v``, each ``(B, h, N, D/h)``."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def _kernel(
        self, role: str, q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> Kernel:
        if self.attn_impl != "auto":
            return self.attn_impl
        if torch.compiler.is_compiling():
            return self._chosen.get(role, "sdpa")
        impl = select_attn_impl(q, k, attn_mask)
        self._chosen[role] = impl
        return impl

    def _product(
        self,
        role: str,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return attend(q, k, v, self._kernel(role, q, k, attn_mask), self.scale, attn_mask)

    def forward(
        self,
        x: torch.Tensor,
        keep_from: int = 0,
        attn_mask: torch.Tensor | None = None,
        shared_context: SharedContext | None = None,
    ) -> torch.Tensor:
        """Self-attention over the tokens of each sample.

        Args:
            x: tokens ``(B, N, D)``.
            keep_from: return only the outputs of tokens ``keep_from:`` (all tokens still serve
                as keys and values), so the output projection skips the others.
            attn_mask: optional boolean mask broadcastable to ``(B, h, N, N)``, ``True`` where
                a query may attend to a key (rows ``keep_from:`` are used).
            shared_context: optional :class:`SharedContext` layout of the sequence (not together
                with ``attn_mask``); ``keep_from`` may then be at most its ``n_context``.

        Returns:
            ``(B, N - keep_from, D)``.
        """
        b, n, d = x.shape
        q, k, v = self._qkv(x)
        if shared_context is not None:
            if attn_mask is not None:
                raise ValueError("pass either attn_mask or shared_context, not both")
            out = self._shared(q, k, v, shared_context, keep_from)
        else:
            if keep_from:
                q = q[:, :, keep_from:]
                if attn_mask is not None and attn_mask.shape[-2] != 1:
                    attn_mask = attn_mask[..., keep_from:, :]
            out = self._product("self", q, k, v, attn_mask)
        out = out.transpose(1, 2).reshape(b, n - keep_from, d)
        return self.proj(out)

    def _shared(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layout: SharedContext,
        keep_from: int,
    ) -> torch.Tensor:
        """Attention under a :class:`SharedContext` layout; ``q, k, v (B, h, N, d)``."""
        b, h, n, hd = q.shape
        kc, m = layout.n_context, layout.n_groups
        kt = layout.group_size(n)
        if not 0 <= keep_from <= kc:
            raise ValueError(f"keep_from ({keep_from}) must lie in [0, n_context={kc}]")
        outs = []
        if keep_from < kc:  # context queries see the context only
            kv = k[:, :, :kc], v[:, :, :kc]
            outs.append(self._product("context", q[:, :, keep_from:kc], *kv))

        # Group i's queries see the context and group i: M sequences of Kc + Kt keys per sample,
        # with the context keys and values repeated (h*M "heads" of length Kc + Kt).
        def grouped(t: torch.Tensor) -> torch.Tensor:
            ctx = t[:, :, None, :kc].expand(b, h, m, kc, hd)
            own = t[:, :, kc:].reshape(b, h, m, kt, hd)
            return torch.cat([ctx, own], dim=3).reshape(b, h * m, kc + kt, hd)

        q_groups = q[:, :, kc:].reshape(b, h * m, kt, hd)
        out = self._product("groups", q_groups, grouped(k), grouped(v))
        outs.append(out.reshape(b, h, m * kt, hd))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities ``(B, h, N, N)`` for tokens ``x (B, N, D)`` (for inspection)."""
        q, k, _ = self._qkv(x)
        return ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
