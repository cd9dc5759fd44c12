"""Trackers on their own: records and alarms in TensorBoard and W&B (offline), read back."""

from __future__ import annotations

import importlib.util

import pytest
from tracker_readers import tensorboard_scalars, tensorboard_texts, wandb_history

from ijepa import trackers as trackers_module
from ijepa.config import Config, ConfigError, apply_overrides, validate
from ijepa.trackers import build_trackers, parse_trackers

RECORDS = [
    {"step": 10, "epoch": 0, "loss": 0.5, "lr": 1e-3, "probe_rank": 7.5, "skipped_steps": 0},
    {"step": 20, "epoch": 0, "loss": 0.25, "lr": 2e-3, "probe_rank": float("nan"), "tag": "x"},
]


def test_parse_trackers() -> None:
    assert parse_trackers("") == [] and parse_trackers("none") == []
    assert parse_trackers("TensorBoard, wandb,tensorboard") == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="unknown tracker 'mlflow'"):
        parse_trackers("tensorboard,mlflow")
    cfg = apply_overrides(Config(), ["logging.trackers=tensorboard,wandb"])
    assert cfg.logging.trackers == "tensorboard,wandb"
    bad = apply_overrides(Config(), ["logging.trackers=tensorbord"])
    with pytest.raises(ConfigError, match="unknown tracker"):
        validate(bad)
    with pytest.raises(ConfigError, match="must be one of online, offline"):
        apply_overrides(Config(), ["logging.wandb_mode=cloud"])


def test_missing_package_is_a_config_error(tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        trackers_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'torch-ijepa\[wandb\]'"):
        build_trackers("wandb", tmp_path, {})


def test_tensorboard_gets_every_number_and_the_alarms(tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    trackers = build_trackers("tensorboard", tmp_path, {})
    for rec in RECORDS:
        trackers.log(rec)
    trackers.alarm(20, ["collapse: target std 0.001 < 0.01"])
    trackers.alarm(30, [])  # nothing to say: nothing written
    trackers.close()
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == [(10, 0.5), (20, 0.25)]
    assert scalars["train/lr"] == [(10, pytest.approx(1e-3)), (20, pytest.approx(2e-3))]
    assert scalars["train/collapse_alarm"] == [(20, 1.0)]
    assert "train/tag" not in scalars and "train/step" not in scalars
    assert tensorboard_texts(tmp_path / "tensorboard") == [
        (20, "collapse: target std 0.001 < 0.01")
    ]


def test_wandb_offline_run_gets_the_records_and_resumes(tmp_path) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    config = {"data": {"batch_size": 16}}
    trackers = build_trackers("wandb", tmp_path, config, wandb_mode="offline")
    trackers.log(RECORDS[0])
    trackers.close()
    run_id = (tmp_path / "wandb-run-id.txt").read_text().strip()
    again = build_trackers("wandb", tmp_path, config, wandb_mode="offline")  # a resume
    again.log(RECORDS[1])
    again.alarm(20, ["collapse!"])
    again.close()
    assert (tmp_path / "wandb-run-id.txt").read_text().strip() == run_id
    rows, saved = wandb_history(tmp_path)
    by_step: dict[int, dict] = {}
    for row in rows:
        by_step.setdefault(row["_step"], {}).update(row)
    assert by_step[10]["loss"] == 0.5 and by_step[20]["loss"] == 0.25
    assert by_step[20]["alarm"] == "collapse!" and by_step[20]["collapse_alarm"] == 1
    assert saved["data"] == {"batch_size": 16}
    assert all(path.name.endswith(f"-{run_id}") for path in (tmp_path / "wandb").glob("offline-*"))
