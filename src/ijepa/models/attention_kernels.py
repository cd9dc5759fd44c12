"""The two attention kernels, and the measurement that picks one per call shape.

Which kernel is faster flips between machines and dtypes, and between forward-only and
forward+backward: on a 2-core AVX2 CPU (AMD EPYC) SDPA won everywhere; on a 2-core Intel Xeon
with AMX (torch 2.14.1, one thread) SDPA's bf16 forward was 2-3x faster than the plain product
but its bf16 forward+backward 2-5x slower (``benchmarks/attention_cpu.py`` prints the table of
the machine at hand). So ``attn_impl="auto"`` does not guess from flags: the first call of each
shape bucket times both kernels on tensors of that shape, dtype and device, with or without
backward as the call needs, caches the winner for the process, logs it once and uses it. The
measurement stops as soon as one kernel is twice as slow, and on a CPU times a slice of at most
``CPU_TIMING_ROWS`` (sample x head) rows, so that a bucket costs tens of milliseconds, not most
of a second (W-28's predictor buckets: 0.76-0.83 s each before, 0.05-0.06 s after, same picks).

A bucket is (device, dtype, autocast on, batch, heads, head dim, query and key lengths rounded
up to a power of two, backward, masked): masks change the token counts of I-JEPA from step to
step, and rounding keeps the measurements to a handful per run (each well under a second).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = [
    "CUDA_SDPA_BACKENDS",
    "KERNELS",
    "Kernel",
    "KernelChooser",
    "KernelKey",
    "attend",
    "choose_kernel",
    "kernel_chooser",
    "time_kernels",
]

logger = logging.getLogger(__name__)

Kernel = Literal["sdpa", "plain"]
KERNELS: tuple[Kernel, ...] = ("sdpa", "plain")

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

#: Plain must beat SDPA by this factor to be chosen: SDPA never stores the (Nq, Nk) weights.
PLAIN_MARGIN = 0.95


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    impl: Kernel,
    scale: float,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The attention product ``softmax(q k^T * scale [masked]) v`` with one kernel.

    Args:
        q: queries ``(B, h, Nq, d)``.
        k: keys ``(B, h, Nk, d)``.
        v: values ``(B, h, Nk, d)``.
        impl: ``"sdpa"`` or ``"plain"``.
        scale: the logit scale (``d ** -0.5``).
        attn_mask: optional boolean mask broadcastable to ``(B, h, Nq, Nk)``; ``True`` where a
            query may attend to a key. Every query must see at least one key.

    Returns:
        ``(B, h, Nq, d)``.
    """
    if impl == "sdpa":
        if q.is_cuda:
            with sdpa_kernel(_CUDA_SDPA_LIST):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    logits = (q * scale) @ k.transpose(-2, -1)  # (B, h, Nq, Nk)
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf"))
    return logits.softmax(dim=-1) @ v


def _bucket(n: int) -> int:
    """``n`` rounded up to a power of two."""
    return 1 << max(n - 1, 0).bit_length()


