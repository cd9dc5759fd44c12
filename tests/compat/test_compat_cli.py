"""``ijepa convert`` round trips through the command line entry point."""

from __future__ import annotations

import os

import pytest
import torch

from ijepa.checkpoint import load_checkpoint, save_checkpoint
from ijepa.cli import main
from ijepa.compat import load_encoder


def _equal_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_round_trip_through_official(tmp_path, tiny_state):
    ours = tmp_path / "ours.pth.tar"
    save_checkpoint(tiny_state, ours)
    official, back = tmp_path / "official.pth.tar", tmp_path / "back.pth.tar"
    assert main(["convert", "--from", "ours", "--to", "official", str(ours), str(official)]) == 0
    assert next(iter(load_checkpoint(official)["encoder"])).startswith("module.")
    assert main(["convert", "--to", "ours", str(official), str(back)]) == 0  # --from detected
    restored = load_checkpoint(back)
    for net in ("encoder", "predictor", "target_encoder"):
        _equal_state(tiny_state[net], restored[net])
    assert restored["model_args"] == tiny_state["model_args"]


@pytest.mark.parametrize("via", ["hf", "timm"])
@pytest.mark.parametrize("which", ["target", "context"])
def test_encoder_round_trip(tmp_path, tiny_state, via, which):
    ours = tmp_path / "ours.pth.tar"
    save_checkpoint(tiny_state, ours)
    mid = tmp_path / ("hf_dir" if via == "hf" else "enc.safetensors")
    back = tmp_path / "back.safetensors"
    assert main(["convert", "--to", via, "--encoder", which, str(ours), str(mid)]) == 0
    assert main(["convert", "--from", via, "--to", "ours", str(mid), str(back)]) == 0
    encoder, _ = load_encoder(back)
    expected = tiny_state["target_encoder" if which == "target" else "encoder"]
    _equal_state(expected, encoder.state_dict())


def test_user_errors_exit_2(tmp_path, tiny_state, capsys):
    ours = tmp_path / "ours.pth.tar"
    save_checkpoint(tiny_state, ours)
    enc = tmp_path / "enc.safetensors"
    assert main(["convert", "--to", "timm", str(ours), str(enc)]) == 0
    capsys.readouterr()
    # an encoder-only file cannot become a training checkpoint
    assert main(["convert", "--to", "official", str(enc), str(tmp_path / "x.pth.tar")]) == 2
    assert "holds a single encoder" in capsys.readouterr().err

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    evil = tmp_path / "evil.pth.tar"
    torch.save({"encoder": {}, "payload": Evil()}, evil)
    assert main(["convert", "--to", "hf", str(evil), str(tmp_path / "out")]) == 2
    assert "arbitrary unpickling" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
