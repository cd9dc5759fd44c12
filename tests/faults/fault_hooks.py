"""Child side of the fault-injection suite: test-only monkeypatches, the child entry, checks.

Nothing here is imported by the library, and the library reads no environment variable for any
of it. :mod:`faults` starts each training as a separate process (forked from a forkserver that
has imported torch and ijepa once) running :func:`child_main`, which installs the requested
hooks and then calls the real CLI (``ijepa train ...``). The hooks patch names *in the ijepa
modules* (``ijepa.checkpoint.open``, ``.os``, ``.save_checkpoint``,
``ijepa.train.step.jepa_loss``, ``ijepa.data.folder.load_rgb``), so only the code under test is
affected:

- ``slow_save``: on the n-th checkpoint write, touch a marker file and sleep inside the write
  window (``where``: ``write`` after the first 64 KiB of the temporary file, ``rename`` after
  the fsync and before ``os.replace``, ``after-rename`` after the replace, before the folder
  fsync), so the parent's SIGKILL lands there;
- ``pause_save``: before the n-th checkpoint write, touch a marker and wait for a "go" file (the
  parent remounts the folder read-only meanwhile: a real EROFS);
- ``fail_save``: from the n-th checkpoint write on (``count`` times, or always), raise an
  ``OSError`` with ``errno`` when the temporary file is created (``where=open``: what a read-only
  folder does) or after its first 64 KiB (``where=write``: what a full disk does);
- ``bad_loss``: multiply the loss of the given (0-based) steps by NaN or Inf;
- ``worker_death``: a data-loader worker (worker 1) ends itself on its n-th image, by
  ``os._exit`` or by SIGKILL (what the out-of-memory killer does);
- ``as_user``: run the training as another user (root ignores file permissions).
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

WINDOW_BYTES = 64 * 1024
"""Bytes of the temporary checkpoint written before a ``write`` hook fires."""


def _touch(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


class _FileProxy:
    """A binary file whose ``write`` can sleep or fail once ``WINDOW_BYTES`` have been written."""

    def __init__(self, fh: Any, on_window: Any) -> None:
        self._fh = fh
        self._on_window = on_window
        self._written = 0
        self._fired = False

    def write(self, data: Any) -> int:
        n = self._fh.write(data)
        self._written += len(data)
        if not self._fired and self._written >= WINDOW_BYTES:
            self._fired = True
            self._fh.flush()  # the partial temporary file is really on disk
            self._on_window()
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _FileProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()


class _OsProxy:
    """Stands in for ``os`` inside ``ijepa.checkpoint``: hooks ``replace``, delegates the rest."""

    def __init__(self, before: Any = None, after: Any = None) -> None:
        self._before, self._after = before, after

    def replace(self, src: Any, dst: Any) -> None:
        if self._before is not None:
            self._before()
        os.replace(src, dst)
        if self._after is not None:
            self._after()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def _install_save_hooks(spec: dict[str, Any], kind: str) -> None:
    import builtins

    from ijepa import checkpoint as ckpt

    count = {"saves": 0}
    real_open = builtins.open

    def save_index() -> int:
        return count["saves"]

    def hooked_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" not in mode:
            return real_open(path, mode, *args, **kwargs)
        count["saves"] += 1
        n = save_index()
        if kind == "fail_save":
            first, times = spec["nth"], spec.get("count")
            failing = n >= first and (times is None or n < first + times)
            code = spec["errno"]
            if failing and spec["where"] == "open":
                raise OSError(code, os.strerror(code), str(path))
            fh = real_open(path, mode, *args, **kwargs)
            if failing:

                def fail() -> None:
                    raise OSError(code, os.strerror(code))

                return _FileProxy(fh, fail)
            return fh
        fh = real_open(path, mode, *args, **kwargs)
        if n == spec["nth"] and spec["where"] == "write":
            return _FileProxy(fh, lambda: _sleep_in_window(spec))
        return fh

    ckpt.open = hooked_open  # type: ignore[attr-defined]  # shadows the builtin in that module
    if kind == "slow_save" and spec["where"] in ("rename", "after-rename"):

        def window() -> None:
            if save_index() == spec["nth"]:
                _sleep_in_window(spec)

        if spec["where"] == "rename":
            ckpt.os = _OsProxy(before=window)  # type: ignore[assignment]
        else:
            ckpt.os = _OsProxy(after=window)  # type: ignore[assignment]


def _sleep_in_window(spec: dict[str, Any]) -> None:
    _touch(spec["marker"])
    time.sleep(spec.get("sleep", 60.0))


def _install_pause_save(spec: dict[str, Any]) -> None:
    from ijepa import checkpoint as ckpt

    real_save = ckpt.save_checkpoint
    count = {"saves": 0}

    def paused_save(state: Any, path: Any) -> None:
        count["saves"] += 1
        if count["saves"] == spec["nth"]:
            _touch(spec["marker"])
            deadline = time.monotonic() + spec.get("timeout", 60.0)
            while not Path(spec["go"]).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        real_save(state, path)

    ckpt.save_checkpoint = paused_save


def _install_bad_loss(spec: dict[str, Any]) -> None:
    from ijepa.train import step as step_mod

    real_loss = step_mod.jepa_loss
    calls = {"n": 0}
    bad_steps = set(spec["steps"])
    factor = float(spec["value"])

    def bad_loss(*args: Any, **kwargs: Any) -> Any:  # whatever the loss's signature
        loss = real_loss(*args, **kwargs)
        i = calls["n"]
        calls["n"] += 1
        # one loss per step: call i of a fresh run is step i
        return loss * factor if i in bad_steps else loss

    step_mod.jepa_loss = bad_loss


def _install_worker_death(spec: dict[str, Any]) -> None:
    import torch.utils.data

    from ijepa.data import folder

    real_load = folder.load_rgb
    seen = {"n": 0}

    def dying_load(path: Any) -> Any:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id == 1:
            seen["n"] += 1
            if seen["n"] >= spec["after"]:
                if spec["how"] == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                os._exit(3)
        return real_load(path)

    folder.load_rgb = dying_load


def install_hooks(hooks: dict[str, Any]) -> None:
    """Install the hooks named in ``hooks`` (see the module docstring)."""
    for kind, spec in hooks.items():
        if kind in ("slow_save", "fail_save"):
            _install_save_hooks(spec, kind)
        elif kind == "pause_save":
            _install_pause_save(spec)
        elif kind == "bad_loss":
            _install_bad_loss(spec)
        elif kind == "worker_death":
            _install_worker_death(spec)
        else:
            raise ValueError(f"unknown hook {kind!r}")


def child_main(argv: list[str], hooks: dict[str, Any], log_path: str, threads: int) -> None:
    """Entry of a training process: redirect output to ``log_path``, hook, run ``ijepa``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import multiprocessing

    import torch

    from ijepa.cli import main

    # a forkserver child inherits the forkserver start method; a plain `ijepa` process has the
    # platform default (data-loader workers are forked on Linux)
    multiprocessing.set_start_method(None, force=True)
    hooks = dict(hooks)
    user = hooks.pop("as_user", None)
    if user is not None:  # root ignores file permissions: drop to an ordinary user
        os.setgid(user["gid"])
        os.setuid(user["uid"])
    torch.set_num_threads(threads)
    install_hooks(hooks)
    raise SystemExit(main(argv))  # multiprocessing makes this the process's exit code


