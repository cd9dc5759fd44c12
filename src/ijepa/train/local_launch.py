"""Train with several processes on one machine (data parallel over CPU cores), like ``torchrun``.

On a small CPU, the tiny models of the demo make matrices too small for intra-op threads to pay:
measured on the 2-core dev machine (AMD EPYC, AVX2, torch 2.14.1), the demo's ViT with a 96x4
predictor trained at ~170 img/s in one process with 2 threads, and at ~123 img/s in *each* of two
1-thread processes running side by side (~246 img/s together). :func:`launch_local` runs
``procs`` ranks of ``ijepa train`` with one thread each through torch's own launcher (what
``torchrun --standalone`` runs), joined by gloo (DDP): the same global batch, split over the
ranks, and the same optimisation as one process (gradients are averaged).
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from ijepa.config import Config, apply_overrides, save_config, validate

__all__ = ["LaunchError", "launch_local", "split_batch"]


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


def launch_local(cfg: Config, procs: int, *, threads: int = 1, poll_s: float = 0.5) -> Path:
    """Run ``ijepa train`` for ``cfg`` in ``procs`` local processes (torch's launcher) and wait.

    ``cfg.data.batch_size`` is the *global* batch here; each rank gets ``batch_size / procs``
    (:func:`split_batch`). The config is frozen as ``launch_config.yaml`` in the run folder. The
    ranks are started by torch's own launcher (:func:`torch.distributed.launcher.api.elastic_launch`,
    what ``torchrun --standalone`` runs): its rendezvous store binds a free port itself, so no
    port is chosen here and none can be taken by another program in between. Rank 0 shows the
    progress bar and logs; the other ranks log warnings only (see :mod:`ijepa.cli.train`). If a
    rank fails, the launcher stops the others.

    Args:
        cfg: the run's config (``logging.folder`` is the run folder).
        procs: number of ranks (>= 1).
        threads: intra-op threads per rank (``OMP_NUM_THREADS`` of the ranks).
        poll_s: seconds between the launcher's checks of the ranks.

    Returns:
        The run folder, which holds the checkpoints and metrics as after :func:`train`.

    Raises:
        ValueError: bad ``procs`` or batch split.
        ConfigError: the config is invalid.
        LaunchError: a rank exited with an error (its messages are on the console above).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    per_rank = split_batch(cfg.data.batch_size, procs)
    validate(cfg)  # config errors once, here, rather than from every rank
    run_dir = Path(cfg.logging.folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    frozen = run_dir / "launch_config.yaml"
    save_config(apply_overrides(cfg, [f"data.batch_size={per_rank}"]), frozen)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=procs,
        run_id=f"ijepa-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: the store picks its own port
        max_restarts=0,
        monitor_interval=poll_s,
    )
    args = ("-m", "ijepa", "train", "--config", str(frozen))
    try:
        with _rank_environment(threads):
            elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise LaunchError(
            f"rank {rank} of {procs} exited with code {failure.exitcode} (its messages "
            f"are above); the other ranks were stopped. Run folder: {run_dir}"
        ) from err
    return run_dir


@contextlib.contextmanager
def _rank_environment(threads: int) -> Iterator[None]:
    """What the launcher passes on to the ranks: ``threads`` threads, no SLURM/torchelastic state.

    torch's launcher gives its ranks this process's environment plus their rank variables; the
    variables changed here are restored on exit.
    """
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(("SLURM_", "TORCHELASTIC"))]:
            del os.environ[key]
        os.environ["OMP_NUM_THREADS"] = str(threads)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
