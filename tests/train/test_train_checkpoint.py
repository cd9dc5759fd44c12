"""Checkpoints: atomic writes, safe loads, strict state-dict loading with clear messages."""

import os
import pickle

import pytest
import torch
from torch import nn

from ijepa import checkpoint as ckpt


def test_atomic_save_and_load(tmp_path):
    path = tmp_path / "jepa-latest.pth.tar"
    ckpt.save_checkpoint({"step": 3, "w": torch.arange(4)}, path)
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["jepa-latest.pth.tar"]  # no temp files left


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "jepa-latest.pth.tar"
    ckpt.save_checkpoint({"step": 1}, path)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(ckpt.CheckpointError, match="No space left on device"):
        ckpt.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["jepa-latest.pth.tar"]


def test_refuses_bad_files(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pth.tar")
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="empty"):
        ckpt.load_checkpoint(empty)
    good = tmp_path / "good.pth.tar"
    ckpt.save_checkpoint({"w": torch.randn(100)}, good)
    trunc = tmp_path / "trunc.pth.tar"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
        ckpt.load_checkpoint(trunc)
    noise = tmp_path / "noise.pth.tar"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(noise)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_refuses_pickled_callable(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"encoder": {}, "payload": _Evil()}, path)
    with pytest.raises(ckpt.CheckpointError, match="arbitrary unpickling"):
        ckpt.load_checkpoint(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(raw)


def test_strict_module_load_reports_keys():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    ckpt.load_module_state(model, sd, "x")  # DDP prefix stripped
    bad = dict(model.state_dict())
    bad.pop("1.bias")
    bad["extra.weight"] = torch.zeros(1)
    bad["0.weight"] = torch.zeros(5, 3)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_module_state(model, bad, "ckpt.pth [encoder]")
    msg = str(info.value)
    assert "1.bias" in msg and "extra.weight" in msg and "0.weight" in msg
    assert "ckpt.pth [encoder]" in msg


def test_rng_round_trip():
    state = ckpt.rng_state()
    a = torch.rand(3)
    ckpt.set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


def test_read_errors_say_what_failed(tmp_path, monkeypatch):
    good = tmp_path / "good.pth.tar"
    ckpt.save_checkpoint({"w": torch.randn(1000)}, good)
    data = good.read_bytes()
    cases = {
        "cut.pth.tar": (data[: len(data) // 2], "without its end record, so it was cut short"),
        "text.pth.tar": (b"hello world\n" * 10, "not a torch zip archive (it starts with b'hell'"),
        "noise.pth.tar": (bytes(range(256)) * 8, "not a torch zip archive"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt") as info:
            ckpt.load_checkpoint(tmp_path / name)
        assert expected in str(info.value), (name, str(info.value))
    with pytest.raises(ckpt.CheckpointNotFoundError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pth.tar")

    # an error of torch.load on an intact file is named as it is, not called corruption
    def refuse(*args, **kwargs):
        raise ValueError("an unsupported map_location")

    monkeypatch.setattr(ckpt.torch, "load", refuse)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(good)
    assert "corrupt" not in str(info.value)
    assert "torch.load raised ValueError: an unsupported map_location" in str(info.value)
