"""Process groups: the only module that reads torchrun or SLURM environment variables.

A job is launched by ``torchrun`` (one process per GPU, or per CPU "rank" with gloo), possibly under
``srun`` on SLURM; this module reads where the process sits (:func:`dist_info_from_env`), joins the
process group with a collective timeout (:class:`DistContext`: gloo on CPU, NCCL on CUDA, chosen
from the device), and offers the few collectives the training loop needs.

When a collective fails (a peer died, or hung past the timeout), :meth:`DistContext.failure` turns
the backend's error into a :class:`DistributedError` that names the ranks that stopped answering:
every surviving rank checks in to the rendezvous store and waits a short grace period for the
others; ranks that never check in are reported as dead or hung. (With NCCL the watchdog aborts the
process on a timeout before Python sees an error; its log line names the rank and the collective.)
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist

from ijepa.errors import ConfigError

logger = logging.getLogger(__name__)

#: Substrings of backend errors that mean a collective or the connection to a peer failed.
_COMM_ERROR_MARKERS = (
    "gloo",
    "nccl",
    "processgroup",
    "connection closed",
    "connection reset",
    "timed out",
    "monitoredbarrier",
    "broken pipe",
)


class DistributedError(RuntimeError):
    """A multi-process problem: bad launch environment, or a collective that failed or timed out."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs and checkpoints."""
        return self.rank == 0


def dist_info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, else SLURM's, else one process.

    Under SLURM without torchrun, ``SLURM_PROCID`` is the rank and the task count of the current
    ``srun`` step (``SLURM_STEP_NUM_TASKS``, else ``SLURM_NTASKS``) the world size.
    """
    env = dict(os.environ) if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )
    ntasks = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS"))
    if "SLURM_PROCID" in env and ntasks is not None:
        return DistInfo(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(ntasks),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
        )
    return DistInfo()


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (this process's local GPU) when available, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:  # an unknown device type
        raise ConfigError(f"meta.device must be auto, cpu, cuda or cuda:N; got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"meta.device={name!r} was requested but CUDA is not available")
    return device


def all_gather_into(output: torch.Tensor, tensor: torch.Tensor, group: Any = None) -> None:
    """All-gather equal-sized tensors into one ``output`` (concatenated along dim 0).

    Uses ``all_gather_single`` where this torch has it (``all_gather_into_tensor`` is deprecated).
    """
    gather = getattr(tdist, "all_gather_single", None) or tdist.all_gather_into_tensor
    gather(output, tensor, group=group)


def backend_for(device: torch.device) -> str:
    """The collective backend for a device: NCCL for CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def is_comm_error(err: BaseException) -> bool:
    """True if ``err`` comes from a failed collective or a lost peer connection.

    ``DistError`` (NCCL and store errors), or a plain ``RuntimeError`` from a backend such as gloo
    (subclasses are our own errors or others that say what they are).
    """
    if isinstance(err, tdist.DistError):
        return True
    if type(err) is not RuntimeError:
        return False
    text = str(err).lower()
    return any(marker in text for marker in _COMM_ERROR_MARKERS)


_GENERATIONS = itertools.count()
"""How many process groups this process has joined: each one's rendezvous keys get their own
prefix (see :func:`_join_group`)."""


def _join_group(info: DistInfo, device: torch.device, timeout: timedelta, generation: int) -> Any:
    """Rendezvous through ``env://`` and initialise the default process group; returns the store.

    A process may join several groups one after the other on the same ``MASTER_PORT`` (the
    multi-process tests, a notebook calling ``train`` twice). torch reuses rank 0's store server
    while anything still holds it (FSDP modules returned to the caller do), and a new group's
    keys would then meet the previous group's: a rank reads the old addresses, "joins" a group no
    one else is in, and hangs in its first collective. So each group's keys live under a prefix
    naming this process's join count (``ijepa/<n>/``; every rank runs the same jobs in the same
    order). A rank that reached the old server just before rank 0 let it go loses the
    connection; it joins again, up to two more times.
    """
    from torch.distributed.rendezvous import rendezvous

    for attempt in range(3):
        raw, _, _ = next(
            rendezvous("env://", rank=info.rank, world_size=info.world_size, timeout=timeout)
        )
        store = tdist.PrefixStore(f"ijepa/{generation}/", raw)
        try:
            tdist.init_process_group(
                backend_for(device),
                store=store,
                rank=info.rank,
                world_size=info.world_size,
                timeout=timeout,
            )
            return store
        except tdist.DistNetworkError as err:
            if info.rank == 0 or attempt == 2:
                raise
            logger.debug("rendezvous store went away while joining (%s); joining again", err)
            time.sleep(0.5)
    raise AssertionError("unreachable")


