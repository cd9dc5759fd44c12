"""Train with several processes on one machine (data parallel over CPU cores), like ``torchrun``.

On a small CPU, the tiny models of the demo make matrices too small for intra-op threads to pay:
measured on the 2-core dev machine (AMD EPYC, AVX2, torch 2.14.1), the demo's ViT with a 96x4
predictor trained at ~170 img/s in one process with 2 threads, and at ~123 img/s in *each* of two
1-thread processes running side by side (~246 img/s together). :func:`launch_local` runs ``procs`` ranks of
``ijepa train`` with one thread each, joined by gloo (DDP): the same global batch, split over the
ranks, and the same optimisation as one process (gradients are averaged).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ijepa.config import Config, apply_overrides, save_config, validate

__all__ = ["LaunchError", "free_port", "launch_local", "rank_env", "split_batch"]


class LaunchError(RuntimeError):
    """A rank of a local multi-process run failed."""


def split_batch(batch_size: int, procs: int) -> int:
    """The per-rank batch that keeps the global batch ``batch_size`` over ``procs`` ranks.

    Raises:
        ValueError: ``procs`` < 1 or ``batch_size`` not divisible by ``procs``.
    """
    if procs < 1:
        raise ValueError(f"procs must be >= 1, got {procs}")
    if batch_size % procs:
        raise ValueError(
            f"data.batch_size={batch_size} is not divisible by {procs} processes; choose a "
            "batch size that is a multiple of the process count"
        )
    return batch_size // procs


def free_port() -> int:
    """A local TCP port that was free a moment ago (for the ranks' rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int, threads: int = 1) -> dict[str, str]:
    """This process's environment as ``torchrun`` would give rank ``rank`` of ``world`` locally.

    SLURM and torchelastic variables are dropped so that :func:`ijepa.dist.dist_info_from_env`
    reads these; ``OMP_NUM_THREADS`` is ``threads``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC"))}
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS=str(threads),
    )
    return env


def launch_local(cfg: Config, procs: int, *, threads: int = 1, poll_s: float = 0.5) -> Path:
    """Run ``ijepa train`` for ``cfg`` in ``procs`` local processes and wait for them.

    ``cfg.data.batch_size`` is the *global* batch here; each rank gets ``batch_size / procs``
    (:func:`split_batch`). The config is frozen as ``launch_config.yaml`` in the run folder; rank 0
    shows the progress bar and logs, the other ranks log warnings only. If a rank fails, the others
    are stopped.

    Args:
        cfg: the run's config (``logging.folder`` is the run folder).
        procs: number of ranks (>= 1).
        threads: intra-op threads per rank.
        poll_s: seconds between checks of the ranks.

    Returns:
        The run folder, which holds the checkpoints and metrics as after :func:`train`.

    Raises:
        ValueError: bad ``procs`` or batch split.
        ConfigError: the config is invalid.
        LaunchError: a rank exited with an error (its messages are on the console above).
    """
    per_rank = split_batch(cfg.data.batch_size, procs)
    validate(cfg)  # config errors once, here, rather than from every rank
    run_dir = Path(cfg.logging.folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    frozen = run_dir / "launch_config.yaml"
    save_config(apply_overrides(cfg, [f"data.batch_size={per_rank}"]), frozen)
    port = free_port()
    ranks = []
    for rank in range(procs):
        cmd = [sys.executable, "-m", "ijepa", *(["-q"] if rank else []), "train"]
        cmd += ["--config", str(frozen)]
        ranks.append(subprocess.Popen(cmd, env=rank_env(rank, procs, port, threads)))
    try:
        while True:
            codes = [p.poll() for p in ranks]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                raise LaunchError(
                    f"rank {rank} of {procs} exited with code {code} (its messages are above); "
                    f"the other ranks were stopped. Run folder: {run_dir}"
                )
            if all(c == 0 for c in codes):
                return run_dir
            time.sleep(poll_s)
    finally:
        _stop(ranks)


def _stop(ranks: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """Terminate ranks still running (SIGTERM, then SIGKILL after ``grace_s``)."""
    alive = [p for p in ranks if p.poll() is None]
    for p in alive:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in alive:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
