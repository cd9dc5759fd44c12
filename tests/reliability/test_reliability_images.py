"""Hostile image files in an ImageFolder: each is read or skipped with a warning; no epoch dies.

The corpus is ``tests/faults/hostile_inputs.py``, shared with ``tests/data`` (truncated and zero-byte JPEG/PNG, a PNG named
``.jpg``, CMYK, 16-bit, palette, RGBA, greyscale, a decompression bomb, a non-image file, an
unreadable file, symlink loops, a dangling symlink); the dataset's public API and real tiny
trainings (0 and 2 data-loader workers) go over it.
"""

from __future__ import annotations

import logging

import hostile_inputs
import pytest
import torch
from reliability_support import TINY, one_thread_fixture  # noqa: F401

from ijepa.config import Config, apply_overrides
from ijepa.data import ImageFolderDataset
from ijepa.train.loop import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, hostile_inputs.build_corpus(root)


def test_each_input_is_read_or_skipped_as_expected(corpus):
    root, items = corpus
    got = hostile_inputs.classify(root, items)
    wrong = {
        i.name: got[i.name]
        for i in items
        if not hostile_inputs.outcome_matches(i.expected, got[i.name])
    }
    assert not wrong
    assert "decompression bomb" in got["decompression bomb (40000^2 px header)"]


def test_readable_inputs_decode_to_rgb(corpus):
    root, items = corpus
    ds = ImageFolderDataset(root)
    index = {p: i for i, (p, _) in enumerate(ds.samples)}
    for item in items:
        if item.expected != "read":
            continue
        i = index[str(item.path)]
        assert ds.decode(i) is not None, item.name
        image, label = ds[i]
        assert image.dtype == torch.uint8 and image.shape[0] == 3, item.name
        assert label == ds.class_to_idx["hostile"]
    grey16 = ds[index[str(root / "hostile" / "gray16.png")]][0]
    assert 0 < grey16.float().mean() < 255  # scaled, not clipped to white


@pytest.mark.parametrize("workers", [0, 2])
def test_training_epoch_over_the_corpus_completes(corpus, tmp_path, caplog, workers):
    root, items = corpus
    cfg = apply_overrides(
        Config(),
        [
            *TINY,
            f"data.dataset=imagefolder:{root}",
            "data.batch_size=4",
            f"data.num_workers={workers}",
            "data.pin_mem=false",
            "optimization.epochs=1",
            "optimization.warmup=0",
            f"logging.folder={tmp_path / 'run'}",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="ijepa.data"):
        res = train(cfg)
    assert res.step == 7  # 28 files / batch 4: a whole epoch
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res.history)
    if workers == 0:  # worker processes log in their own process
        logged = "\n".join(r.getMessage() for r in caplog.records)
        for item in items:
            assert (str(item.path) in logged) == (item.expected == "skipped"), item.name
