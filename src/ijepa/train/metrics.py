"""Training metrics: a device-side accumulator, named totals over ranks, records, the metrics log.

Nothing here synchronises with the host between log steps: :class:`StepMeter` adds device
tensors, and :meth:`StepMeter.gather` (called at log and checkpoint steps only) makes the loop's
one host synchronisation and its one extra collective, returning :class:`Totals` by name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from ijepa.config import Config
from ijepa.diagnostics import CollapseMonitor, probe_rank
from ijepa.dist import DistContext
from ijepa.trackers import Trackers, build_trackers
from ijepa.train.build import Batch
from ijepa.train.step import StepOutput

logger = logging.getLogger(__name__)

#: The quantities gathered from every rank at a log step, in the order they travel.
_GATHERED = (
    "loss_sum",
    "target_std_sum",
    "target_img_std_sum",
    "reg_sum",
    "steps",
    "first_nonfinite_step",
    "nonfinite_weights",
)


@dataclass
class Totals:
    """Sums over all ranks of what :class:`StepMeter` accumulated since the last record.

    Attributes:
        loss_sum: sum of the losses of the steps counted.
        target_std_sum: sum of their target-feature stds.
        target_img_std_sum: sum of their across-image target stds (``StepOutput.target_img_std``).
        reg_sum: sum of their (unweighted) regulariser values (0 without a regulariser).
        steps: steps counted (on all ranks together; skipped steps are not counted).
        first_nonfinite_step: the first step whose loss was NaN/Inf on any rank, or None.
        nonfinite_weights: parameter tensors holding NaN/Inf (0 unless weights were checked).
    """

    loss_sum: float
    target_std_sum: float
    target_img_std_sum: float
    reg_sum: float
    steps: float
    first_nonfinite_step: int | None
    nonfinite_weights: float


class StepMeter:
    """Accumulates step outputs on the device; :meth:`gather` turns them into :class:`Totals`.

    Args:
        device: where the sums live (the training device).
        world_size: number of processes (for the image rate).
    """

    def __init__(self, device: torch.device, world_size: int = 1) -> None:
        self.device = device
        self.world_size = world_size
        self.loss_sum = torch.zeros((), device=device)
        self.target_std_sum = torch.zeros((), device=device)
        self.target_img_std_sum = torch.zeros((), device=device)
        self.reg_sum = torch.zeros((), device=device)
        self.has_reg = False
        self.first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=device)
        self.steps = 0
        self.skipped = 0
        """Steps skipped for a non-finite loss since the run (this process) started."""
        self.context_tokens = 0
        self.target_tokens = 0
        self._images = 0
        self._since = time.perf_counter()

    def add(self, step: int, batch: Batch, out: StepOutput) -> None:
        """Count the output of step ``step`` (0-based) on ``batch``."""
        self._images += batch.images.shape[0] * self.world_size
        self.context_tokens = batch.masks_enc.shape[-1]
        self.target_tokens = batch.masks_pred.shape[-1]
        if out.skipped:
            self.skipped += 1
            logger.warning("step %d: non-finite loss, step skipped (%d so far)", step, self.skipped)
            return
        loss = out.loss.detach()
        first = self.first_nonfinite_step
        self.first_nonfinite_step = torch.where(~torch.isfinite(loss) & (first < 0), step, first)
        self.loss_sum += loss
        self.target_std_sum += out.target_std
        if out.target_img_std is not None:
            self.target_img_std_sum += out.target_img_std
        if out.reg is not None:
            self.reg_sum += out.reg
            self.has_reg = True
        self.steps += 1

    def gather(self, ctx: DistContext, nonfinite_weights: torch.Tensor | None = None) -> Totals:
        """Every rank's sums, added (one all-gather and one host sync).

        Args:
            ctx: the process group.
            nonfinite_weights: this rank's count of non-finite parameter tensors, when checked.
        """
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        mine = {
            "loss_sum": self.loss_sum.double(),
            "target_std_sum": self.target_std_sum.double(),
            "target_img_std_sum": self.target_img_std_sum.double(),
            "reg_sum": self.reg_sum.double(),
            "steps": torch.tensor(float(self.steps), dtype=torch.float64, device=self.device),
            "first_nonfinite_step": self.first_nonfinite_step.double(),
            "nonfinite_weights": zero if nonfinite_weights is None else nonfinite_weights.double(),
        }
        every = ctx.all_gather_tensor(torch.stack([mine[k] for k in _GATHERED])).cpu()
        column = dict(zip(_GATHERED, every.unbind(dim=1), strict=True))  # name -> (world,)
        bad = column["first_nonfinite_step"]
        bad = bad[bad >= 0]
        return Totals(
            loss_sum=float(column["loss_sum"].sum()),
            target_std_sum=float(column["target_std_sum"].sum()),
            target_img_std_sum=float(column["target_img_std_sum"].sum()),
            reg_sum=float(column["reg_sum"].sum()),
            steps=float(column["steps"].sum()),
            first_nonfinite_step=int(bad.min()) if bad.numel() else None,
            nonfinite_weights=float(column["nonfinite_weights"].sum()),
        )

    def record(self, totals: Totals, *, done: int, epoch: int, **schedule: float) -> dict[str, Any]:
        """The metrics record of step ``done`` (steps run so far), and a fresh start of the sums.

        Args:
            totals: what :meth:`gather` returned (with ``steps > 0``).
            done: the number of steps run so far (the record's ``step``).
            epoch: the epoch of the last step.
            schedule: ``lr``, ``wd`` and ``momentum`` of the last step.
        """
        count = max(1.0, totals.steps)
        now = time.perf_counter()
        rec = {
            "step": done,
            "epoch": epoch,
            "loss": totals.loss_sum / count,
            "lr": schedule["lr"],
            "wd": schedule["wd"],
            "momentum": schedule["momentum"],
            "context_tokens": self.context_tokens,
            "target_tokens": self.target_tokens,
            "img_per_s": self._images / max(1e-9, now - self._since),
            "target_std": totals.target_std_sum / count,
            "target_img_std": totals.target_img_std_sum / count,
            "skipped_steps": self.skipped,
        }
        if self.has_reg:
            rec["reg"] = totals.reg_sum / count
        self.loss_sum.zero_()
        self.target_std_sum.zero_()
        self.target_img_std_sum.zero_()
        self.reg_sum.zero_()
        self.steps = 0
        self._images = 0
        return rec

    def start_clock(self) -> None:
        """Start timing the next record's steps. The loop calls it after a record's own work (the
        collapse probe, writing, a checkpoint), so that ``img_per_s`` is the rate of the training
        steps alone: with that work inside it, a 1-step record (``ijepa.train.budget``'s
        calibration) timed a step of the demo at 0.104 s when its run took 0.091 s."""
        self._since = time.perf_counter()


def progress_postfix(rec: dict[str, Any], alarms: list[str]) -> dict[str, str]:
    """What the progress bar shows of a record."""
    postfix = {"loss": f"{rec['loss']:.4f}", "ips": f"{rec['img_per_s']:.0f}"}
    if alarms:
        postfix["alarm"] = "COLLAPSE"
    return postfix


class CollapseWatch:
    """The collapse probe (effective rank of a fixed batch's features) and the collapse alarm.

    Every rank runs the probe (under FSDP its forward is a collective) on the same probe batch,
    drawn from all ranks' images, so that the rank reads alike in one process or many; the main
    process alone feeds the alarm, which logs its own warnings.
    """

    #: Images in the probe batch (at most; fewer when the first logged step had fewer).
    PROBE_IMAGES = 256

    def __init__(self, target_encoder: nn.Module, ctx: DistContext) -> None:
        self.encoder = target_encoder
        self.ctx = ctx
        self.monitor = CollapseMonitor()
        self.images: torch.Tensor | None = None

    def probe_batch(self, images: torch.Tensor) -> torch.Tensor:
        """The probe batch ``(K, C, H, W)``: the first images of every rank's local batch.

        With ``W`` ranks each gives its first ``ceil(256 / W)`` images (or fewer, when some rank
        holds fewer), rank by rank, cut at 256. Measured on the demo (2 processes of 32 images):
        one rank's 32 images read an effective rank of 6-9 where one process's 64 read 11-15 for
        the same training, which is what the alarm thresholds were calibrated on.
        """
        world = self.ctx.world_size
        share = -(-self.PROBE_IMAGES // world)  # ceil
        if world > 1:  # every rank must send the same number of images
            have = torch.tensor([images.shape[0]], dtype=torch.int64, device=images.device)
            share = min(share, int(self.ctx.all_gather_tensor(have).min()))
        mine = images[:share].detach()
        every = self.ctx.all_gather_tensor(mine)  # (W, share, C, H, W)
        return every.flatten(0, 1)[: self.PROBE_IMAGES].clone()

    def check(self, rec: dict[str, Any], images: torch.Tensor) -> list[str]:
        """Add ``probe_rank`` to ``rec``; returns the alarms (empty when all is well).

        ``images`` is this rank's batch; the probe batch is drawn once, at the first logged step
        (:meth:`probe_batch`), and kept for the run. Every rank must call this at the same steps.
        """
        if self.images is None:
            self.images = self.probe_batch(images)
        try:
            rec["probe_rank"] = probe_rank(self.encoder, self.images)
        except ValueError as err:  # non-finite features: the alarm's NaN case
            logger.warning("collapse probe failed at step %d: %s", rec["step"], err)
            rec["probe_rank"] = math.nan
        return self.monitor.update(rec) if self.ctx.is_main else []


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric records past ``last_step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a record cut short (a crash, a full disk)
            logger.warning("%s: dropping an unreadable line: %.80s", path, line)
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= last_step:
            keep.append(line)
    # a kill while rewriting must not lose the history: write aside, then rename
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def run_trackers(cfg: Config, ctx: DistContext, resume_step: int = 0) -> Trackers:
    """The experiment trackers ``logging.trackers`` names (on the main process; none elsewhere).

    ``resume_step``: the step the run starts from (see :func:`ijepa.trackers.build_trackers`).
    """
    if not ctx.is_main:
        return Trackers()
    log = cfg.logging
    return build_trackers(
        log.trackers,
        log.folder,
        cfg.to_dict(),
        wandb_project=log.wandb_project,
        wandb_mode=log.wandb_mode,
        resume_step=resume_step,
    )


class MetricsLog:
    """The run's records: kept in memory on every rank, appended to ``metrics.jsonl`` by rank 0.

    Opening truncates the file to the records up to ``resume_step`` (a resumed run rewrites the
    steps after its checkpoint). Every record, and the collapse alarms raised with it, also go
    to the experiment trackers (``logging.trackers``): the same numbers, already on the host.
    Use as a context manager, or call :meth:`close`.

    Args:
        path: the metrics file.
        ctx: the process group (only the main process writes and calls ``on_log``).
        resume_step: the step the run starts from.
        on_log: called with each record on the main process.
        trackers: TensorBoard / W&B (see :func:`run_trackers`); closed with the log.
    """

    def __init__(
        self,
        path: Path,
        ctx: DistContext,
        resume_step: int,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        trackers: Trackers | None = None,
    ) -> None:
        self.history: list[dict[str, Any]] = []
        self.on_log = on_log if ctx.is_main else None
        self.trackers = trackers if trackers is not None else Trackers()
        self._file: IO[str] | None = None
        if ctx.is_main:
            truncate_metrics(path, resume_step)
            self._file = open(path, "a")  # noqa: SIM115  (closed by close())

    def write(self, rec: dict[str, Any], alarms: list[str] | None = None) -> None:
        """Keep ``rec``, append it to the file (flushed), send it and its ``alarms`` to the
        trackers, and pass it to ``on_log``."""
        self.history.append(rec)
        if self._file is not None:
            self._file.write(json.dumps(rec) + "\n")
            self._file.flush()
        self.trackers.log(rec)
        self.trackers.alarm(int(rec["step"]), alarms or [])
        if self.on_log is not None:
            self.on_log(rec)

    @property
    def last_loss(self) -> float:
        """The loss of the last record (NaN before the first)."""
        return self.history[-1]["loss"] if self.history else math.nan

    def close(self, *, failed: bool = False) -> None:
        """Close the file and the trackers (``failed``: the run ended with an error)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.trackers.close(failed=failed)

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(failed=exc_type is not None)
