"""Fixtures of the picture tests: a tiny ViT run folder, synthetic images, an image folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from viz_helpers import XSS_LABEL, make_run, synthetic_images

from ijepa.viz.runs import SampleImages


@pytest.fixture(scope="session")
def samples() -> SampleImages:
    """40 normalised synthetic images in 4 classes, one class name needing HTML escaping."""
    x = synthetic_images(40)
    return SampleImages(
        images=(x - 0.5) / 0.25,
        labels=torch.arange(40) % 4,
        classes=["red", XSS_LABEL, "c&d", "plain"],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        name="synthetic",
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a tiny 2-block ViT (32 px, patch 4)."""
    return make_run(tmp_path_factory.mktemp("run") / "tiny-run")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``imagefolder:`` data set: train/ and val/ with two classes of 32 px PNGs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    x = (synthetic_images(24, seed=3) * 255).round().to(torch.uint8)
    for i in range(24):
        split = "train" if i < 16 else "val"
        cls = "blue" if i % 2 else "red"
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root
