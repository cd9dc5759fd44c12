"""``ijepa slurm``: submit a multi-node training run to SLURM through submitit.

SLURM allocates the nodes and starts one task per node; each task runs ``torchrun`` with one worker
per GPU, all nodes meeting at a c10d rendezvous on the first node (the same layout as the
documented template ``scripts/slurm/ijepa.sbatch``, where ``srun torchrun ...`` does it by hand).
The config is resolved and checked at submission and frozen in a YAML file next to submitit's
logs, so a requeued job runs exactly what was submitted.

On preemption or near the time limit SLURM signals the job; submitit then calls
:meth:`TrainJob.checkpoint`, which resubmits the same job, and requeues it (up to
``--max-requeues`` times). Nothing else is needed to resume: the run folder holds the ``latest``
checkpoint, which ``ijepa train`` picks up automatically. Steps since the last checkpoint are
redone, so set ``logging.checkpoint_every`` to bound the loss.

Needs the ``slurm`` extra (``pip install ijepa[slurm]``, which installs submitit).
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ijepa.config import Config, ConfigError, apply_overrides, load_config, save_config, validate

logger = logging.getLogger(__name__)

#: Port of the c10d rendezvous on the first node.
DEFAULT_PORT = 29500
#: Seconds between SLURM's warning signal and the kill (time to requeue).
SIGNAL_DELAY_S = 120


def parse_time(text: str) -> int:
    """A SLURM time limit (``MIN``, ``H:MM:SS``, ``D-HH:MM[:SS]``) in whole minutes (at least 1)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--time {text!r}: expected MINUTES, H:MM:SS or D-HH:MM:SS")
    days, first = m.group(1), int(m.group(2))
    b, c = (int(g) if g else 0 for g in m.groups()[2:])
    if days is None and m.group(3) is None:
        minutes = float(first)  # MIN
    elif days is None and m.group(4) is None:
        minutes = first + b / 60  # MIN:SS
    else:
        minutes = int(days or 0) * 24 * 60 + first * 60 + b + c / 60  # [D-]H[:MM[:SS]]
    return max(1, int(minutes))


