"""Experiment trackers: the records of ``metrics.jsonl``, also sent to TensorBoard and W&B.

``logging.trackers`` names them, comma-separated (``tensorboard``, ``wandb``; none by default).
Each is an optional extra (``pip install 'torch-ijepa[tensorboard,wandb]'``); naming one whose
package is missing is a configuration error, not a silent no-op.

A tracker receives exactly the records the loop writes to ``metrics.jsonl`` (plain Python
numbers, made at log steps, so no tracker adds a device synchronisation) and the collapse
alarms of :class:`~ijepa.diagnostics.CollapseMonitor`:

- ``tensorboard``: event files in ``RUN/tensorboard/``; every number of a record is the scalar
  ``train/KEY`` at ``global_step = record["step"]``; an alarm is the text ``alarms`` and the
  scalar ``train/collapse_alarm`` (1) at its step. A resumed run hides (``purge_step``) what
  the interrupted one logged after its checkpoint: those steps are logged again.
- ``wandb``: a run in ``RUN/wandb/`` with the resolved config, whose history at ``step`` holds
  every number of the record; an alarm adds ``collapse_alarm`` (1) and ``alarm`` (its text). The
  W&B run id is kept in ``RUN/wandb-run-id.txt``, so a resumed training continues the same W&B
  run (W&B keeps the first values of steps logged again after a crash: the steps between the
  last checkpoint and the crash). ``logging.wandb_mode`` (``online``/``offline``; default: W&B's own, which reads
  ``WANDB_MODE``) and ``logging.wandb_project`` choose where it goes.

Only the main process (rank 0) makes trackers.
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "TRACKERS",
    "TensorBoardTracker",
    "Tracker",
    "Trackers",
    "WandbTracker",
    "build_trackers",
    "parse_trackers",
]

#: Tracker names accepted by ``logging.trackers``, with the package each needs.
TRACKERS: dict[str, str] = {"tensorboard": "tensorboard", "wandb": "wandb"}


def _config_error(message: str) -> Exception:
    from ijepa.errors import ConfigError

    return ConfigError(message)


def parse_trackers(text: str | None) -> list[str]:
    """Tracker names from ``logging.trackers`` (``"tensorboard,wandb"``; empty or ``none``: none).

    Raises:
        ConfigError: an unknown name.
    """
    names: list[str] = []
    for part in (text or "").split(","):
        name = part.strip().lower()
        if not name or name == "none":
            continue
        if name not in TRACKERS:
            raise _config_error(
                f"logging.trackers: unknown tracker {name!r}; choose from {', '.join(TRACKERS)} "
                "(comma-separated)"
            )
        if name not in names:
            names.append(name)
    return names


def _numbers(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric fields of a record except ``step`` (bools and strings left out)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


class Tracker(Protocol):
    """What the training loop calls on a tracker."""

    def log(self, record: Mapping[str, Any]) -> None:
        """One ``metrics.jsonl`` record (has ``step``)."""

    def alarm(self, step: int, messages: Sequence[str]) -> None:
        """Collapse alarms raised at ``step``."""

    def close(self, failed: bool = False) -> None:
        """Flush and release files (called once, also when training fails: ``failed``)."""


class TensorBoardTracker:
    """Scalars in TensorBoard event files under ``folder``.

    Args:
        folder: the event files' folder.
        resume_step: the step a resumed run starts from: TensorBoard hides the events past it
            that the interrupted run wrote (they are logged again).
    """

    def __init__(self, folder: str | Path, resume_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        purge = resume_step + 1 if resume_step > 0 else None
        self.writer = SummaryWriter(log_dir=str(self.folder), flush_secs=30, purge_step=purge)

    def log(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for key, value in _numbers(record).items():
            self.writer.add_scalar(f"train/{key}", value, global_step=step)

    def alarm(self, step: int, messages: Sequence[str]) -> None:
        self.writer.add_scalar("train/collapse_alarm", 1.0, global_step=step)
        self.writer.add_text("alarms", "\n\n".join(messages), global_step=step)

    def close(self, failed: bool = False) -> None:
        self.writer.flush()
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run (the run id is kept in the run folder, so resumes continue it)."""

    def __init__(
        self,
        run_dir: str | Path,
        config: Mapping[str, Any],
        *,
        project: str = "ijepa",
        mode: str | None = None,
    ) -> None:
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / "wandb-run-id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(6)
        try:
            self.run = wandb.init(
                project=project,
                name=run_dir.resolve().name,
                id=run_id,
                resume="allow",
                dir=str(run_dir),
                config=dict(config),
                mode=mode,  # type: ignore[arg-type]  # checked by the config
                reinit="create_new",
            )
        except wandb.errors.UsageError as err:
            raise _config_error(
                f"wandb could not start a run ({err}); log in with `wandb login`, or set "
                "logging.wandb_mode=offline (then `wandb sync` later)"
            ) from err
        id_file.write_text(run_id + "\n")

    def log(self, record: Mapping[str, Any]) -> None:
        self.run.log(_numbers(record), step=int(record["step"]))

    def alarm(self, step: int, messages: Sequence[str]) -> None:
        self.run.log({"collapse_alarm": 1.0, "alarm": "; ".join(messages)}, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class Trackers:
    """Several trackers fed together (an empty one does nothing)."""

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(self, record: Mapping[str, Any]) -> None:
        """Send one record to every tracker."""
        for tracker in self.trackers:
            tracker.log(record)

    def alarm(self, step: int, messages: Sequence[str]) -> None:
        """Send collapse alarms to every tracker (nothing when ``messages`` is empty)."""
        if messages:
            for tracker in self.trackers:
                tracker.alarm(step, messages)

    def close(self, failed: bool = False) -> None:
        """Close every tracker (each once); ``failed``: the run ended with an error."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close(failed)


def build_trackers(
    names: str | None,
    run_dir: str | Path,
    config: Mapping[str, Any],
    *,
    wandb_project: str = "ijepa",
    wandb_mode: str | None = None,
    resume_step: int = 0,
) -> Trackers:
    """The trackers named in ``names`` (``logging.trackers``) for a run folder.

    ``resume_step``: the step a resumed run starts from (TensorBoard then hides what the
    interrupted run logged after it).

    Raises:
        ConfigError: an unknown tracker, or one whose package is not installed.
    """
    chosen = parse_trackers(names)
    for name in chosen:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise _config_error(
                f"logging.trackers names {name!r}, but the {TRACKERS[name]!r} package is not "
                f"installed: pip install 'torch-ijepa[{name}]'"
            )
    out: list[Tracker] = []
    try:
        for name in chosen:
            if name == "tensorboard":
                out.append(TensorBoardTracker(Path(run_dir) / "tensorboard", resume_step))
            else:
                out.append(WandbTracker(run_dir, config, project=wandb_project, mode=wandb_mode))
    except BaseException:
        Trackers(out).close()  # do not leave a started W&B run or open event file behind
        raise
    return Trackers(out)
