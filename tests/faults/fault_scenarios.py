"""The faults of the suite, each run as real trainings and checked; one summary :class:`Row` each.

See :mod:`fault_suite` for the list and ``docs/reliability.md`` for what each check means.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hostile_inputs
from fault_runner import CKPT_EVERY, STEPS, TINY, Mounts, Run, Runner, metric_steps, progress

N_SAVES = STEPS // CKPT_EVERY
NOBODY = 65534
"""uid/gid a root-run suite drops to for the real read-only-folder fault."""
STOPPED = "stops: one clear line, exit 2; previous checkpoint intact, no temp file"
IMAGE_STEPS = 7
"""Steps of one epoch over the hostile-input folder (28 files / batch 4)."""


KILL_ROWS = (
    "SIGKILL at a random moment",
    "SIGKILL while the temp checkpoint is half written",
    "SIGKILL after the temp file's fsync, before the rename",
    "SIGKILL after the rename, before the folder fsync",
)
DISK_ROWS = (
    "checkpoint write: ENOSPC inside the write (injected), stop",
    "checkpoint write: read-only folder, EACCES on create (injected), stop",
    "checkpoint write fails twice (injected ENOSPC, EROFS), retry",
    "full disk: a 2 MiB tmpfs (real ENOSPC), stop",
    "read-only folder: chmod a-w before a write (real EACCES), stop",
)
NAN_ROWS = (
    "NaN loss (injected), stop",
    "Inf loss (injected), stop",
    "NaN loss at a checkpoint step and the last step, skip",
    "learning rate 1e39: weights overflow, loss still finite, stop",
)
WORKER_ROWS = (
    "data-loader worker exits (os._exit)",
    "data-loader worker killed by SIGKILL (as the OOM killer)",
)
ALL_ROWS = KILL_ROWS + DISK_ROWS + NAN_ROWS + WORKER_ROWS
"""Every row of the summary table, in order. A drill that cannot run here (no ``mount``, no
folder another user can reach) keeps its row with 0 trials and a ``not run: <why>`` outcome."""


@dataclass
class Row:
    """One line of the summary table."""

    fault: str
    trials: int = 0
    survived: int = 0
    worst_lost: int | None = None
    outcomes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, problems: list[str], lost: int | None, outcome: str, trial: str) -> None:
        """Record one trial: ``problems`` empty means it survived."""
        self.trials += 1
        self.survived += int(not problems)
        if lost is not None:
            lost = max(0, lost)
            self.worst_lost = lost if self.worst_lost is None else max(self.worst_lost, lost)
        if outcome not in self.outcomes:
            self.outcomes.append(outcome)
        if problems:
            self.failures.append(f"{trial}: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "trials": self.trials,
            "survived": self.survived,
            "worst_steps_lost": self.worst_lost,
            "outcome": "; ".join(self.outcomes),
            "failures": self.failures,
        }


def with_overrides(base: list[str], *changes: str) -> list[str]:
    """``base`` with the keys of ``changes`` replaced (or added)."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [o for o in base if o.split("=", 1)[0] not in keys] + list(changes)


def describe(run: Run) -> str:
    """What a failed run did, in a few words."""
    if run.hung:
        return "hung (killed by the watchdog)"
    tb = ", traceback" if run.traceback else ""
    return f"exit {run.code}{tb}: {run.last_line[:160]}"


