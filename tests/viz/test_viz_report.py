"""`ijepa report`: a self-contained, escaped HTML page with all sections."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from viz_helpers import XSS_LABEL

from ijepa.cli import main
from ijepa.viz.report import build_report
from ijepa.viz.report_page import EXPLORER_JS, esc, script_json
from ijepa.viz.runs import SampleImages


@pytest.fixture(scope="module")
def report(tiny_run: Path, samples: SampleImages, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    build_report(
        tiny_run, out, samples=samples, embedding_method="pca", predictor_steps=20, mask_batches=10
    )
    return out.read_text()


def test_report_has_every_section(report: str) -> None:
    for title in (
        "Training curves",
        "Collapse monitors",
        "Evaluation results",
        "Masks",
        "Embeddings",
        "Patch features (PCA as RGB)",
        "What the predictor predicts",
        "Attention explorer",
        "Config",
    ):
        assert f"<h2>{title}</h2>" in report, title
    assert report.count('src="data:image/png;base64,') == 5  # curves, masks, emb., features, pred.
    assert "demo_results.json" in report and "0.61" in report
    assert "no collapse alarm" in report


def test_report_is_self_contained(report: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", report)
    assert "http://" not in report and "https://" not in report
    # the only script that runs is ours, allowed by its hash in the CSP
    digest = base64.b64encode(hashlib.sha256(EXPLORER_JS.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in report
    assert report.count("<script>") == 1


def test_labels_and_results_are_escaped(report: str) -> None:
    assert XSS_LABEL not in report.replace(f"<script>{EXPLORER_JS}", "")
    assert esc(XSS_LABEL) in report  # the result value, shown as text
    payload = report.split('<script type="application/json" id="attn-data">', 1)[1]
    payload = payload.split("</script>", 1)[0]
    assert "<" not in payload and ">" not in payload
    data = json.loads(payload)
    assert data["grid"] == [8, 8] and data["heads"] == 3 and len(data["layers"]) == 2
    assert {img["label"] for img in data["images"]} <= {"red", XSS_LABEL, "c&d", "plain"}
    raw = base64.b64decode(data["images"][0]["attn"])
    assert len(raw) == 2 * 3 * 64 * 64


def test_script_json_escapes_html_and_line_separators() -> None:
    text = script_json({"a": "</script><b>&\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><b>&\u2028"}


def test_report_without_checkpoint_or_metrics(tmp_path: Path) -> None:
    (tmp_path / "eval_results.json").write_text(json.dumps({"top1": [0.5, 0.6]}))
    out = build_report(tmp_path)
    html = out.read_text()
    assert out == tmp_path / "report.html"
    assert "no checkpoint in the run folder" in html and "no metrics.jsonl" in html
    assert "eval_results.json" in html and "<script>" not in html


def test_report_cli_errors_on_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err