@dataclass
class DistContext:
    """A joined process group (or a single process) and the collectives the loop uses.

    Build it with :meth:`start`; call :meth:`close` at the end. With ``world_size == 1`` every
    collective is the identity and nothing is initialised.
    """

    info: DistInfo
    device: torch.device
    timeout_s: float = 600.0
    owns_group: bool = False
    _store: Any = field(default=None, repr=False)

    @property
    def rank(self) -> int:
        """This process's global rank."""
        return self.info.rank

    @property
    def world_size(self) -> int:
        """Number of processes."""
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only rank that writes files)."""
        return self.info.is_main

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.info.world_size > 1

    @classmethod
    def start(
        cls,
        info: DistInfo,
        device: torch.device,
        timeout_s: float = 600.0,
        env: dict[str, str] | None = None,
    ) -> DistContext:
        """Join the process group of a multi-process job (no-op for one process).

        An existing default group (initialised by the caller) is reused and left open.

        Raises:
            DistributedError: the rendezvous variables are missing, or the rendezvous failed.
        """
        if timeout_s <= 0:
            raise DistributedError(f"meta.dist_timeout_s must be > 0, got {timeout_s}")
        ctx = cls(info=info, device=device, timeout_s=float(timeout_s))
        if info.world_size <= 1:
            return ctx
        if tdist.is_initialized():
            if tdist.get_world_size() != info.world_size or tdist.get_rank() != info.rank:
                raise DistributedError(
                    f"a process group is already initialised as rank {tdist.get_rank()} of "
                    f"{tdist.get_world_size()}, but the environment says rank {info.rank} of "
                    f"{info.world_size}"
                )
            return ctx
        env = dict(os.environ) if env is None else env
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise DistributedError(
                f"rank {info.rank} of {info.world_size}: {' and '.join(missing)} not set. Launch "
                "with torchrun (it sets them), or export MASTER_ADDR=<first node> and "
                "MASTER_PORT=<free port> before srun (see scripts/slurm/ijepa.sbatch)"
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = timedelta(seconds=timeout_s)
        try:
            store = _join_group(info, device, timeout, next(_GENERATIONS))
        except (RuntimeError, ValueError) as err:
            raise DistributedError(
                f"rank {info.rank} of {info.world_size} could not join the process group at "
                f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} within {timeout_s:g} s "
                f"(meta.dist_timeout_s): {_first_line(err)}"
            ) from err
        ctx.owns_group = True
        ctx._store = store
        logger.info(
            "rank %d of %d joined the %s process group (timeout %g s)",
            info.rank,
            info.world_size,
            backend_for(device),
            timeout_s,
        )
        return ctx

    def close(self, *, after_failure: bool = False, finished: bool = False) -> None:
        """Leave the process group if this context created it.

        ``finished``: every rank ends the same job normally. The ranks then meet at a barrier
        first, which on gloo also waits for every collective still queued on this rank (FSDP
        issues some asynchronously), so no rank tears down its side while a peer is still in a
        collective, and no backend thread is left holding a tensor once the group is gone. The
        group is then destroyed and the garbage it leaves (modules and work objects in reference
        cycles) collected now, while the interpreter is whole: a gloo rank that left this to
        interpreter shutdown was once aborted there ("terminate called without an active
        exception", exit -6) after a run that had finished. Without ``finished`` (an error on
        this rank, which its peers may not share) there is no barrier: it could wait for a
        peer that has already gone. After a communication failure the group is only dropped
        (tearing it down could block on the dead peer); the process exits soon after anyway.
        """
        leave = self.owns_group and tdist.is_initialized() and not after_failure
        if leave and (not finished or self._end_barrier()):
            tdist.destroy_process_group()
            gc.collect()
        self.owns_group = False
        self._store = None

    def _end_barrier(self) -> bool:
        """The end-of-run barrier; False (said in a warning) if a peer had already gone."""
        try:
            tdist.barrier()
        except RuntimeError as err:
            if not is_comm_error(err):
                raise
            logger.warning(
                "rank %d: this rank finished, but a peer left before the end-of-run barrier "
                "(%s); leaving the process group without tearing it down",
                self.rank,
                _first_line(err),
            )
            return False
        return True

    # ----------------------------------------------------------------- collectives
    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` from rank ``src`` on every rank (picklable objects)."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        tdist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def all_gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack every rank's ``tensor`` (same shape on all ranks): ``(world_size, *shape)``."""
        if not self.distributed:
            return tensor.unsqueeze(0)
        flat = tensor.contiguous().view(-1)
        out = torch.empty(self.world_size * flat.numel(), dtype=tensor.dtype, device=tensor.device)
        all_gather_into(out, flat)
        return out.view(self.world_size, *tensor.shape)

    def broadcast_tensors(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        """Overwrite ``tensors`` in place with rank ``src``'s values."""
        if not self.distributed:
            return
        with torch.no_grad():
            for t in tensors:
                tdist.broadcast(t.data, src=src)

    # ----------------------------------------------------------------- failures
    def unresponsive_ranks(self, grace_s: float) -> list[int] | None:
        """Check in to the rendezvous store and list the ranks that do not within ``grace_s``.

        Returns None when the store itself cannot be reached (its host, rank 0 or torchrun's
        agent, is gone) or when this context has no store (a group made by the caller).
        """
        if self._store is None:
            return None
        prefix = "ijepa/alive/"
        try:
            self._store.set(f"{prefix}{self.rank}", "1")
            deadline = time.monotonic() + grace_s
            while True:
                missing = [
                    r for r in range(self.world_size) if not self._store.check([f"{prefix}{r}"])
                ]
                if not missing or time.monotonic() >= deadline:
                    return missing
                time.sleep(0.2)
        except (RuntimeError, tdist.DistError) as err:
            logger.debug("rendezvous store unreachable: %s", err)
            return None

    def failure(
        self, err: BaseException, what: str, grace_s: float | None = None
    ) -> DistributedError:
        """A :class:`DistributedError` for a failed collective, naming unresponsive ranks."""
        grace = min(10.0, self.timeout_s) if grace_s is None else grace_s
        missing = self.unresponsive_ranks(grace)
        if missing is None:
            who = (
                "the rendezvous store is unreachable: the process hosting it (rank 0, or "
                "torchrun's agent) has probably died"
            )
        elif missing:
            names = ", ".join(str(r) for r in missing)
            who = f"rank(s) {names} did not respond within {grace:g} s: dead or hung"
        else:
            who = "every rank is still alive; a rank may have left the collective early"
        return DistributedError(
            f"rank {self.rank} of {self.world_size}: {what} failed: {who}. Backend error: "
            f"{_first_line(err)} (collective timeout meta.dist_timeout_s={self.timeout_s:g})"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
