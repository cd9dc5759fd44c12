"""Hostile checkpoints: refused with a clear message, and nothing in them is ever executed.

Each bad file goes through the three ways a checkpoint is read: ``load_checkpoint``,
``ijepa.load_encoder`` (and ``ijepa convert``), and a training that resumes from its run folder.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_support import TINY, one_thread_fixture, tiny_checkpoint_fixture  # noqa: F401

import ijepa
from ijepa import checkpoint as ckpt
from ijepa.cli import main as cli_main


class _Payload:
    """Unpickling this calls ``Path.write_text(target, "executed")``: proof of execution."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "executed"))


def _corrupt(kind: str, good: bytes) -> bytes:
    rng = np.random.default_rng(0)
    return {
        "empty": b"",
        "truncated to half": good[: len(good) // 2],
        "last 100 bytes cut": good[:-100],
        "random bytes": rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes(),
        "text file": b"not a checkpoint\n" * 10,
    }[kind]


CORRUPT = ["empty", "truncated to half", "last 100 bytes cut", "random bytes", "text file"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_file_refused_by_every_reader(kind, tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(_corrupt(kind, tiny_checkpoint.read_bytes()))
    with pytest.raises(ckpt.CheckpointError, match=r"bad\.pth\.tar") as info:
        ckpt.load_checkpoint(bad)
    assert any(w in str(info.value) for w in ("empty", "truncated or corrupt", "refusing"))
    with pytest.raises(ckpt.CheckpointError, match=r"bad\.pth\.tar"):
        ijepa.load_encoder(bad)
    assert cli_main(["convert", "--to", "timm", str(bad), str(tmp_path / "out")]) == 2
    assert "bad.pth.tar" in _one_line_error(capsys)


@pytest.mark.parametrize("kind", CORRUPT)
def test_resume_from_corrupt_latest_stops_and_keeps_the_file(
    kind, tiny_checkpoint, tmp_path, capsys
):
    """The official code restarted from epoch 0 here; we stop, name the file and leave it be."""
    folder = tmp_path / "run"
    folder.mkdir()
    latest = ckpt.latest_path(folder)
    latest.write_bytes(_corrupt(kind, tiny_checkpoint.read_bytes()))
    before = latest.read_bytes()
    assert cli_main(["train", *TINY, f"logging.folder={folder}"]) == 2
    line = _one_line_error(capsys)
    assert str(latest) in line
    assert latest.read_bytes() == before
    assert not (folder / "metrics.jsonl").exists() or not (folder / "metrics.jsonl").read_text()


@pytest.fixture
def payload_files(tmp_path):
    """A zip checkpoint and a plain pickle, each carrying a callable that writes ``sentinel``."""
    sentinel = tmp_path / "sentinel-executed"
    zipped = tmp_path / "evil.pth.tar"
    torch.save({"format_version": 1, "encoder": {}, "evil": _Payload(sentinel)}, zipped)
    plain = tmp_path / "evil-plain.pth"
    plain.write_bytes(pickle.dumps({"encoder": {}, "evil": _Payload(sentinel)}))
    # the payloads are live: ordinary unpickling runs them
    torch.load(zipped, weights_only=False)
    assert sentinel.read_text() == "executed"
    sentinel.unlink()
    pickle.loads(plain.read_bytes())
    assert sentinel.exists()
    sentinel.unlink()
    return sentinel, [zipped, plain]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_callable_is_never_executed(payload_files, tmp_path, capsys):
    sentinel, files = payload_files
    for bad in files:
        with pytest.raises(ckpt.CheckpointError, match="never executed"):
            ckpt.load_checkpoint(bad)
        with pytest.raises(ckpt.CheckpointError, match=bad.name):
            ijepa.load_encoder(bad)
        assert cli_main(["convert", "--to", "timm", str(bad), str(tmp_path / "out")]) == 2
        assert bad.name in _one_line_error(capsys)
        folder = tmp_path / f"run-{bad.name}"
        folder.mkdir()
        shutil.copy(bad, ckpt.latest_path(folder))
        assert cli_main(["train", *TINY, f"logging.folder={folder}"]) == 2
        assert "never executed" in _one_line_error(capsys)
        assert not sentinel.exists(), f"{bad.name}: the pickled callable ran"


def test_resume_into_another_architecture_is_refused(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(tiny_checkpoint, ckpt.latest_path(folder))
    assert cli_main(["train", *TINY, f"logging.folder={folder}", "meta.enc_depth=3"]) == 2
    line = _one_line_error(capsys)
    assert "different architecture" in line
    assert "'enc_depth': 2" in line and "'enc_depth': 3" in line


def test_weights_of_another_architecture_are_refused(tiny_checkpoint, tmp_path, capsys):
    """A file whose recorded architecture was edited to fit: the strict load names the keys."""
    state = ckpt.load_checkpoint(tiny_checkpoint)
    assert state["model_args"]["enc_depth"] == 2
    state["model_args"] = {**state["model_args"], "enc_depth": 3}
    folder = tmp_path / "run"
    folder.mkdir()
    forged = ckpt.latest_path(folder)
    ckpt.save_checkpoint(state, forged)
    with pytest.raises(ckpt.CheckpointError, match=r"missing keys.*blocks\.2\."):
        ijepa.load_encoder(forged)
    assert cli_main(["train", *TINY, f"logging.folder={folder}", "meta.enc_depth=3"]) == 2
    line = _one_line_error(capsys)
    assert "does not match the model architecture" in line and "blocks.2." in line


def test_random_safetensors_refused(tmp_path):
    bad = tmp_path / "enc.safetensors"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(ckpt.CheckpointError, match=r"enc\.safetensors"):
        ijepa.load_encoder(bad)
