"""Mask pictures: patch-usage frequencies and the mask figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from viz_helpers import PATCH, synthetic_images

from ijepa.masks import MultiBlockMaskGenerator
from ijepa.viz.masks import mask_frequency, save_mask_figure


def _gen(mode: str, grid: int = 8) -> MultiBlockMaskGenerator:
    return MultiBlockMaskGenerator((grid, grid), min_keep=4, mode=mode)


def test_frequency_matches_the_sampled_masks() -> None:
    gen = _gen("default")
    freq = mask_frequency(gen, num_batches=1, batch_size=3, seed=5)
    from ijepa.masks import make_generator

    enc, pred = gen(3, make_generator(5, 0))
    ctx = torch.zeros(64)
    tgt = torch.zeros(64)
    for b in range(3):
        ctx[enc[0, b]] += 1
        tgt[pred[:, b].flatten().unique()] += 1
    assert torch.allclose(freq.context.flatten(), ctx / 3)
    assert torch.allclose(freq.target.flatten(), tgt / 3)
    # context and targets never overlap in default mode, so per image the two are disjoint
    assert float((freq.context + freq.target).max()) <= 1.0 + 1e-6


def test_viz_draws_the_masks_training_used_at_each_step(tmp_path, monkeypatch) -> None:
    """The one seeding rule: viz.runs.training_masks(cfg, step) == what training's step drew."""
    from ijepa.config import Config, apply_overrides
    from ijepa.recipes import TINY_OVERRIDES
    from ijepa.train import setup
    from ijepa.train.build import build_mask_generator
    from ijepa.train.loop import train
    from ijepa.viz.runs import read_run_config, training_masks

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_step = setup.train_step

    def spy(models, optimizer, images, masks_enc, masks_pred, **kw):
        seen.append((masks_enc.clone(), masks_pred.clone()))
        return real_step(models, optimizer, images, masks_enc, masks_pred, **kw)

    monkeypatch.setattr(setup, "train_step", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path / "run"
    overrides = [*TINY_OVERRIDES, "data.batch_size=8", "meta.seed=7", "optimization.max_steps=5"]
    try:
        train(apply_overrides(Config(), [*overrides, f"logging.folder={run}"]))
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == 5
    cfg = read_run_config(run)  # what a viz command reads back from the run folder
    assert cfg is not None
    for step, (enc, pred) in enumerate(seen):
        v_enc, v_pred = training_masks(cfg, step)
        assert torch.equal(v_enc, enc) and torch.equal(v_pred, pred), step
    # and the frequency map of a batch as large as the run's batch counts exactly those masks
    freq = mask_frequency(build_mask_generator(cfg), num_batches=5, batch_size=8, seed=7)
    ctx = torch.zeros(freq.context.numel())
    for enc, _ in seen:
        for b in range(8):
            ctx[enc[0, b]] += 1
    assert torch.allclose(freq.context.flatten(), ctx / 40)


def test_official_sampler_never_uses_last_row_and_column_default_does() -> None:
    # the spec's flaw 3/6: the exclusive corner bound leaves the last row and column unused
    official = mask_frequency(_gen("official"), num_batches=30, batch_size=8)
    default = mask_frequency(_gen("default"), num_batches=30, batch_size=8)
    for f in (official.context, official.target):
        assert float(f[-1, :].max()) == 0.0 and float(f[:, -1].max()) == 0.0
    assert official.unused == 15
    assert default.unused == 0
    assert float(default.context[-1, :].min()) > 0.0
    assert float(default.target[-1, -1]) > 0.0


def test_mask_figure_is_written(tmp_path: Path) -> None:
    images = synthetic_images(4)
    gens = {"default": _gen("default"), "official": _gen("official")}
    out = tmp_path / "sub" / "masks.png"
    freqs = save_mask_figure(images, gens, out, patch_size=PATCH, num_batches=5, batch_size=4)
    assert set(freqs) == {"default", "official"}
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 300


def test_mask_figure_rejects_a_grid_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grid"):
        save_mask_figure(
            synthetic_images(2),
            {"d": _gen("default", grid=6)},
            tmp_path / "m.png",
            patch_size=PATCH,
        )
