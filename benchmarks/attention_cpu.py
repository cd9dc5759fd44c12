"""Time SDPA against plain attention on the CPU: the table behind ``attn_impl="auto"``.

``attn_impl="auto"`` measures the two kernels itself, per shape, at run time
(:mod:`ijepa.models.attention_kernels`); this script shows the same comparison for a set of cases
on the machine at hand. ``auto``: the attention products of one I-JEPA step of the benchmark
workloads (target encoder forward only; context encoder and predictor forward+backward; official
mask sizes), timed by the library's own measurement, with the kernel it picks. ``core``: the
attention product alone (forward, and forward+backward, on fp32 or bf16 tensors); ``block``:
forward+backward of one transformer Block (fp32, and under ``torch.autocast("cpu", bfloat16)``);
``vit``: a whole ViT-tiny forward+backward at 49 and 196 tokens. Prints median milliseconds and
the plain/sdpa ratio (below 1: plain is faster).

    python benchmarks/attention_cpu.py [--threads 2] [--repeats 10] [--budget 30]
        [--cases auto,core,block,vit] [--dtypes fp32,bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ijepa.hardware import cpu_name
from ijepa.models import Attention, Block, vit_encoder
from ijepa.models.attention_kernels import PLAIN_MARGIN, time_kernels

BLOCK_CASES = [(128, 49, 192), (128, 49, 384), (16, 196, 192), (16, 196, 384)]
# (batch, image side, patch): ViT-tiny with 7x7 = 49 and 14x14 = 196 tokens.
VIT_CASES = [(128, 28, 4), (16, 56, 4)]
# I-JEPA steps with the official mask sizes (median context / target tokens of the official
# sampler): (label, batch, heads, queries, keys, backward). Head width 64 in all.
AUTO_CASES = [
    ("W-S target", 8, 6, 196, 196, False),
    ("W-S context", 8, 6, 88, 88, True),
    ("W-S predictor", 32, 6, 120, 120, True),
    ("W-S predictor shared", 8, 6, 88, 88, True),  # its context product
    ("W-S predictor shared", 8, 24, 32, 120, True),  # its 4 target blocks x 6 heads
    ("W-small target", 16, 3, 196, 196, False),
    ("W-small context", 16, 3, 88, 88, True),
    ("W-small predictor", 64, 3, 120, 120, True),
    ("W-28 target", 128, 3, 49, 49, False),
    ("W-28 context", 128, 3, 6, 6, True),
    ("W-28 predictor", 512, 3, 15, 15, True),
]


def time_pair(
    steps: dict[str, Callable[[], None]], repeats: int, budget_s: float
) -> dict[str, float]:
    """Median wall time (ms) of each step, run alternately so that load changes hit all alike.

    One warm-up call each, then rounds of one call each until ``repeats`` rounds are done or the
    rounds have used ``budget_s`` seconds (at least two rounds).
    """
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    spent = 0.0
    for done in range(repeats):
        if done >= 2 and spent > budget_s:
            break
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            elapsed = time.perf_counter() - start
            spent += elapsed
            times[name].append(elapsed * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def autocast_ctx(bf16: bool) -> contextlib.AbstractContextManager[object]:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def block_step(batch: int, tokens: int, dim: int, impl: str, bf16: bool) -> Callable[[], None]:
    block = Block(dim, num_heads=dim // 64, attn_impl=impl)  # type: ignore[arg-type]
    x = torch.randn(batch, tokens, dim, requires_grad=True)

    def step() -> None:
        with autocast_ctx(bf16):
            out = block(x)
        out.float().square().mean().backward()

    return step


def core_step(
    batch: int, tokens: int, dim: int, impl: str, bf16: bool, backward: bool
) -> Callable[[], None]:
    """The attention product alone (no projections), on q, k, v of shape (B, h, N, 64)."""
    attn = Attention(dim, num_heads=dim // 64, attn_impl=impl)  # type: ignore[arg-type]
    dtype = torch.bfloat16 if bf16 else torch.float32
    shape = (batch, dim // 64, tokens, 64)
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=backward) for _ in range(3))

    def step() -> None:
        if impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        if backward:
            out.float().sum().backward()

    return step


def vit_step(batch: int, side: int, patch: int, impl: str, bf16: bool) -> Callable[[], None]:
    model = vit_encoder("tiny", img_size=side, patch_size=patch, attn_impl=impl)
    images = torch.randn(batch, 3, side, side)

    def step() -> None:
        with autocast_ctx(bf16):
            out = model(images)
        out.float().square().mean().backward()

    return step


def print_auto(dtypes: list[bool]) -> None:
    """The library's own timer (what ``attn_impl="auto"`` runs), here on the whole call and to its
    full budget (auto stops early on a clear winner and times a CPU call on <= 192 rows)."""
    header = f"{'attention product (auto)':<26}{'shape':<22}{'dtype':<6}{'mode':<8}"
    header += f"{'sdpa ms':>9}{'plain ms':>10}{'plain/sdpa':>11}  picks"
    print(header)
    print("-" * len(header))
    for label, b, h, nq, nk, backward in AUTO_CASES:
        for bf16 in dtypes:
            dtype = torch.bfloat16 if bf16 else torch.float32
            q = torch.empty(b, h, nq, 64, dtype=dtype)
            k = torch.empty(b, h, nk, 64, dtype=dtype)
            sec = time_kernels(
                q,
                k,
                backward=backward,
                budget_s=1.0,
                max_rounds=15,
                clear_ratio=None,
                cpu_rows=None,
            )
            pick = "plain" if sec["plain"] < PLAIN_MARGIN * sec["sdpa"] else "sdpa"
            print(
                f"{label:<26}{f'{b}x{h}x{nq}x{nk}':<22}{'bf16' if bf16 else 'fp32':<6}"
                f"{'fwd+bwd' if backward else 'fwd':<8}{sec['sdpa'] * 1e3:>9.2f}"
                f"{sec['plain'] * 1e3:>10.2f}{sec['plain'] / sec['sdpa']:>11.2f}  {pick}",
                flush=True,
            )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per case (soft)")
    parser.add_argument(
        "--cases", default="auto,core,block,vit", help="comma list of: auto, core, block, vit"
    )
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of: fp32, bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"{cpu_name()}, torch {torch.__version__}, {args.threads} threads, "
        f"capability {torch.backends.cpu.get_cpu_capability()}"
    )
    kinds = set(args.cases.split(","))
    dtypes = [d == "bf16" for d in ("fp32", "bf16") if d in args.dtypes.split(",")]
    if "auto" in kinds:
        print_auto(dtypes)
    header = f"{'case':<28}{'dtype':<7}{'sdpa ms':>10}{'plain ms':>10}{'plain/sdpa':>12}"
    print(header)
    print("-" * len(header))
    cases: list[tuple[str, Callable[[str, bool], Callable[[], None]]]] = []
    if "core" in kinds:
        for b, n, d in BLOCK_CASES:
            for bwd in (False, True):
                label = f"core {b}x{n} d{d} {'fwd+bwd' if bwd else 'fwd'}"
                cases.append(
                    (label, lambda i, f, b=b, n=n, d=d, w=bwd: core_step(b, n, d, i, f, w))
                )
    if "block" in kinds:
        for b, n, d in BLOCK_CASES:
            label = f"block {b}x{n} d{d} h{d // 64}"
            cases.append((label, lambda i, f, b=b, n=n, d=d: block_step(b, n, d, i, f)))
    if "vit" in kinds:
        for b, s, p in VIT_CASES:
            label = f"vit-tiny {b}x{(s // p) ** 2}"
            cases.append((label, lambda i, f, b=b, s=s, p=p: vit_step(b, s, p, i, f)))
    for label, make in cases:
        for bf16 in dtypes:
            steps = {impl: make(impl, bf16) for impl in ("sdpa", "plain")}
            ms = time_pair(steps, args.repeats, args.budget)
            ratio = ms["plain"] / ms["sdpa"]
            dtype = "bf16" if bf16 else "fp32"
            print(
                f"{label:<28}{dtype:<7}{ms['sdpa']:>10.1f}{ms['plain']:>10.1f}{ratio:>12.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
