"""Multi-head self-attention with two interchangeable kernels, and the rule that picks one.

``"sdpa"`` calls :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient
kernels on CUDA); ``"plain"`` spells the product out, ``softmax((q * scale) @ k^T) @ v``; ``"auto"``
chooses per call from the device and the dtype the activations actually have (under autocast the
``qkv`` projection already returns the low-precision dtype, so no autocast query is needed, which
keeps the choice static for ``torch.compile``). Both kernels give the same result; the parameter
names (``qkv``, ``proj``) are those of the official I-JEPA checkpoints.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["ATTN_IMPLS", "CUDA_SDPA_BACKENDS", "Attention", "AttnImpl", "select_attn_impl"]

#: SDPA backends allowed on CUDA: all but cuDNN's. I-JEPA's context and target masks change size
#: from step to step, and cuDNN's attention builds a new execution plan for every new sequence
#: length (hundreds of ms each, a known cuDNN/PyTorch behaviour). Measured on an H100 (torch
#: 2.11+cu130, ``benchmarks/throughput.py --device cuda --workload W-S --masks official``, batch 8,
#: before this restriction): bf16 ran at 23.3 img/s against 254.7 img/s in fp32 (which cuDNN's
#: kernel does not take), with 0.48 against 0.16 s of CPU time per step. Flash and
#: memory-efficient attention need no per-shape plan. ``benchmarks/attention_cuda.py`` times each
#: backend at changing lengths; the restriction itself was not re-measured on a GPU yet.
CUDA_SDPA_BACKENDS: tuple[SDPBackend, ...] = (
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
)
_CUDA_SDPA_LIST = list(CUDA_SDPA_BACKENDS)  # built once: sdpa_kernel takes a list

AttnImpl = Literal["sdpa", "plain", "auto"]
ATTN_IMPLS: tuple[str, ...] = ("sdpa", "plain", "auto")


def select_attn_impl(device_type: str, dtype: torch.dtype) -> Literal["sdpa", "plain"]:
    """The faster attention kernel for activations of ``dtype`` on ``device_type``.

    Measured with ``benchmarks/attention_cpu.py`` on the project's CPU (AMD EPYC, AVX2 only: no
    AVX-512 / AMX, torch 2.14.1, 2 threads, a shared and busy machine; sdpa / plain ms per step,
    medians of alternating runs):

    * attention product alone, fp32, forward+backward: 128x49 d192 191 / 411; 16x196 d384
      479 / 1321 (sdpa 2.2-5.0x faster in the four cases).
    * attention product alone, bf16, forward+backward: 128x49 d192 459 / 2468; 16x196 d384
      1309 / 5656 (sdpa 4-28x faster). Plain bf16 matmuls have no fast kernel on this CPU.
    * one Block forward+backward, fp32: ratios plain/sdpa 0.95-1.05 (noise: the MLP dominates);
      under bf16 autocast: 1.10-2.18 (sdpa faster in all four cases).
    * whole ViT-tiny forward+backward, fp32: 128x49 24370 / 27592, 16x196 22066 / 20240 (within
      the noise of the busy machine); bf16 autocast 128x49 170713 / 197944, 16x196 55236 / 66006.
      Note that bf16 autocast itself is several times slower than fp32 on this CPU.

    So SDPA is chosen everywhere: on this CPU it is never measurably slower, and on CUDA its fused
    kernels are the fast path. A CPU with native bf16 matmuls (AMX) was not available to measure;
    rerun the benchmark there before adding a branch for it.

    Args:
        device_type: ``tensor.device.type`` of the activations (``"cpu"``, ``"cuda"``, ...).
        dtype: dtype of the activations entering attention (low precision under autocast).

    Returns:
        ``"sdpa"`` or ``"plain"``.
    """
    del device_type, dtype  # every measured (device, dtype) pair favours SDPA
    return "sdpa"


def check_attn_impl(attn_impl: str) -> AttnImpl:
    """Validate an ``attn_impl`` setting and return it typed."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
    return attn_impl  # type: ignore[return-value]


class Attention(nn.Module):
    """Multi-head self-attention: one fused ``qkv`` projection, then ``proj``.

    Args:
        dim: token width ``D`` (divisible by ``num_heads``).
        num_heads: number of heads ``h``.
        qkv_bias: whether ``qkv`` has a bias (on in I-JEPA).
        attn_impl: ``"sdpa"``, ``"plain"`` or ``"auto"`` (see :func:`select_attn_impl`).
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

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split ``x (B, N, D)`` into ``q, k, v``, each ``(B, h, N, D/h)``."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def forward(self, x: torch.Tensor, keep_from: int = 0) -> torch.Tensor:
        """Self-attention over the tokens of each sample.

        Args:
            x: tokens ``(B, N, D)``.
            keep_from: return only the outputs of tokens ``keep_from:`` (all tokens still serve
                as keys and values), so the output projection skips the others.

        Returns:
            ``(B, N - keep_from, D)``.
        """
        b, _, d = x.shape
        q, k, v = self._qkv(x)
        if keep_from:
            q = q[:, :, keep_from:]
        n_q = q.shape[2]
        impl = self.attn_impl
        if impl == "auto":
            impl = select_attn_impl(q.device.type, q.dtype)
        if impl == "sdpa" and q.is_cuda:
            with sdpa_kernel(_CUDA_SDPA_LIST):
                out = F.scaled_dot_product_attention(q, k, v)
        elif impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, Nq, N)
            out = weights @ v
        out = out.transpose(1, 2).reshape(b, n_q, d)
        return self.proj(out)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities ``(B, h, N, N)`` for tokens ``x (B, N, D)`` (for inspection)."""
        q, k, _ = self._qkv(x)
        return ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
