"""``ijepa report RUN_DIR``: one self-contained HTML page about a run.

The page holds the training curves, the collapse monitors (from the log and measured on sample
images, with the correlation dimension of the embeddings), the evaluation results found in the
folder (``demo_results.json`` and any ``*results*.json``), the masks, the embeddings, the PCA of
patch features, what the predictor predicts, and an attention explorer. Every picture is an
inlined PNG; nothing is loaded from outside (see :mod:`ijepa.viz.report_page` for the escaping
rules).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ijepa.checkpoint import CheckpointNotFoundError
from ijepa.diagnostics import CollapseMonitor, correlation_dimension, effective_rank, feature_std
from ijepa.errors import UsageError
from ijepa.masks import step_masks
from ijepa.viz.attention import attention_maps
from ijepa.viz.common import to_display
from ijepa.viz.curves import read_metrics, save_curves_figure
from ijepa.viz.embeddings import embed_2d, save_embedding_figure
from ijepa.viz.features import pca_rgb, save_feature_figure
from ijepa.viz.masks import save_mask_figure
from ijepa.viz.predictor_decoder import decode_predictions, save_predictor_figure, train_decoder
from ijepa.viz.report_page import esc, explorer_payload, page, png_data_uri
from ijepa.viz.runs import (
    LoadedRun,
    SampleImages,
    load_run,
    mask_generators,
    read_run_config,
    run_dataset_spec,
    sample_images,
)

__all__ = ["build_report", "find_results", "flatten_results"]

logger = logging.getLogger(__name__)


def find_results(run_dir: Path) -> list[Path]:
    """``demo_results.json`` and every ``*results*.json`` in the run folder, sorted by name."""
    return sorted(p for p in run_dir.glob("*results*.json") if p.is_file())


def flatten_results(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, leaf value)`` pairs of a nested JSON value (lists of scalars stay whole)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from flatten_results(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
        for i, inner in enumerate(value):
            yield from flatten_results(inner, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _table(rows: list[tuple[Any, Any]], header: tuple[str, str] = ("key", "value")) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{esc(header[0])}</th><th>{esc(header[1])}</th></tr>{body}</table>"


def _figure(png_path: Path, alt: str) -> str:
    uri = png_data_uri(png_path.read_bytes())
    return f'<img class="figure" alt="{esc(alt)}" src="{uri}">'


def _section(title: str, content: str) -> str:
    return f"<section><h2>{esc(title)}</h2>\n{content}\n</section>"


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _results_section(run_dir: Path) -> str:
    files = find_results(run_dir)
    if not files:
        return _note("no *results*.json file in the run folder")
    parts = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err.msg} (line {err.lineno})") from err
        parts.append(f"<h3>{esc(path.name)}</h3>" + _table(list(flatten_results(data))))
    return "\n".join(parts)


def _monitor_rows(records: list[dict[str, Any]], pooled: torch.Tensor | None) -> str:
    monitor = CollapseMonitor(log=False)
    rows = []
    last = records[-1] if records else {}
    measured: dict[str, Any] = {"step": last.get("step", "?")}
    for key in ("target_std", "probe_rank"):
        if key in last:
            measured[key] = last[key]
            rows.append((f"{key} (last logged)", last[key]))
    if pooled is not None and pooled.shape[0] >= 10:
        rank = effective_rank(pooled)
        measured.setdefault("probe_rank", rank)
        rows.append(("effective rank of sample embeddings", rank))
        rows.append(("feature std of sample embeddings", feature_std(pooled)))
        rows.append(("correlation dimension of sample embeddings", correlation_dimension(pooled)))
    if not rows:
        return _note("no collapse measures available")
    warnings = monitor.update(measured)
    status = (
        "".join(f'<p class="alarm">{esc(w)}</p>' for w in warnings)
        if warnings
        else '<p class="ok">no collapse alarm</p>'
    )
    return _table(rows, ("measure", "value")) + status


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    data_spec: str | None = None,
    samples: SampleImages | None = None,
    explorer_images: int = 3,
    embedding_images: int = 500,
    embedding_method: str = "auto",
    predictor_steps: int = 200,
    mask_batches: int = 200,
    seed: int = 0,
) -> Path:
    """Write the HTML report of a run.

    Args:
        run_dir: the run folder (``config.yaml``, ``metrics.jsonl``, checkpoints, results).
        out: output file (default ``RUN_DIR/report.html``).
        data_spec: data set to draw sample images from (default: the run's).
        samples: sample images to use instead of loading ``data_spec`` (test split).
        explorer_images: images in the attention explorer.
        embedding_images: images in the embedding map and collapse measures.
        embedding_method: ``auto``, ``umap`` or ``pca``.
        predictor_steps: decoder training steps for the predictor section (0 skips it).
        mask_batches: sampled batches (of 16 images) per mask-usage heatmap.
        seed: seed of the sample subset and masks.

    Returns:
        The path of the written page.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder not found: {run_dir}")
    out = Path(out) if out is not None else run_dir / "report.html"
    with tempfile.TemporaryDirectory(prefix="ijepa-report-") as tmp:
        html_text = _render(
            run_dir,
            Path(tmp),
            data_spec=data_spec,
            samples=samples,
            explorer_images=explorer_images,
            embedding_images=embedding_images,
            embedding_method=embedding_method,
            predictor_steps=predictor_steps,
            mask_batches=mask_batches,
            seed=seed,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_text, encoding="utf-8")
    logger.info("wrote report %s (%.1f s)", out, time.perf_counter() - t0)
    return out


def _render(
    run_dir: Path,
    figs: Path,
    *,
    data_spec: str | None,
    samples: SampleImages | None,
    explorer_images: int,
    embedding_images: int,
    embedding_method: str,
    predictor_steps: int,
    mask_batches: int,
    seed: int,
) -> str:
    """The report's HTML; figures are written to ``figs`` and inlined."""
    sections: list[str] = []
    cfg = read_run_config(run_dir)

    records: list[dict[str, Any]] = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        records = read_metrics(metrics)
    if records:
        save_curves_figure(records, figs / "curves.png", title=f"training curves: {run_dir.name}")
        curves = _figure(figs / "curves.png", "training curves")
    else:
        curves = _note("no metrics.jsonl records in the run folder")

    run: LoadedRun | None = None
    try:
        run = load_run(run_dir)
        cfg = run.config or cfg
    except CheckpointNotFoundError as err:
        logger.warning("report without model sections: %s", err)
    header = f"<h1>I-JEPA run report: {esc(run_dir.name)}</h1>"
    facts: list[tuple[str, Any]] = [("run folder", str(run_dir.resolve()))]
    if run is not None:
        facts += [("checkpoint", run.checkpoint.name), ("step", run.step)]
        facts += [(f"model.{k}", v) for k, v in run.model_args.items()]
    header += _table(facts)
    sections.append(header)

    pooled: torch.Tensor | None = None
    model_sections: list[str] = []
    explorer: dict[str, Any] | None = None
    if run is not None:
        size = int(run.model_args["img_size"])
        p = int(run.model_args["patch_size"])
        grid = (size // p, size // p)
        if samples is None:
            spec = run_dataset_spec(cfg, data_spec)
            samples = sample_images(
                spec, "test", size, max(embedding_images, explorer_images, 6), seed=seed
            )
        enc = run.models.target_encoder
        imgs, mean, std = samples.images, samples.mean, samples.std
        gens = mask_generators(cfg, grid)
        save_mask_figure(
            imgs[:6],
            gens,
            figs / "masks.png",
            patch_size=p,
            mean=mean,
            std=std,
            seed=seed,
            num_batches=mask_batches,
        )
        model_sections.append(_section("Masks", _figure(figs / "masks.png", "masks")))

        with torch.no_grad():
            tokens = torch.cat([enc(c).float() for c in imgs[:embedding_images].split(256)])
        pooled = tokens.mean(dim=1)
        coords, method = embed_2d(pooled, embedding_method, seed=seed)
        save_embedding_figure(
            coords,
            samples.labels[: pooled.shape[0]],
            samples.classes,
            figs / "embeddings.png",
            title=f"{method.upper()} of pooled target-encoder features ({samples.name})",
        )
        model_sections.append(
            _section("Embeddings", _figure(figs / "embeddings.png", "embeddings"))
        )

        rgb = pca_rgb(tokens[:6], grid)
        save_feature_figure(imgs[:6], rgb, figs / "features.png", mean=mean, std=std)
        model_sections.append(
            _section("Patch features (PCA as RGB)", _figure(figs / "features.png", "features"))
        )

        if predictor_steps > 0:
            fit = train_decoder(enc, imgs, steps=predictor_steps, seed=seed)
            m_enc, m_pred = step_masks(next(iter(gens.values())), seed, 0, min(6, imgs.shape[0]))
            m = run.models
            pics = decode_predictions(
                m.encoder, m.predictor, enc, fit.decoder, imgs[: m_enc.shape[1]], m_enc, m_pred
            )
            save_predictor_figure(pics, figs / "predictor.png", patch_size=p, mean=mean, std=std)
            model_sections.append(
                _section(
                    "What the predictor predicts",
                    _note(
                        "a per-patch decoder (trained on target features) decodes the predictor's outputs"
                    )
                    + _figure(figs / "predictor.png", "predictor"),
                )
            )

        k = min(explorer_images, imgs.shape[0])
        maps = attention_maps(enc, imgs[:k])
        labels = [
            samples.classes[int(y)] if int(y) < len(samples.classes) else str(int(y))
            for y in samples.labels[:k]
        ]
        explorer = explorer_payload(
            to_display(imgs[:k], mean, std),
            maps,
            labels,
            p,
            [f"layer {i}" for i in range(maps.shape[1])],
        )
        controls = (
            '<div class="controls"><label>layer <select id="layer-select"></select></label>'
            '<label>head <select id="head-select"></select></label></div>'
            + _note(
                "click a patch of an image: the right panel shows where it attends "
                "(target encoder; each map stretched from its minimum to its maximum)"
            )
            + '<div id="explorer"></div>'
        )
        model_sections.append(_section("Attention explorer", controls))
    else:
        model_sections.append(_note("no checkpoint in the run folder: no model sections"))

    sections.append(_section("Training curves", curves))
    sections.append(_section("Collapse monitors", _monitor_rows(records, pooled)))
    sections.append(_section("Evaluation results", _results_section(run_dir)))
    sections.extend(model_sections)
    if cfg is not None:
        import yaml

        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        sections.append(
            _section(
                "Config", f"<details><summary>config</summary><pre>{esc(text)}</pre></details>"
            )
        )
    return page(f"I-JEPA report: {run_dir.name}", "\n".join(sections), explorer_data=explorer)
