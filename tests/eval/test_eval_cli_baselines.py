"""``ijepa eval PROTOCOL --baselines raw,random``: the trivial baselines under the same protocol."""

from __future__ import annotations

import json

import pytest

from ijepa.cli import main as cli_main
from ijepa.config import apply_overrides
from ijepa.recipes import TINY_OVERRIDES, preset
from ijepa.train.loop import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    cfg = apply_overrides(
        preset("demo"),
        [
            *TINY_OVERRIDES,
            f"logging.folder={folder}",
            "data.batch_size=16",
            "optimization.epochs=1",
        ],
    )
    train(cfg)
    return folder / "jepa-latest.pth.tar"


@pytest.mark.parametrize("protocol", ["knn", "linear", "attentive"])
def test_baselines_beside_the_encoder(checkpoint, protocol, capsys):
    extra = ["--epochs", "1"] if protocol in ("linear", "attentive") else []
    code = cli_main(
        ["eval", protocol, "--checkpoint", str(checkpoint), "--data", "embedded:64",
         "--no-progress", "--baselines", "raw,random", *extra]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert set(record["baselines"]) == {"raw", "random"}
    for result in (record["results"], *record["baselines"].values()):
        assert 0.0 <= result["top1"] <= 1.0
    # one comparison line per representation on stderr
    assert "random" in captured.err and "raw" in captured.err


def test_random_baseline_is_reproducible(checkpoint, capsys):
    runs = []
    for _ in range(2):
        cli_main(["eval", "knn", "--checkpoint", str(checkpoint), "--data", "embedded:64",
                  "--no-progress", "--baselines", "random"])  # fmt: skip
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["baselines"] == runs[1]["baselines"]


def test_unknown_baseline_is_a_clear_error(checkpoint):
    with pytest.raises(SystemExit, match="unknown --baselines pixels"):
        cli_main(["eval", "knn", "--checkpoint", str(checkpoint), "--data", "embedded:64",
                  "--baselines", "pixels"])  # fmt: skip
