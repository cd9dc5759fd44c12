"""Helpers of the multi-process tests: start ranks as subprocesses with torchrun's variables.

Each rank is a plain ``python`` process given ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``, exactly what ``torchrun`` sets, so the tests exercise the same
code path as a real launch without the extra agent process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ijepa.recipes import TINY_OVERRIDES

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

TINY = [
    *TINY_OVERRIDES,
    "meta.deterministic=true",
    "optimization.epochs=2",
    "optimization.warmup=1",
    "logging.log_every=1",
]


def free_port() -> int:
    """A local TCP port that was free a moment ago, for these tests' own rendezvous.

    Another program may take it before rank 0 binds it (the library's launcher,
    :func:`ijepa.train.local_launch.launch_local`, leaves the port to torch's store instead);
    here the ranks are started by hand so that a test can kill or stall one of them.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment of one rank, as torchrun would set it (one thread per rank), with the
    repository's ``src`` on ``PYTHONPATH`` and Python's fault handler on; SLURM and torchelastic
    variables dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC"))}
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        # a rank that aborts (SIGABRT, SIGSEGV) prints its Python stack in its stderr, which
        # check_ok shows: where it was, not just "terminate called"
        PYTHONFAULTHANDLER="1",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@dataclass
class RankResult:
    """How one rank ended."""

    rank: int
    returncode: int
    out: str
    err: str
    seconds: float


def launch(
    commands: Sequence[Sequence[str]],
    *,
    timeout: float,
    cwd: Path | None = None,
    watch: Callable[[list[subprocess.Popen]], None] | None = None,
) -> list[RankResult]:
    """Run one command per rank and wait for all of them (killing all on timeout).

    Args:
        commands: ``commands[r]`` is rank ``r``'s argv.
        timeout: seconds for the whole group.
        watch: called once with the processes right after the start (e.g. to kill one later).
    """
    port = free_port()
    world = len(commands)
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            list(cmd),
            env=rank_env(r, world, port),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r, cmd in enumerate(commands)
    ]
    ended: dict[int, float] = {}
    try:
        if watch is not None:
            watch(procs)
        outs = []
        for r, proc in enumerate(procs):
            left = max(1.0, timeout - (time.monotonic() - start))
            out, err = proc.communicate(timeout=left)
            ended[r] = time.monotonic() - start
            outs.append((out, err))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        details = [p.communicate()[1][-2000:] for p in procs]
        raise AssertionError(
            f"ranks did not finish within {timeout} s; stderr: {details}"
        ) from None
    return [
        RankResult(r, p.returncode, o, e, ended[r])
        for r, (p, (o, e)) in enumerate(zip(procs, outs, strict=True))
    ]


def train_cmd(*overrides: str) -> list[str]:
    """``python -m ijepa train`` with the tiny test model and ``overrides``."""
    return [sys.executable, "-m", "ijepa", "train", *TINY, *overrides]


def worker_cmd(jobs: Sequence[Sequence[str]], mode: str = "train") -> list[str]:
    """Run several tiny ``ijepa train`` jobs (override lists) one after the other in one process.

    ``mode="train"`` stops at the first failure; ``"codes"`` runs all and prints the exit codes.
    """
    payload = json.dumps([[*TINY, *job] for job in jobs])
    return [sys.executable, str(HERE / "dist_worker.py"), mode, payload]


def check_ok(results: Sequence[RankResult]) -> None:
    """Fail with the ranks' stderr unless every rank exited 0."""
    bad = [r for r in results if r.returncode != 0]
    assert not bad, "\n".join(f"rank {r.rank} exit {r.returncode}:\n{r.err[-3000:]}" for r in bad)


def losses(folder: Path) -> list[float]:
    """The logged losses of a run folder, in step order."""
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines]


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest ``|a - b| / |b|`` (norms per tensor) over the floating tensors of two state dicts."""
    assert set(a) == set(b)
    worst = 0.0
    for key, value in a.items():
        if not torch.is_floating_point(value):
            continue
        ref = b[key].float()
        diff = float((value.float() - ref).norm() / ref.norm().clamp_min(1e-12))
        worst = max(worst, diff)
    return worst
