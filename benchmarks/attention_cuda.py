"""SDPA backends on CUDA when the sequence length changes from call to call, as I-JEPA's do.

The context and target masks of I-JEPA change size every step (per batch in ``official`` mode), so
the attention kernel sees a new sequence length at almost every call. This benchmark times one
attention forward+backward at lengths drawn anew per call, with each SDPA backend allowed alone,
with PyTorch's default choice, and with the choice :mod:`ijepa.models.attention` makes on CUDA.

    python benchmarks/attention_cuda.py                 # bf16 and fp32, ViT-S-like heads
    python benchmarks/attention_cuda.py --batch 128 --dim 384 --heads 6 --calls 50

Prints one JSON line per (dtype, backend) with the median milliseconds per call, then a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ijepa.models.attention import CUDA_SDPA_BACKENDS

CHOICES: dict[str, list[SDPBackend] | None] = {
    "default": None,
    "ijepa": list(CUDA_SDPA_BACKENDS),
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "math": [SDPBackend.MATH],
}


def time_backend(
    backends: list[SDPBackend] | None,
    dtype: torch.dtype,
    lengths: list[int],
    batch: int,
    heads: int,
    head_dim: int,
) -> float | None:
    """Median ms of one forward+backward over ``lengths`` (one call per length); None: unsupported."""
    times = []
    for n in lengths:
        q, k, v = (
            torch.randn(batch, heads, n, head_dim, device="cuda", dtype=dtype, requires_grad=True)
            for _ in range(3)
        )
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            if backends is None:
                out = F.scaled_dot_product_attention(q, k, v)
            else:
                with sdpa_kernel(backends):
                    out = F.scaled_dot_product_attention(q, k, v)
            out.sum().backward()
        except RuntimeError:
            return None
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--calls", type=int, default=40, help="lengths drawn (one call each)")
    ap.add_argument("--min-len", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=196)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("attention_cuda.py needs a CUDA device")
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.min_len, args.max_len + 1, (args.calls,), generator=g).tolist()
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for name, backends in CHOICES.items():
            ms = time_backend(
                backends, dtype, lengths, args.batch, args.heads, args.dim // args.heads
            )
            row = {"dtype": str(dtype).removeprefix("torch."), "backend": name, "ms": ms}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"{'dtype':<10}{'backend':<11}{'ms/call':>9}")
    for r in rows:
        ms = "n/a" if r["ms"] is None else f"{r['ms']:.3f}"
        print(f"{r['dtype']:<10}{r['backend']:<11}{ms:>9}")


if __name__ == "__main__":
    main()