def noop(out_path: str) -> None:
    """Writes ``{}``: starts the forkserver before anything is timed."""
    Path(out_path).write_text("{}")


def _tensors(state: dict[str, Any]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for part in ("encoder", "predictor", "target_encoder"):
        for key, value in state.get(part, {}).items():
            out[f"{part}.{key}"] = value
    for pid, slot in state.get("opt", {}).get("state", {}).items():
        for key, value in slot.items():
            if isinstance(value, torch.Tensor):
                out[f"opt.{pid}.{key}"] = value
    return out


def inspect_run(run_dir: str, reference_dir: str | None, out_path: str) -> None:
    """Check a run folder's ``latest`` checkpoint; write the findings as JSON to ``out_path``.

    Findings: whether ``latest`` exists and loads, its step, whether all its weights are finite,
    temporary files left in the folder, and (with ``reference_dir``) whether every weight and
    optimizer tensor equals the reference run's.
    """
    import torch

    from ijepa import checkpoint as ckpt

    torch.set_num_threads(1)
    folder = Path(run_dir)
    latest = ckpt.latest_path(folder)
    res: dict[str, Any] = {
        "exists": latest.exists(),
        "loads": False,
        "error": None,
        "step": None,
        "finite": None,
        "temps": sorted(p.name for p in folder.glob(".*.tmp-*")) if folder.is_dir() else [],
        "equal_to_reference": None,
    }
    if latest.exists():
        try:
            state = ckpt.load_checkpoint(latest)
        except ckpt.CheckpointError as err:
            res["error"] = str(err)
        else:
            res["loads"] = True
            res["step"] = int(state.get("step", -1))
            mine = _tensors(state)
            res["finite"] = all(
                bool(torch.isfinite(t).all()) for t in mine.values() if t.is_floating_point()
            )
            if reference_dir is not None:
                ref = _tensors(ckpt.load_checkpoint(ckpt.latest_path(reference_dir)))
                res["equal_to_reference"] = set(ref) == set(mine) and all(
                    torch.equal(ref[k], mine[k]) for k in ref
                )
    Path(out_path).write_text(json.dumps(res))


def errno_code(name: str) -> int:
    """``"ENOSPC"`` -> 28."""
    return int(getattr(errno_mod, name))