@dataclass(frozen=True)
class KernelKey:
    """What a kernel measurement depends on (token lengths rounded up to a power of two)."""

    device: str
    dtype: str
    autocast: bool
    batch: int
    heads: int
    head_dim: int
    q_len: int
    kv_len: int
    backward: bool
    masked: bool

    @classmethod
    def of(
        cls, q: torch.Tensor, k: torch.Tensor, backward: bool, attn_mask: torch.Tensor | None
    ) -> KernelKey:
        b, h, nq, d = q.shape
        return cls(
            device=str(q.device),
            dtype=str(q.dtype).removeprefix("torch."),
            autocast=torch.is_autocast_enabled(q.device.type),
            batch=b,
            heads=h,
            head_dim=d,
            q_len=_bucket(nq),
            kv_len=_bucket(k.shape[2]),
            backward=backward,
            masked=attn_mask is not None,
        )

    def describe(self) -> str:
        mode = "fwd+bwd" if self.backward else "fwd"
        extra = (", autocast" if self.autocast else "") + (", masked" if self.masked else "")
        return (
            f"{self.device} {self.dtype}{extra} {mode}, {self.batch}x{self.heads} heads of "
            f"{self.head_dim}, {self.q_len} queries x {self.kv_len} keys (bucket)"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: On a CPU the kernels are timed on at most this many (sample x head) rows of a call: both
#: kernels' cost grows linearly in the rows once there are more than cores, and a full bucket of
#: W-28's predictor (512 x 3 rows, bf16 forward+backward) cost 0.8 s to measure, SDPA's slow path
#: alone 120 ms a run. Not on CUDA, where a slice could leave the GPU idle and mislead.
CPU_TIMING_ROWS = 192
#: Stop timing once one kernel's fastest run is this many times the other's (no noise flips that).
CLEAR_RATIO = 2.0


def time_kernels(
    q: torch.Tensor,
    k: torch.Tensor,
    backward: bool,
    attn_mask: torch.Tensor | None = None,
    budget_s: float = 0.25,
    max_rounds: int = 7,
    *,
    clear_ratio: float | None = CLEAR_RATIO,
    cpu_rows: int | None = CPU_TIMING_ROWS,
) -> dict[Kernel, float]:
    """Fastest time in seconds of each kernel on fresh tensors shaped like ``q`` and ``k``.

    Queries, keys and values are views of one ``(B, Nk, 3, h, d)`` tensor, as the module's fused
    projection makes them; with ``backward`` each run also back-propagates a fixed gradient. One
    warm-up call each, then rounds that alternate the order of the kernels, at least three and at
    most ``max_rounds``, until ``budget_s`` seconds are spent, or, after the first round, once one
    kernel is ``clear_ratio`` times slower than the other (``None``: never stop early). The
    minimum, not the median: other jobs on a shared machine only ever add time (a preempted run of
    a 1 ms kernel measured 66 ms on a 2-core machine at load 14), so the fastest run is the best
    estimate of the cost. On a CPU, ``B`` is cut so that ``B * h <= cpu_rows`` (``None``: the
    whole call) and the times are those of the cut call; ``attn_mask`` is cut along with it.
    """
    b, h, nq, d = q.shape
    nk = k.shape[2]
    if cpu_rows is not None and q.device.type == "cpu" and b * h > cpu_rows:
        full, b = b, max(1, cpu_rows // h)
        if attn_mask is not None and attn_mask.ndim == 4 and attn_mask.shape[0] == full:
            attn_mask = attn_mask[:b]  # a per-sample mask; broadcast ones stay as they are
    device, dtype = q.device, q.dtype
    scale = d**-0.5
    with torch.set_grad_enabled(backward):
        base = torch.randn(b, nk, 3, h, d, device=device, dtype=dtype, requires_grad=backward)
        if nq > nk:
            extra = torch.randn(b, h, nq, d, device=device, dtype=dtype, requires_grad=backward)
        grad = torch.randn(b, h, nq, d, device=device, dtype=dtype)

        def run(kernel: Kernel) -> float:
            _sync(device)
            start = time.perf_counter()
            qq, kk, vv = base.permute(2, 0, 3, 1, 4).unbind(0)
            qq = qq[:, :, nk - nq :] if nq <= nk else extra
            out = attend(qq, kk, vv, kernel, scale, attn_mask)
            if backward:
                out.backward(grad)
                base.grad = None
            _sync(device)
            return time.perf_counter() - start

        spent = sum(run(kernel) for kernel in KERNELS)  # warm-up
        times: dict[Kernel, list[float]] = {kernel: [] for kernel in KERNELS}
        for rounds in range(max_rounds):
            if rounds >= 3 and spent >= budget_s:
                break
            if rounds >= 1 and clear_ratio is not None:
                best = sorted(min(values) for values in times.values())
                if best[1] >= clear_ratio * best[0]:
                    break
            for kernel in KERNELS if rounds % 2 == 0 else KERNELS[::-1]:
                elapsed = run(kernel)
                times[kernel].append(elapsed)
                spent += elapsed
    return {kernel: min(values) for kernel, values in times.items()}


Timer = Callable[[torch.Tensor, torch.Tensor, bool, "torch.Tensor | None"], dict[Kernel, float]]


@dataclass
class Decision:
    """One measured choice: the bucket, the median seconds per kernel and the winner."""

    key: KernelKey
    seconds: dict[Kernel, float]
    kernel: Kernel


class KernelChooser:
    """Times both kernels once per :class:`KernelKey` and remembers the winner.

    Args:
        timer: ``(q, k, backward, attn_mask) -> {kernel: seconds}``; :func:`time_kernels` by
            default (tests inject fake timings here).
    """

    def __init__(self, timer: Timer | None = None) -> None:
        self.timer: Timer = timer if timer is not None else time_kernels
        self._decisions: dict[KernelKey, Decision] = {}

    def choose(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        backward: bool,
        attn_mask: torch.Tensor | None = None,
    ) -> Kernel:
        """The kernel for a call with these queries and keys (measured on first sight)."""
        key = KernelKey.of(q, k, backward, attn_mask)
        decision = self._decisions.get(key)
        if decision is None:
            start = time.perf_counter()
            seconds = self.timer(q, k, backward, attn_mask)
            kernel: Kernel = (
                "plain" if seconds["plain"] < PLAIN_MARGIN * seconds["sdpa"] else "sdpa"
            )
            decision = self._decisions[key] = Decision(key, seconds, kernel)
            logger.info(
                "attention kernel for %s: %s (sdpa %.2f ms, plain %.2f ms; measured in %.2f s)",
                key.describe(),
                kernel,
                seconds["sdpa"] * 1e3,
                seconds["plain"] * 1e3,
                time.perf_counter() - start,
            )
        return decision.kernel

    def decisions(self) -> list[Decision]:
        """Every measurement of this process, in order."""
        return list(self._decisions.values())

    def clear(self) -> None:
        """Forget every measurement (the next calls measure again)."""
        self._decisions.clear()


_CHOOSER = KernelChooser()


def kernel_chooser() -> KernelChooser:
    """The process-wide chooser used by ``attn_impl="auto"``."""
    return _CHOOSER


def choose_kernel(
    q: torch.Tensor, k: torch.Tensor, backward: bool, attn_mask: torch.Tensor | None = None
) -> Kernel:
    """The process-wide choice for a call (see :class:`KernelChooser`)."""
    return _CHOOSER.choose(q, k, backward, attn_mask)
