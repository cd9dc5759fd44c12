"""What the machine can do fast: native bf16 on this CPU, and measured matrix-product peaks.

Used to choose defaults by evidence (bf16 autocast pays on CPUs with AMX or AVX512-BF16 and on
CUDA; on other CPUs it runs several times slower than fp32) and by the benchmarks to report MFU.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

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
    """True where bf16 matrix products run natively (CUDA with bf16, CPUs with AMX/AVX512-BF16)."""
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
