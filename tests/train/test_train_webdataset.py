"""Training from WebDataset shards the test writes: ``data.dataset=webdataset:PATTERN`` streams
them through DataLoader workers, skips a bad sample, and resumes exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa.config import Config, apply_overrides
from ijepa.data import load_imageset
from ijepa.recipes import TINY_OVERRIDES
from ijepa.train.loop import train

wds = pytest.importorskip("webdataset", reason="the webdataset extra is not installed")


def _shards(folder: Path, bad: bool = False) -> str:
    """4 shards of 16 embedded images (``bad``: one undecodable sample in shard 2); the spec."""
    data = load_imageset("embedded:64", "train")
    folder.mkdir()
    for s in range(4):
        with wds.TarWriter(str(folder / f"train-{s:03d}.tar")) as sink:
            for j in range(16):
                i = s * 16 + j
                buf = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(data.images[i].permute(1, 2, 0).numpy())).save(
                    buf, "PNG"
                )
                png = b"not a png" if bad and (s, j) == (2, 5) else buf.getvalue()
                sink.write(
                    {"__key__": f"{i:06d}", "png": png, "cls": str(int(data.labels[i])).encode()}
                )
    return f"webdataset:{folder}/train-{{000..003}}.tar"


def _cfg(spec: str, folder: Path, *extra: str) -> Config:
    overrides = [*TINY_OVERRIDES, f"data.dataset={spec}", "data.batch_size=8", "data.num_workers=2",
                 "data.shuffle_buffer=16", "meta.deterministic=true", "logging.log_every=1",
                 f"logging.folder={folder}", *extra]  # fmt: skip
    return apply_overrides(Config(), overrides)


def _losses(folder: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_train_from_shards_and_resume_exactly(tmp_path) -> None:
    spec = _shards(tmp_path / "shards")
    straight = train(_cfg(spec, tmp_path / "straight", "optimization.max_steps=10"))
    # 64 samples / global batch 8 = 8 steps an epoch; step 10 is in epoch 2
    assert straight.step == 10 and len(_losses(tmp_path / "straight")) == 10
    split = tmp_path / "split"
    train(_cfg(spec, split, "optimization.max_steps=5", "logging.checkpoint_every=5"))
    train(_cfg(spec, split, "optimization.max_steps=10"))  # resumes mid-epoch at step 5
    assert _losses(split) == _losses(tmp_path / "straight")


def test_a_bad_sample_is_skipped_and_logged(tmp_path, caplog) -> None:
    spec = _shards(tmp_path / "shards", bad=True)
    cfg = _cfg(spec, tmp_path / "run", "optimization.max_steps=9", "data.num_workers=0")
    with caplog.at_level("WARNING", logger="ijepa.data.shards"):
        assert train(cfg).step == 9  # past the end of the first epoch
    assert "skipping sample" in caplog.text and "train-002.tar:000037" in caplog.text


def test_bad_settings_are_clear(tmp_path) -> None:
    spec = _shards(tmp_path / "shards")
    with pytest.raises(Exception, match="max_images does not apply"):
        train(_cfg(spec, tmp_path / "a", "data.max_images=10"))
    with pytest.raises(Exception, match=r"shard\(s\) not found"):
        train(_cfg(f"webdataset:{tmp_path}/nothing-{{0..3}}.tar", tmp_path / "b"))