class TrainJob:
    """The submitit callable: run ``torchrun ... -m ijepa train`` on this node.

    Args:
        train_args: arguments of ``ijepa train`` (e.g. ``["--config", path]``).
        nproc_per_node: workers per node (GPUs per node).
        port: rendezvous port on the first node (multi-node jobs).
        python: the interpreter that runs torchrun.
    """

    def __init__(
        self,
        train_args: list[str],
        nproc_per_node: int,
        port: int = DEFAULT_PORT,
        python: str = sys.executable,
    ) -> None:
        if nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node must be >= 1, got {nproc_per_node}")
        self.train_args = list(train_args)
        self.nproc_per_node = nproc_per_node
        self.port = port
        self.python = python

    def torchrun_command(self, nnodes: int, master_addr: str, rdzv_id: str) -> list[str]:
        """The command one node runs: one torchrun agent starting ``nproc_per_node`` workers."""
        cmd = [self.python, "-m", "torch.distributed.run"]
        if nnodes == 1:
            cmd += ["--standalone", "--nnodes", "1"]
        else:
            cmd += [
                "--nnodes",
                str(nnodes),
                "--rdzv_id",
                rdzv_id,
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                f"{master_addr}:{self.port}",
            ]
        return [
            *cmd,
            "--nproc_per_node",
            str(self.nproc_per_node),
            "-m",
            "ijepa",
            "train",
            *self.train_args,
        ]

    def __call__(self) -> int:
        """Run this node's share of the job; raises if torchrun fails (submitit reports it)."""
        import submitit

        env = submitit.JobEnvironment()
        cmd = self.torchrun_command(env.num_nodes, env.hostnames[0], str(env.job_id))
        logger.info("node %d of %d: %s", env.node, env.num_nodes, " ".join(cmd))
        code = subprocess.run(cmd, check=False).returncode
        if code != 0:
            raise RuntimeError(f"torchrun exited with code {code} on node {env.node}: {cmd}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on preemption or timeout: requeue the same job.

        The training itself resumes from the run folder's ``latest`` checkpoint.
        """
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``slurm`` subcommand."""
    p = sub.add_parser(
        "slurm",
        help="submit a (multi-node) training run to SLURM through submitit",
        description=(
            "Submit `ijepa train` to SLURM: one task per node runs torchrun with one worker per "
            "GPU. The job requeues itself on preemption or timeout and resumes from the run "
            "folder. Training settings are those of `ijepa train` (--config/--preset and "
            "section.key=value overrides)."
        ),
    )
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--nproc-per-node", type=int, help="workers per node (default: --gpus-per-node)")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--time", default="72:00:00", help="time limit (default 72:00:00)")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--qos", help="SLURM quality of service")
    p.add_argument("--constraint", help="SLURM node constraint")
    p.add_argument("--cpus-per-task", type=int, default=10, help="CPUs per node task")
    p.add_argument("--mem-gb", type=float, help="memory per node in GB")
    p.add_argument("--job-name", default="ijepa", help="job name (default ijepa)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="rendezvous port")
    p.add_argument("--max-requeues", type=int, default=20, help="requeues on timeout/preemption")
    p.add_argument(
        "--folder", help="submitit log folder (default: <logging.folder>/slurm)", default=None
    )
    p.add_argument(
        "--cluster",
        choices=("slurm", "local", "debug"),
        default="slurm",
        help="submitit executor: slurm, or local/debug to try the job on this machine",
    )
    p.add_argument("--wait", action="store_true", help="wait for the job and return its status")
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    p.add_argument("--config", help="YAML config file (ours or official)")
    p.add_argument("--preset", help="start from a built-in preset: demo, small-cpu")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(func=run_slurm)


def _resolved_config(args: argparse.Namespace) -> Config:
    from ijepa.recipes import preset

    if args.config and args.preset:
        raise ConfigError("give --config or --preset, not both")
    cfg = load_config(args.config) if args.config else preset(args.preset or "small-cpu")
    cfg = apply_overrides(cfg, args.overrides)
    validate(cfg)
    # the job may start in another directory: pin the run folder
    cfg.logging.folder = str(Path(cfg.logging.folder).resolve())
    return cfg


def executor_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """submitit parameters of the job (shared ones, and ``slurm_*`` ones for the SLURM executor)."""
    params: dict[str, Any] = {
        "name": args.job_name,
        "nodes": args.nodes,
        "tasks_per_node": 1,
        "gpus_per_node": args.gpus_per_node,
        "cpus_per_task": args.cpus_per_task,
        "timeout_min": parse_time(args.time),
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
        "slurm_additional_parameters": {"requeue": True},
    }
    if args.mem_gb is not None:
        params["mem_gb"] = args.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(args, key):
            params[f"slurm_{key}"] = getattr(args, key)
    return params


def run_slurm(args: argparse.Namespace) -> int:
    """Handler of ``ijepa slurm``."""
    if args.nodes < 1 or args.gpus_per_node < 0:
        raise ConfigError("--nodes must be >= 1 and --gpus-per-node >= 0")
    nproc = args.nproc_per_node or args.gpus_per_node
    if nproc < 1:
        raise ConfigError("--gpus-per-node is 0: give --nproc-per-node (CPU workers per node)")
    if args.cluster != "slurm" and args.nodes != 1:
        raise ConfigError(f"--cluster {args.cluster} runs on this machine only: use --nodes 1")
    cfg = _resolved_config(args)
    folder = Path(args.folder or Path(cfg.logging.folder) / "slurm").resolve()
    frozen = folder / f"{args.job_name}-config.yaml"
    job = TrainJob(["--config", str(frozen)], nproc_per_node=nproc, port=args.port)
    params = executor_parameters(args)
    if args.dry_run:
        print(f"config (frozen at submission): {frozen}")
        print(f"executor ({args.cluster}): {params}")
        print("each node runs: " + " ".join(job.torchrun_command(args.nodes, "$MASTER", "$JOB")))
        return 0
    try:
        import submitit
    except ModuleNotFoundError as err:
        raise ConfigError("ijepa slurm needs submitit: pip install 'ijepa[slurm]'") from err
    if cfg.logging.checkpoint_every == 0:
        logger.info(
            "logging.checkpoint_every=0 (once per epoch): a preempted job redoes up to an epoch"
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, frozen)
    try:
        executor = submitit.AutoExecutor(
            folder=folder, cluster=args.cluster, slurm_max_num_timeout=args.max_requeues
        )
    except RuntimeError as err:  # submitit found no srun
        raise ConfigError(
            f"cannot submit to SLURM from this machine ({err}); run on a login node, or try the "
            "job here with --cluster local or --cluster debug"
        ) from err
    executor.update_parameters(**params)
    submitted = executor.submit(job)
    print(f"submitted job {submitted.job_id}; logs in {folder}; run folder {cfg.logging.folder}")
    if args.wait or args.cluster == "debug":
        submitted.result()
        print(f"job {submitted.job_id} finished")
    return 0
