"""Parent side of the fault-injection suite: start trainings, kill them on cue, read their folders.

Every training is a separate process running the real CLI (``ijepa train ...``) with the test
hooks of :mod:`fault_hooks`. The processes are forked from one forkserver that has imported torch
and ijepa once (an import costs 10-20 s on a loaded 2-core machine); the forkserver itself never
runs torch code, so forking it is safe. This module imports no torch.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fault_hooks

from ijepa.recipes import TINY_OVERRIDES

STEPS = 32
"""Steps of every embedded run: 64 images / batch 8 = 8 steps per epoch, 4 epochs."""
CKPT_EVERY = 4
"""Steps between checkpoints (one interval: the most a kill may lose)."""
TINY = [
    *TINY_OVERRIDES,
    "data.batch_size=8",
    "meta.deterministic=true",
    "meta.device=cpu",
    "optimization.epochs=4",
    "optimization.warmup=1",
    "logging.log_every=1",
    f"logging.checkpoint_every={CKPT_EVERY}",
]
"""Overrides of every embedded run (a tiny ViT on 16 px crops; deterministic CPU mode)."""
PRELOAD = [
    "__main__",
    "torch",
    # torch.save imports this lazily: a child that dropped to `nobody` cannot read a virtualenv
    # under a 0700 folder (e.g. a clone in `mktemp -d`), so it must be loaded before the drop
    "torch.utils.serialization",
    "ijepa.cli",
    "ijepa.cli.train",
    # `ijepa.cli.user_errors()` imports the error types lazily, when an error is being reported
    "ijepa.errors",
    "ijepa.eval.cache",
    "ijepa.search.index",
    "ijepa.train.local_launch",
    "ijepa.train.loop",
    "ijepa.data",
    "hostile_inputs",
]


@dataclass
class Run:
    """How one training process ended (``code`` is negative for a signal)."""

    code: int | None
    seconds: float
    killed: bool
    hung: bool
    log: str

    @property
    def last_line(self) -> str:
        lines = [x for x in self.log.splitlines() if x.strip()]
        return lines[-1] if lines else ""

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.log


class Runner:
    """Starts training processes from a forkserver, kills them on cue, inspects their folders.

    Args:
        workdir: where logs and inspection results go.
        threads: torch threads of each training (1: fast and steady on a loaded machine).
        timeout_s: a training still running after this long is killed and reported as hung.
    """

    def __init__(self, workdir: Path, threads: int, timeout_s: float) -> None:
        self.workdir = workdir
        self.threads = threads
        self.timeout_s = timeout_s
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        self._n = 0
        self.t0 = time.monotonic()

    def train(
        self,
        folder: Path,
        *extra: str,
        hooks: dict[str, Any] | None = None,
        kill_when: Callable[[float], bool] | None = None,
        on_poll: Callable[[], None] | None = None,
        base: list[str] | None = None,
    ) -> Run:
        """Run ``ijepa train`` with :data:`TINY` (or ``base``) plus ``extra`` overrides.

        Args:
            folder: the run folder.
            hooks: test hooks for the child (see :mod:`fault_hooks`).
            kill_when: polled every ~5 ms with the seconds since the start; True: SIGKILL now.
            on_poll: also called at every poll (to act on a marker the child wrote).
            base: the overrides to start from instead of :data:`TINY`.
        """
        argv = ["train", *(TINY if base is None else base), f"logging.folder={folder}", *extra]
        self._n += 1
        log = self.workdir / "logs" / f"{self._n:03d}-{folder.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = self.ctx.Process(
            target=fault_hooks.child_main, args=(argv, hooks or {}, str(log), self.threads)
        )
        t0 = time.monotonic()
        proc.start()
        pid = proc.pid
        assert pid is not None
        killed = hung = False
        try:
            while proc.is_alive():
                elapsed = time.monotonic() - t0
                if on_poll is not None:
                    on_poll()
                if kill_when is not None and not killed and kill_when(elapsed):
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                elif elapsed > self.timeout_s and not killed:
                    os.kill(pid, signal.SIGKILL)
                    killed = hung = True
                proc.join(0.005)
        finally:
            if proc.is_alive():  # the suite itself failed: do not leave the training behind
                os.kill(pid, signal.SIGKILL)
            proc.join()
        seconds = time.monotonic() - t0
        self.note(f"{folder.name}: exit {proc.exitcode} after {seconds:.1f}s")
        return Run(proc.exitcode, seconds, killed, hung, log.read_text())

    def note(self, text: str) -> None:
        """A progress line on stderr."""
        print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=sys.stderr, flush=True)

    def call(self, target: Callable[..., None], *args: Any) -> dict[str, Any]:
        """Run ``target(*args, out_path)`` in a fresh process and return the JSON it wrote."""
        fd, name = tempfile.mkstemp(dir=self.workdir, suffix=".json")
        os.close(fd)
        out = Path(name)
        proc = self.ctx.Process(target=target, args=(*args, str(out)))
        proc.start()
        proc.join(self.timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{target.__name__}{args} failed (exit code {proc.exitcode})")
        result: dict[str, Any] = json.loads(out.read_text())
        out.unlink()
        return result

    def warm_up(self) -> None:
        """Start the forkserver (it imports torch and ijepa once) before anything is timed."""
        self.call(fault_hooks.noop)
        self.note("forkserver ready")

    def inspect(self, folder: Path, reference: Path | None = None) -> dict[str, Any]:
        """Findings on ``folder``'s ``latest`` checkpoint (see :func:`fault_hooks.inspect_run`)."""
        ref = str(reference) if reference is not None else None
        return self.call(fault_hooks.inspect_run, str(folder), ref)


def metric_steps(folder: Path) -> list[tuple[int, float]]:
    """``(step, loss)`` of each complete record in ``folder/metrics.jsonl``."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a record cut by the kill
        out.append((int(rec["step"]), float(rec["loss"])))
    return out


def progress(folder: Path) -> int:
    """The last step the run logged (every step is logged)."""
    steps = metric_steps(folder)
    return steps[-1][0] if steps else 0


class Mounts:
    """Tiny tmpfs folders for real ENOSPC / EROFS, where ``mount`` is permitted (root on Linux)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and os.geteuid() == 0 and shutil.which("mount") is not None
        self.mounted: list[Path] = []

    def tmpfs(self, path: Path, size: str) -> bool:
        """Mount a tmpfs of ``size`` (e.g. ``2m``) at ``path``; False where not permitted."""
        if not self.enabled:
            return False
        path.mkdir(parents=True, exist_ok=True)
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            self.enabled = False
            return False
        self.mounted.append(path)
        return True

    def release(self) -> None:
        """Unmount everything mounted here."""
        for path in reversed(self.mounted):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)  # still busy
        self.mounted.clear()
