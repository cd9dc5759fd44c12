"""`ijepa demo` end to end on a tiny slice of the embedded set: table, JSON line, results file."""

from __future__ import annotations

import json

from ijepa.cli import main as cli_main
from ijepa.recipes import preset


def test_demo_prints_the_comparison_and_saves_it(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli_main(
        [
            "demo",
            "--out",
            str(out),
            "--no-report",
            "data.dataset=embedded:256",
            "optimization.epochs=1",
            "logging.progress=false",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "random init" in "\n".join(lines)
    summary = json.loads(lines[-1])
    for key in ("knn_trained", "knn_random", "linear_trained", "linear_random"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["steps"] == 4 and summary["train_images"] == summary["test_images"] == 256
    assert summary["minutes"] > 0
    saved = json.loads((out / "demo_results.json").read_text())
    assert saved["knn_trained"] == summary["knn_trained"]
    assert (out / "jepa-latest.pth.tar").is_file()


def test_demo_preset_is_the_measured_recipe():
    cfg = preset("demo")
    assert cfg.data.dataset == "embedded" and cfg.meta.patch_init_std == 0.08
    assert cfg.optimization.ema[0] == 0.99 and cfg.mask.patch_size == 4