class Scenarios:
    """Runs every fault against the reference (uninterrupted) run.

    Args:
        runner: starts the trainings.
        mounts: real tmpfs faults where permitted.
        rng: draws kill moments and injection steps.
        workdir: run folders go here.
        short: fewer trials of each fault.
    """

    def __init__(
        self, runner: Runner, mounts: Mounts, rng: random.Random, workdir: Path, short: bool
    ) -> None:
        self.runner = runner
        self.mounts = mounts
        self.rng = rng
        self.work = workdir
        self.short = short
        self.ref = workdir / "reference"
        self.ref_curve: list[tuple[int, float]] = []
        self.ref_seconds = 0.0

    def run_all(self, kill_trials: int) -> tuple[list[Row], dict[str, Any]]:
        """Every fault; returns the summary rows and the hostile-input findings."""
        self.reference()
        rows = self.kills(kill_trials)
        rows += self.disk()
        rows += self.nans()
        rows += self.workers()
        if tuple(r.fault for r in rows) != ALL_ROWS:
            raise RuntimeError(f"the suite's rows {[r.fault for r in rows]} are not ALL_ROWS")
        return rows, self.hostile()

    # -- reference ----------------------------------------------------------------------------

    def reference(self) -> None:
        """The uninterrupted run every resumed run must equal (its duration scales the kills)."""
        self.runner.warm_up()
        run = self.runner.train(self.ref)
        if run.code != 0:
            raise RuntimeError(f"the uninterrupted reference run failed: {describe(run)}")
        self.ref_curve = metric_steps(self.ref)
        if [s for s, _ in self.ref_curve] != list(range(1, STEPS + 1)):
            raise RuntimeError("the reference run did not log every step")
        self.ref_seconds = run.seconds

    def _resume_and_compare(self, folder: Path, problems: list[str]) -> dict[str, Any] | None:
        run = self.runner.train(folder)
        if run.code != 0:
            problems.append(f"resume failed: {describe(run)}")
            return None
        if metric_steps(folder) != self.ref_curve:
            problems.append("resumed loss curve differs from the uninterrupted run")
        final = self.runner.inspect(folder, self.ref)
        if not final["equal_to_reference"]:
            problems.append("final weights/optimizer state differ from the uninterrupted run")
        return final

    # -- SIGKILL ------------------------------------------------------------------------------

    def kills(self, n: int) -> list[Row]:
        """SIGKILL at random moments and inside the checkpoint write window, then resume."""
        per_window = max(1, n // 6)
        plan = [
            ("random", KILL_ROWS[0], n - 3 * per_window),
            ("write", KILL_ROWS[1], per_window),
            ("rename", KILL_ROWS[2], per_window),
            ("after-rename", KILL_ROWS[3], per_window),
        ]
        rows = []
        trial = 0
        for mode, title, count in plan:
            row = Row(title)
            stale = 0
            for _ in range(count):
                trial += 1
                stale += self._kill_trial(row, trial, mode)
            if stale:
                row.outcomes.append(f"{stale} stale temp file(s) left in the run folder")
            rows.append(row)
        return rows

    def _kill_trial(self, row: Row, i: int, mode: str) -> int:
        folder = self.work / f"kill{i:02d}-{mode}"
        marker = self.work / f"kill{i:02d}.marker"
        hooks: dict[str, Any] = {}
        if mode == "random":
            first = None
            for attempt in range(4):  # re-draw if the run finished before the kill landed
                delay = self.rng.uniform(0.02, 0.95) * self.ref_seconds * 0.5**attempt
                first = self.runner.train(folder, kill_when=_after(delay))
                if first.killed:
                    break
                _clear(folder)
            where = f"random kill at {delay:.2f}s"
        else:
            nth = self.rng.randint(1, N_SAVES - 1)
            hooks = {"slow_save": {"nth": nth, "where": mode, "marker": str(marker)}}
            first = self.runner.train(folder, hooks=hooks, kill_when=lambda _t: marker.exists())
            where = f"kill in checkpoint write #{nth} ({mode})"
        assert first is not None
        problems: list[str] = []
        if not first.killed or first.hung:
            row.add([f"the kill did not land: {describe(first)}"], None, "kill missed", where)
            return 0
        done = progress(folder)
        ins = self.runner.inspect(folder)
        if ins["exists"] and not ins["loads"]:
            problems.append(f"latest does not load: {ins['error']}")
        if ins["finite"] is False:
            problems.append("latest holds non-finite weights")
        saved = ins["step"] if ins["loads"] else 0
        if done - saved > CKPT_EVERY:
            problems.append(f"{done - saved} steps lost (more than one interval)")
        final = self._resume_and_compare(folder, problems)
        row.add(problems, done - saved, "latest loads; resumed curve and weights identical", where)
        return len(final["temps"]) if final else 0

    # -- failing checkpoint writes -----------------------------------------------------------

    def disk(self) -> list[Row]:
        """ENOSPC and read-only folders, injected and (where mount works) real."""
        nths = [2] if self.short else [2, 5]
        enospc = Row(DISK_ROWS[0])
        for nth in nths:
            hooks = _fail(nth, "write", "ENOSPC")
            self._stop_trial(enospc, f"enospc{nth}", hooks, "No space left on device", nth)
        rofs = Row(DISK_ROWS[1])
        for nth in nths:
            hooks = _fail(nth, "open", "EACCES")
            self._stop_trial(rofs, f"eacces{nth}", hooks, "Permission denied", nth)
        retry = Row(DISK_ROWS[2])
        for code, where in [("ENOSPC", "write"), ("EROFS", "open")]:
            self._retry_trial(retry, code, where)
        rows = [enospc, rofs, retry]
        full = Row(DISK_ROWS[3])
        ro = Row(DISK_ROWS[4])
        mnt = self.work / "tmpfs-full"
        if self.mounts.tmpfs(mnt, "2m"):  # room for one checkpoint (1.1 MB), not for two
            self._stop_trial(full, "full", {}, "No space left on device", 2, folder=mnt / "run")
        else:
            full.outcomes.append("not run: mount not permitted here")
        self._readonly_trial(ro)
        return [*rows, full, ro]

    def _stop_trial(
        self,
        row: Row,
        name: str,
        hooks: dict[str, Any],
        expect: str,
        nth: int,
        *,
        folder: Path | None = None,
        policy: str = "stop",
        on_poll: Any = None,
    ) -> None:
        folder = folder or self.work / name
        run = self.runner.train(
            folder, f"logging.checkpoint_failure={policy}", hooks=hooks, on_poll=on_poll
        )
        ins = self.runner.inspect(folder)
        problems = []
        if run.code != 2 or run.traceback:
            problems.append(describe(run))
        elif expect not in run.last_line or "last good checkpoint" not in run.last_line:
            problems.append(f"unclear message: {run.last_line[:200]}")
        if not ins["loads"] or ins["step"] != (nth - 1) * CKPT_EVERY:
            problems.append(f"latest: {ins}")
        if ins["temps"]:
            problems.append(f"temp files left: {ins['temps']}")
        outcome = STOPPED if not problems else describe(run)
        saved = ins["step"] if ins["loads"] else 0
        row.add(problems, progress(folder) - saved, outcome, f"{name} (write #{nth}, {policy})")

    def _retry_trial(self, row: Row, code: str, where: str) -> None:
        folder = self.work / f"retry-{code.lower()}"
        hooks = _fail(2, where, code, count=2)
        run = self.runner.train(folder, "logging.checkpoint_failure=retry", hooks=hooks)
        problems = []
        if run.code != 0:
            problems.append(describe(run))
        elif "2 checkpoint write(s) failed and were retried" not in run.log:
            problems.append("no count of failed writes in the log")
        ins = self.runner.inspect(folder, self.ref)
        if not ins["equal_to_reference"] or ins["step"] != STEPS or ins["temps"]:
            problems.append(f"final checkpoint: {ins}")
        if metric_steps(folder) != self.ref_curve:
            problems.append("loss curve differs from the uninterrupted run")
        outcome = (
            "warns, counts, trains on; final weights identical" if not problems else (describe(run))
        )
        row.add(problems, 0, outcome, f"{code} at writes #2-3, retry")

    def _readonly_trial(self, row: Row) -> None:
        """A real read-only folder: the child runs as ``nobody`` when we are root (root ignores
        permissions), and the folder loses its write permission just before checkpoint #2."""
        root = os.geteuid() == 0
        # as root the training runs as nobody, so every folder above its run folder must let
        # others through: the work folder may not (pytest's is 0700), the system temp folder does
        box = Path(tempfile.mkdtemp(prefix="ijepa-faults-ro-")) if root else self.work / "ro"
        if root and not all(os.stat(p).st_mode & 0o001 for p in box.parents):
            shutil.rmtree(box)
            row.outcomes.append("not run: no folder that another user can reach")
            return
        folder = box / "run"
        folder.mkdir(parents=True, exist_ok=True)
        marker, go = box / "marker", box / "go"
        hooks: dict[str, Any] = {"pause_save": {"nth": 2, "marker": str(marker), "go": str(go)}}
        if root:
            box.chmod(0o755)
            for path in (box, folder):
                os.chown(path, NOBODY, NOBODY)
            hooks["as_user"] = {"uid": NOBODY, "gid": NOBODY}

        def make_readonly() -> None:
            if marker.exists() and not go.exists():
                folder.chmod(0o555)
                go.write_text("go")

        try:
            self._stop_trial(
                row, "readonly", hooks, "Permission denied", 2, folder=folder, on_poll=make_readonly
            )
        finally:
            folder.chmod(0o755)
            if root:
                shutil.rmtree(box, ignore_errors=True)

    # -- NaN / Inf ------------------------------------------------------------------------------

    def nans(self) -> list[Row]:
        """Non-finite losses (injected) under both policies, and overflowing weights."""
        n = 1 if self.short else 3
        rows = []
        for value in ("nan", "inf"):
            row = Row(NAN_ROWS[0] if value == "nan" else NAN_ROWS[1])
            for _ in range(n):
                self._nan_stop_trial(row, value, self.rng.randint(CKPT_EVERY + 1, STEPS - 2))
            rows.append(row)
        skip = Row(NAN_ROWS[2])
        for first in [CKPT_EVERY * 2 - 1] if self.short else [3, 7, 15]:
            self._nan_skip_trial(skip, [first, STEPS - 1])
        rows.append(skip)
        lr = Row(NAN_ROWS[3])
        variants = [("1e39", "1e39")] if self.short else [("1e39", "1e39"), ("1e-4", "1e39")]
        for start, peak in variants:
            self._overflow_trial(lr, start, peak)
        rows.append(lr)
        return rows

    def _nan_stop_trial(self, row: Row, value: str, step: int) -> None:
        folder = self.work / f"{value}-stop-{step}"
        hooks = {"bad_loss": {"steps": [step], "value": value}}
        run = self.runner.train(folder, hooks=hooks)
        ins = self.runner.inspect(folder)
        problems = []
        if run.code != 2 or run.traceback or f"non-finite at step {step}" not in run.last_line:
            problems.append(describe(run))
        if not ins["loads"] or not ins["finite"] or ins["step"] > step:
            problems.append(f"last good checkpoint: {ins}")
        saved = ins["step"] if ins["loads"] else 0
        lost = progress(folder) - saved
        if lost > CKPT_EVERY:
            problems.append(f"{lost} steps lost")
        outcome = (
            "stops naming the step, exit 2; last checkpoint finite"
            if not problems
            else (describe(run))
        )
        row.add(problems, lost, outcome, f"{value} at step {step}")

    def _nan_skip_trial(self, row: Row, steps: list[int]) -> None:
        folder = self.work / f"nan-skip-{steps[0]}"
        hooks = {"bad_loss": {"steps": steps, "value": "nan"}}
        run = self.runner.train(folder, "optimization.nan_policy=skip", hooks=hooks)
        ins = self.runner.inspect(folder)
        problems = []
        if run.code != 0:
            problems.append(describe(run))
        elif f"{len(steps)} step(s) were skipped" not in run.log:
            problems.append("no count of skipped steps in the log")
        if not ins["loads"] or not ins["finite"] or ins["step"] != STEPS:
            problems.append(f"final checkpoint: {ins}")
        outcome = (
            "skips and counts; final checkpoint written, finite"
            if not problems
            else (describe(run))
        )
        row.add(problems, 0, outcome, f"nan at steps {steps}")

    def _overflow_trial(self, row: Row, start: str, peak: str) -> None:
        folder = self.work / f"overflow-{start}"
        extra = [
            f"optimization.start_lr={start}",
            f"optimization.lr={peak}",
            "logging.checkpoint_every=1",
        ]
        run = self.runner.train(folder, *extra)
        ins = self.runner.inspect(folder)
        problems = []
        if run.code != 2 or run.traceback or "non-finite" not in run.last_line:
            problems.append(describe(run))
        if ins["exists"] and not (ins["loads"] and ins["finite"]):
            problems.append(f"a checkpoint with non-finite weights was written: {ins}")
        saved = ins["step"] if ins["loads"] else 0
        outcome = (
            "stops, exit 2; no checkpoint with non-finite weights"
            if not problems
            else (describe(run))
        )
        row.add(problems, progress(folder) - saved, outcome, f"lr {start} -> {peak}")

    # -- data-loader workers --------------------------------------------------------------------

    def _image_base(self, root: Path, workers: int) -> list[str]:
        return with_overrides(
            TINY,
            f"data.dataset=imagefolder:{root}",
            "data.batch_size=4",
            f"data.num_workers={workers}",
            "data.pin_mem=false",
            "optimization.epochs=1",
            "optimization.warmup=0",
            "logging.checkpoint_every=3",
        )

    def workers(self) -> list[Row]:
        """A data-loader worker that dies: an error, not a hang."""
        root = self.work / "images"
        hostile_inputs.write_good_images(root, 24)
        rows = []
        for how, title in [("exit", WORKER_ROWS[0]), ("sigkill", WORKER_ROWS[1])]:
            row = Row(title)
            for after in [3] if self.short else [1, 3]:
                folder = self.work / f"worker-{how}-{after}"
                hooks = {"worker_death": {"how": how, "after": after}}
                run = self.runner.train(folder, hooks=hooks, base=self._image_base(root, 2))
                dead = "DataLoader worker" in run.log and (
                    "exited unexpectedly" in run.log or "killed by signal" in run.log
                )
                problems = []
                if run.hung or run.code in (0, None) or not dead:
                    problems.append(describe(run))
                tb = " (with a traceback)" if run.traceback else ""
                outcome = f"error naming the dead worker{tb}, exit {run.code}"
                row.add(problems, None, outcome if not problems else describe(run), how)
            rows.append(row)
        return rows

    # -- hostile inputs -------------------------------------------------------------------------

    def hostile(self) -> dict[str, Any]:
        """The hostile-input corpus: per-file outcome, and trainings with 0 and 2 workers."""
        root = self.work / "hostile-corpus"
        corpus = hostile_inputs.build_corpus(root)
        got = self.runner.call(
            hostile_inputs.classify_json,
            str(root),
            [c.name for c in corpus],
            [str(c.path) for c in corpus],
        )
        logged: dict[str, list[str]] = {c.name: [] for c in corpus}
        runs, ok = [], True
        for workers in (0, 2):
            folder = self.work / f"hostile-run-w{workers}"
            run = self.runner.train(folder, base=self._image_base(root, workers))
            finished = f"finished at step {IMAGE_STEPS};" in run.log
            named = 0
            for c in corpus:
                seen = str(c.path) in run.log
                logged[c.name].append("yes" if seen else "no")
                named += int(seen and c.expected == "skipped")
            bad = sum(c.expected == "skipped" for c in corpus)
            count_line = any(
                "skipped" in line and "image folder: skipping" not in line
                for line in run.log.splitlines()
            )
            ok &= run.code == 0 and finished and named == bad
            runs.append(
                f"workers={workers}: {describe(run) if run.code else 'exit 0'}, "
                f"epoch of {IMAGE_STEPS} steps completed: {finished}, "
                f"{named}/{bad} skipped files named in the log, "
                f"a run-level count of skipped files in the log: {count_line}"
            )
        inputs = []
        for c in corpus:
            outcome = got[c.name]
            matches = hostile_inputs.outcome_matches(c.expected, outcome)
            ok &= matches
            shown = (
                outcome
                if outcome in ("read", "not listed")
                else "skipped and logged: " + outcome[9:][:60]
            )
            inputs.append(
                {
                    "input": c.name,
                    "expected": c.expected + (f" ({c.note})" if c.note else ""),
                    "outcome": shown if matches else f"UNEXPECTED: {outcome}",
                    "logged": " / ".join(logged[c.name]),
                }
            )
        return {"inputs": inputs, "runs": runs, "ok": bool(ok)}


def _fail(nth: int, where: str, code: str, count: int | None = None) -> dict[str, Any]:
    return {
        "fail_save": {
            "nth": nth,
            "where": where,
            "errno": getattr(errno, code),
            "count": count,
        }
    }


def _after(delay: float) -> Callable[[float], bool]:
    """A ``kill_when`` that fires ``delay`` seconds after the start."""
    return lambda elapsed: elapsed >= delay


def _clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
