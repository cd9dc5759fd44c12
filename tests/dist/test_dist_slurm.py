"""The SLURM path: the sbatch template (run with fake srun/scontrol) and ``ijepa slurm`` through
submitit (a fake ``sbatch`` for the SLURM executor, and submitit's in-process debug executor)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import submitit
from dist_helpers import REPO, TINY

from ijepa import checkpoint as ckpt
from ijepa.cli import main as cli_main
from ijepa.cli.launch import TrainJob, parse_time
from ijepa.config import load_config

TEMPLATE = REPO / "scripts/slurm/ijepa.sbatch"


def _fake_bin(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def _slurm_env(bin_dir: Path, record: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        RECORD=str(record),
        SLURM_JOB_ID="77",
        SLURM_JOB_NODELIST="node[1-2]",
        SLURM_NNODES="2",
        SLURM_GPUS_ON_NODE="4",
    )
    return env


def test_sbatch_template_header_and_syntax():
    text = TEMPLATE.read_text()
    for line in (
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "--rdzv_backend c10d",
        '-m ijepa train "$@" &',
    ):
        assert line in text, line
    subprocess.run(["bash", "-n", str(TEMPLATE)], check=True)


def test_sbatch_template_runs_srun_torchrun_and_requeues_near_the_limit(tmp_path):
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    record.mkdir()
    _fake_bin(
        bin_dir, "srun", 'printf "%s\\n" "$@" > "$RECORD/srun"; exec sleep 20 >/dev/null 2>&1'
    )
    _fake_bin(
        bin_dir,
        "scontrol",
        'if [ "$1 $2" = "show hostnames" ]; then printf "node1\\nnode2\\n"; '
        'else echo "$@" >> "$RECORD/scontrol"; fi',
    )
    proc = subprocess.Popen(
        ["bash", str(TEMPLATE), "--config", "my.yaml", "logging.folder=/shared/run"],
        env=_slurm_env(bin_dir, record),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (record / "srun").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)  # what SLURM sends 120 s before the time limit
    out, _ = proc.communicate(timeout=30)
    assert (record / "srun").read_text().split("\n")[:-1] == [
        "--kill-on-bad-exit=1",
        "torchrun",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "4",
        "--rdzv_id",
        "77",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        "node1:29500",
        "-m",
        "ijepa",
        "train",
        "--config",
        "my.yaml",
        "logging.folder=/shared/run",
    ]
    assert (record / "scontrol").read_text().strip() == "requeue 77", out
    assert "2 node(s) x 4 GPU(s), rendezvous at node1:29500" in out


def test_parse_time():
    assert [parse_time(t) for t in ("90", "30:00", "72:00:00", "1-12", "1-00:30:00")] == [
        90,
        30,
        4320,
        2160,
        1470,
    ]
    with pytest.raises(ValueError, match="--time"):
        parse_time("three days")


def test_ijepa_slurm_submits_a_requeueable_job(tmp_path, monkeypatch, capsys):
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    record.mkdir()
    _fake_bin(bin_dir, "sbatch", 'cp "$1" "$RECORD/job.sbatch"; echo "Submitted batch job 4242"')
    _fake_bin(bin_dir, "srun", "exit 1")  # submitit checks that srun exists
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(record))
    logs, run = tmp_path / "logs", tmp_path / "run"
    code = cli_main(
        [
            "slurm",
            "--nodes", "2",
            "--gpus-per-node", "4",
            "--partition", "gpu",
            "--account", "vision",
            "--time", "1-00:00:00",
            "--folder", str(logs),
            *TINY,
            f"logging.folder={run}",
            "logging.checkpoint_every=100",
        ]
    )  # fmt: skip
    assert code == 0
    assert "submitted job 4242" in capsys.readouterr().out
    script = (record / "job.sbatch").read_text()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=vision",
        "#SBATCH --time=1440",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --job-name=ijepa",
    ):
        assert line in script.splitlines(), line
    assert "srun --unbuffered" in script and "submitit.core._submit" in script
    # the pickled callable: torchrun on every node, on the frozen config
    pickled = next(logs.glob("*_submitted.pkl"))
    job = submitit.helpers.DelayedSubmission.load(pickled).function
    assert isinstance(job, TrainJob)
    frozen = logs / "ijepa-config.yaml"
    cfg = load_config(frozen)
    assert cfg.logging.folder == str(run) and cfg.logging.checkpoint_every == 100
    cmd = job.torchrun_command(2, "node1", "4242")
    assert cmd[1:] == [
        "-m", "torch.distributed.run",
        "--nnodes", "2", "--rdzv_id", "4242", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", "node1:29500", "--nproc_per_node", "4",
        "-m", "ijepa", "train", "--config", str(frozen),
    ]  # fmt: skip
    # on preemption or timeout submitit requeues what checkpoint() returns: the same job
    again = job.checkpoint()
    assert again.function is job and again.args == () and again.kwargs == {}


def test_ijepa_slurm_rejects_bad_settings(tmp_path, capsys):
    assert cli_main(["slurm", "--cluster", "local", "--nodes", "2", *TINY]) == 2
    assert "--nodes 1" in capsys.readouterr().err
    assert cli_main(["slurm", "--gpus-per-node", "0", *TINY]) == 2
    assert "--nproc-per-node" in capsys.readouterr().err


@pytest.mark.distributed
def test_debug_executor_runs_torchrun_training(tmp_path):
    run = tmp_path / "run"
    code = cli_main(
        [
            "slurm",
            "--cluster", "debug",
            "--gpus-per-node", "0",
            "--nproc-per-node", "2",
            "--folder", str(tmp_path / "logs"),
            *TINY,
            "data.batch_size=4",
            "optimization.max_steps=2",
            f"logging.folder={run}",
        ]
    )  # fmt: skip
    assert code == 0
    state = ckpt.load_checkpoint(ckpt.latest_path(run))
    assert (state["step"], state["world_size"], state["global_batch_size"]) == (2, 2, 8)
