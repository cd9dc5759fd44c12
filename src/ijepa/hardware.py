"""What the machine can do fast, measured: bf16 against fp32, and matrix-product peaks.

Whether bf16 autocast pays is measured, not read from the CPU flags: flags say only whether bf16
*can* be fast (AMX / AVX512-BF16 or CUDA; without them bf16 runs several times slower than fp32,
so nothing is measured). On a 2-core Intel Xeon with AMX the ``small-cpu`` preset's step (width
96, 28 px, batch 64, one thread) took 0.265 s in bf16 against 0.200 s in fp32, while ViT-S/16
steps ran faster in bf16: the casts autocast adds cost more than narrow matrix products save.
:func:`choose_bf16` times the transformer blocks of the actual model shapes in both dtypes.
The benchmarks use :func:`matmul_peak` to report MFU.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo is not available)."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return frozenset()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bf16 matrix products *can* run natively (CUDA with bf16, CPUs with
    AMX/AVX512-BF16). A necessary condition for bf16 to pay, not a sufficient one: see
    :func:`choose_bf16`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in _BF16_CPU_FLAGS)


def cpu_name() -> str:
    """The CPU model name, for benchmark reports."""
    path = Path("/proc/cpuinfo")
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def matmul_peak(
    dtype: torch.dtype = torch.float32,
    *,
    n: int = 2048,
    seconds: float = 1.0,
    device: str | torch.device = "cpu",
) -> float:
    """Measured FLOP/s of an ``n x n @ n x n`` product (best of repeated runs)."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 2 or time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return 2 * n**3 / best


@dataclass(frozen=True)
class BlockShape:
    """One kind of transformer block in a training step, for :func:`choose_bf16`.

    Attributes:
        dim: token width.
        heads: attention heads.
        tokens: tokens per sample.
        batch: samples per call.
        count: how many such blocks a step runs (the model depth).
        backward: whether the step back-propagates through them (False: the target encoder).
        mlp_ratio: MLP hidden width over ``dim``.
    """

    dim: int
    heads: int
    tokens: int
    batch: int
    count: int = 1
    backward: bool = True
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class DtypeChoice:
    """The outcome of :func:`choose_bf16`: the choice and the estimated seconds per step."""

    bf16: bool
    fp32_s: float
    bf16_s: float
    reason: str


#: bf16 must beat fp32 by this factor to be chosen (it costs precision).
BF16_MARGIN = 0.95
_DTYPE_CHOICES: dict[tuple[str, tuple[BlockShape, ...]], DtypeChoice] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_blocks(
    shapes: Sequence[BlockShape],
    device: str | torch.device = "cpu",
    *,
    budget_s: float = 1.0,
    max_tokens: int = 1024,
) -> tuple[float, float]:
    """Estimated seconds per step of the given blocks in fp32 and under bf16 autocast.

    Each shape is timed on one freshly initialised block, forward (+ backward where the step
    needs it), in the two dtypes alternately (at least three rounds each, more while the shape's
    share of ``budget_s`` lasts); the fastest round counts (load from other jobs only adds time).
    Batches above ``max_tokens`` tokens are timed on a part of the batch and scaled up, so the
    measurement stays short.

    Returns:
        ``(fp32_seconds, bf16_seconds)`` summed over the shapes, weighted by ``count``.
    """
    from ijepa.models.layers import Block  # here: the models need nothing from this module

    device = torch.device(device)
    totals = [0.0, 0.0]
    share = budget_s / max(len(shapes), 1)
    for shape in shapes:
        batch = max(1, min(shape.batch, max_tokens // max(shape.tokens, 1)))
        torch.manual_seed(0)
        heads = shape.heads if shape.dim % shape.heads == 0 else 1
        block = Block(shape.dim, heads, mlp_ratio=shape.mlp_ratio).to(device)
        block.requires_grad_(shape.backward)
        x = torch.randn(batch, shape.tokens, shape.dim, device=device)
        x.requires_grad_(shape.backward)

        def run(bf16: bool, block: torch.nn.Module = block, x: torch.Tensor = x) -> float:
            _sync(device)
            start = time.perf_counter()
            with torch.set_grad_enabled(x.requires_grad):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = block(x)
                if x.requires_grad:
                    out.float().square().mean().backward()
            _sync(device)
            return time.perf_counter() - start

        spent = run(False) + run(True)  # warm-up (and the attention kernel measurement)
        times: tuple[list[float], list[float]] = ([], [])
        for rounds in range(9):
            if rounds >= 3 and spent >= share:
                break
            for bf16 in (False, True) if rounds % 2 == 0 else (True, False):
                elapsed = run(bf16)
                times[bf16].append(elapsed)
                spent += elapsed
        scale = shape.count * shape.batch / batch
        for i in (0, 1):
            totals[i] += scale * min(times[i])
    return totals[0], totals[1]


def choose_bf16(
    shapes: Sequence[BlockShape],
    device: str | torch.device = "cpu",
    *,
    budget_s: float = 1.0,
) -> DtypeChoice:
    """Whether bf16 autocast makes these blocks faster here (cached per process and shapes).

    Without native bf16 (see :func:`native_bf16`) the answer is no without measuring. Otherwise
    :func:`time_blocks` decides: bf16 when it is at least 5 % faster. Logged once per shapes.
    """
    device = torch.device(device)
    key = (str(device), tuple(shapes))
    cached = _DTYPE_CHOICES.get(key)
    if cached is not None:
        return cached
    if not native_bf16(device):
        choice = DtypeChoice(False, 0.0, 0.0, "no native bf16 on this device (not measured)")
    else:
        start = time.perf_counter()
        fp32_s, bf16_s = time_blocks(shapes, device, budget_s=budget_s)
        bf16 = bf16_s < BF16_MARGIN * fp32_s
        reason = (
            f"measured {fp32_s * 1e3:.0f} ms fp32 vs {bf16_s * 1e3:.0f} ms bf16 per step's blocks "
            f"in {time.perf_counter() - start:.1f} s"
        )
        choice = DtypeChoice(bf16, fp32_s, bf16_s, reason)
    _DTYPE_CHOICES[key] = choice
    logger.info(
        "bf16 autocast on %s: %s (%s)", device, "on" if choice.bf16 else "off", choice.reason
    )
    return choice
