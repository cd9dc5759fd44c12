"""Shared pieces of the reliability tests: tiny training settings, one torch thread, a checkpoint.

Not a ``conftest.py``: other test folders import ``conftest`` by name, and two such modules
would shadow each other. Test modules import the fixtures from here explicitly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ijepa.recipes import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]

TINY = [
    *TINY_OVERRIDES,
    "data.batch_size=8",
    "meta.deterministic=true",
    "meta.device=cpu",
    "optimization.epochs=2",
    "optimization.warmup=1",
    "logging.log_every=1",
    "logging.checkpoint_every=4",
]
"""A tiny ViT on 16 px crops of 64 embedded images: 8 steps per epoch, 16 in all."""


@pytest.fixture(autouse=True, name="one_thread")
def one_thread_fixture():
    """One torch thread: several threads on a loaded 2-core machine are ~10x slower here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", name="tiny_checkpoint")
def tiny_checkpoint_fixture(tmp_path_factory) -> Path:
    """The ``latest`` checkpoint of a 4-step tiny training (its run folder holds config.yaml)."""
    from ijepa import checkpoint as ckpt
    from ijepa.config import Config, apply_overrides
    from ijepa.train.loop import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("tiny-run")
        train(
            apply_overrides(
                Config(), [*TINY, f"logging.folder={folder}", "optimization.max_steps=4"]
            )
        )
    finally:
        torch.set_num_threads(before)
    return ckpt.latest_path(folder)
