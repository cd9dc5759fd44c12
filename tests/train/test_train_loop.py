"""The loop: metrics, checkpoints, automatic and exact resume, official config on an ImageFolder."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ijepa import checkpoint as ckpt
from ijepa.cli import main as cli_main
from ijepa.config import Config, apply_overrides, load_config
from ijepa.recipes import TINY_OVERRIDES
from ijepa.train.guards import TrainingDiverged
from ijepa.train.loop import train

REPO = Path(__file__).resolve().parents[2]

TINY = [
    *TINY_OVERRIDES,
    "data.batch_size=8",
    "meta.deterministic=true",
    "optimization.epochs=2",
    "optimization.warmup=1",
    "logging.log_every=1",
]


def _cfg(folder, *extra):
    return apply_overrides(Config(), [*TINY, f"logging.folder={folder}", *extra])


def _losses(folder):
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines]


def test_run_writes_metrics_config_and_checkpoint(tmp_path):
    res = train(_cfg(tmp_path / "run"))
    assert res.step == 16  # 64 images / batch 8 = 8 steps per epoch, 2 epochs
    recs = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 17))
    for key in ("loss", "lr", "wd", "momentum", "context_tokens", "target_tokens", "img_per_s"):
        assert key in recs[0]
    assert all(np.isfinite(r["loss"]) for r in recs)
    assert (tmp_path / "run/config.yaml").exists()
    state = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "run"))
    assert state["step"] == 16 and state["format_version"] == ckpt.FORMAT_VERSION
    assert set(state) >= {"encoder", "predictor", "target_encoder", "opt", "epoch", "config"}


def test_exact_resume(tmp_path):
    """N steps straight == N/2 steps, stop, resume, N/2 more (deterministic CPU)."""
    train(_cfg(tmp_path / "straight"))
    straight = _losses(tmp_path / "straight")
    train(_cfg(tmp_path / "split", "optimization.max_steps=8"))
    assert len(_losses(tmp_path / "split")) == 8
    train(_cfg(tmp_path / "split"))  # resumes automatically from the run folder
    assert _losses(tmp_path / "split") == straight
    a = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "straight"))
    b = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "split"))
    for key in a["target_encoder"]:
        assert torch.equal(a["target_encoder"][key], b["target_encoder"][key]), key


def test_resume_refuses_other_architecture(tmp_path):
    train(_cfg(tmp_path / "run", "optimization.max_steps=2"))
    with pytest.raises(ckpt.CheckpointError, match="different architecture"):
        train(_cfg(tmp_path / "run", "meta.enc_depth=3"))


def test_nan_stops_with_step(tmp_path):
    cfg = _cfg(tmp_path / "run", "optimization.lr=1e30", "optimization.start_lr=1e30")
    with pytest.raises(TrainingDiverged, match="non-finite at step"):
        train(cfg)


def _tiny_imagefolder(root: Path, n_per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n_per_class):
                arr = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def test_official_config_runs_on_imagefolder(tmp_path):
    """`ijepa train --config <official yaml>` with data-path and tiny-model overrides."""
    data = _tiny_imagefolder(tmp_path / "data")
    run = tmp_path / "run"
    official = REPO / "configs/official/in1k_vith14_ep300.yaml"
    code = cli_main(
        [
            "train",
            "--config",
            str(official),
            f"data.root_path={data.parent}",
            f"data.image_folder={data.name}",
            f"logging.folder={run}",
            "data.batch_size=4",
            "data.crop_size=84",
            "data.num_workers=0",
            "mask.min_keep=2",
            "meta.model_name=vit_tiny",
            "meta.enc_depth=1",
            "meta.pred_depth=1",
            "meta.pred_emb_dim=48",
            "optimization.max_steps=3",
            "logging.progress=false",
        ]
    )
    assert code == 0
    state = ckpt.load_checkpoint(ckpt.latest_path(run))
    assert state["step"] == 3
    assert state["model_args"]["patch_size"] == 14 and state["model_args"]["in_chans"] == 3
    assert load_config(run / "config.yaml").meta.model_name == "vit_tiny"


def test_cli_reports_placeholder_clearly(tmp_path, capsys):
    official = REPO / "configs/official/in1k_vith14_ep300.yaml"
    code = cli_main(["train", "--config", str(official)])
    assert code == 2
    err = capsys.readouterr().err
    assert "data.root_path is still the placeholder" in err and "Traceback" not in err


def test_cli_reports_bad_model_settings(tmp_path, capsys):
    code = cli_main(
        ["train", "--preset", "demo", f"logging.folder={tmp_path}", "meta.pred_emb_dim=50"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "meta." in err and "divisible" in err and "Traceback" not in err


def test_cli_reports_missing_dataset(tmp_path, capsys):
    code = cli_main(
        ["train", f"logging.folder={tmp_path}", f"data.dataset=imagefolder:{tmp_path / 'nope'}"]
    )
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_resume_check_ignores_init_only_model_args():
    from ijepa.train.resume import architecture

    args = {"model_name": "vit_tiny", "enc_depth": 2, "patch_init_std": 0.08}
    assert architecture(args) == architecture({**args, "patch_init_std": None})
    assert architecture(args) != architecture({**args, "enc_depth": 3})
