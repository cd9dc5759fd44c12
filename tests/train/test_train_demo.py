"""`ijepa demo` end to end on a tiny slice of the embedded set: table, JSON line, results file."""

from __future__ import annotations

import json

import pytest

from ijepa.cli import main as cli_main
from ijepa.cli.train import DEMO_MAX_EPOCHS, DEMO_MAX_MINUTES
from ijepa.config import apply_overrides, load_config
from ijepa.recipes import preset

TINY_DEMO = ["data.dataset=embedded:256", "logging.progress=false"]


def _tiny_demo(out, procs: int) -> int:
    """``ijepa demo`` on 256 embedded images, one epoch (4 steps of the global batch 64)."""
    args = ["demo", "--out", str(out), "--no-report", "--procs", str(procs)]
    return cli_main([*args, "--epochs", "1", *TINY_DEMO])


def test_demo_prints_the_comparison_and_saves_it(tmp_path, capsys):
    out = tmp_path / "demo"
    code = _tiny_demo(out, procs=1)
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    table = "\n".join(lines)
    assert "random init" in table and "raw pixels" in table and "2x2 grid pool" in table
    summary = json.loads(lines[-1])
    for key in ("knn_trained", "knn_random", "knn_raw", "linear_trained", "linear_random"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert 0.0 <= summary["linear_raw"] <= 1.0
    assert summary["readout"] == "avg" and set(summary["readouts"]) == {"avg", "grid"}
    for res in summary["readouts"].values():
        assert 0.0 <= res["trained"]["knn"] <= 1.0 and 0.0 <= res["random"]["linear"] <= 1.0
    # the run's collapse verdict is said in one line, in the table and the JSON
    assert summary["collapse"] in table
    assert summary["collapse"].startswith(("no collapse", "COLLAPSED"))
    assert summary["steps"] == 4 and summary["train_images"] == summary["test_images"] == 256
    assert summary["minutes"] > 0
    saved = json.loads((out / "demo_results.json").read_text())
    assert saved["knn_trained"] == summary["knn_trained"]
    assert (out / "jepa-latest.pth.tar").is_file()
    # what ran is the demo preset with the command's overrides, whatever the preset holds
    ran = load_config(out / "config.yaml")
    expected = apply_overrides(preset("demo"), TINY_DEMO)
    expected.logging.folder = str(out)
    expected.optimization.epochs = 1  # --epochs
    expected.optimization.time_limit_min = DEMO_MAX_MINUTES  # the --epochs hard stop
    assert ran.to_dict() == expected.to_dict()


def test_demo_plans_its_schedule_for_the_budget(tmp_path, capsys):
    """Without --epochs the demo times a step here and plans a complete schedule that fits."""
    out = tmp_path / "planned"
    code = cli_main(["demo", "--out", str(out), "--no-report", "--procs", "1", "--minutes",
                     "0.4", "data.dataset=embedded:256", "logging.progress=false"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step_s"] > 0
    assert 1 <= summary["planned_steps"] <= DEMO_MAX_EPOCHS * 4  # the preset's epochs of 4 steps
    assert summary["steps"] == summary["planned_steps"]  # the schedule ran to its end
    saved = (out / "config.yaml").read_text()
    assert "ipe_scale" in saved and "time_limit_min: 0.44" in saved  # 1.1 x --minutes


def test_small_cpu_preset_trains_with_its_regulariser_and_multi_block_targets(tmp_path):
    """The small-image recipe's parts take effect in a run: SIGReg on the context tokens (its
    value is logged) and targets from several blocks (a different loss than from one)."""
    from ijepa.config import apply_overrides
    from ijepa.recipes import TINY_OVERRIDES
    from ijepa.train.loop import train

    losses = {}
    for layers in (1, 2):
        cfg = apply_overrides(
            preset("small-cpu"),
            [*TINY_OVERRIDES, "data.batch_size=16", "optimization.max_steps=2",
             "logging.log_every=1", f"meta.target_layers={layers}",
             f"logging.folder={tmp_path / str(layers)}"],
        )  # fmt: skip
        history = train(cfg).history
        assert all(rec["reg"] > 0 for rec in history)
        losses[layers] = history[0]["loss"]
    assert losses[1] != losses[2]


@pytest.mark.distributed
def test_demo_in_two_processes(tmp_path, capsys):
    """``--procs 2``: two 1-thread ranks share the global batch; the parent evaluates."""
    out = tmp_path / "demo2"
    code = _tiny_demo(out, procs=2)
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 256 images / global batch 64 = 4 steps, as in one process
    assert summary["steps"] == 4 and summary["train_processes"] == 2
    assert 0.0 <= summary["knn_trained"] <= 1.0 and 0.0 <= summary["linear_trained"] <= 1.0
    assert (out / "jepa-latest.pth.tar").is_file()
    assert "batch_size: 32" in (out / "launch_config.yaml").read_text()


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_demo_rejects_bad_procs(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as err:
        cli_main(["demo", "--out", str(tmp_path / "x"), "--procs", value])
    assert "--procs must be a positive integer or auto" in str(err.value)


def test_demo_rejects_negative_max_minutes(tmp_path):
    with pytest.raises(SystemExit) as err:
        cli_main(["demo", "--out", str(tmp_path / "x"), "--max-minutes", "-1"])
    assert "--max-minutes must be >= 0" in str(err.value)


@pytest.mark.distributed
def test_ranks_step_s_times_the_launched_ranks_own_steps(tmp_path, monkeypatch):
    """A multi-process demo's plan takes its step time from the ranks' own records (one per
    step), the warm-up steps left out; a launch that times too few steps is a BudgetError."""
    from ijepa import demo
    from ijepa.recipes import TINY_OVERRIDES
    from ijepa.train.budget import WARMUP_STEPS, BudgetError

    seen: list[int] = []
    real = demo.launch_local

    def spy(cfg, procs, **kw):  # type: ignore[no-untyped-def]
        seen.append(procs)
        return real(cfg, procs, **kw)

    monkeypatch.setattr(demo, "launch_local", spy)
    cfg = apply_overrides(preset("demo"), [*TINY_OVERRIDES, "data.batch_size=8"])
    step_s = demo.ranks_step_s(cfg, 6, procs=2, threads=1, limit_min=5.0)
    assert seen == [2]
    assert 0.0 < step_s < 5.0
    with pytest.raises(BudgetError, match="ran only"):
        demo.ranks_step_s(cfg, WARMUP_STEPS + 1, procs=2, threads=1, limit_min=5.0)
