"""load_encoder: every format gives the same encoder; resizing; preprocessing; format detection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_ARGS, make_models, make_state
from PIL import Image

from ijepa.checkpoint import save_checkpoint
from ijepa.compat import (
    ConversionError,
    EncoderMeta,
    build_transform,
    detect_format,
    load_encoder,
    save_encoder,
    save_hf,
    save_timm,
    to_official,
)
from ijepa.compat.arch import encoder_model_args


@pytest.fixture
def all_formats(tmp_path, tiny_models, tiny_state):
    """The target encoder of one checkpoint written in every format."""
    target = tiny_models.target_encoder
    meta = EncoderMeta(encoder_model_args(target), "target")
    paths = {
        "ours": tmp_path / "ours.pth.tar",
        "official": tmp_path / "official.pth.tar",
        "ours-safetensors": save_encoder(target, tmp_path / "enc.safetensors", meta),
        "hf": save_hf(target, tmp_path / "hf", meta),
        "timm": save_timm(target, tmp_path / "timm.safetensors", meta),
        "timm-folder": save_timm(target, tmp_path / "timm_dir", meta),
    }
    save_checkpoint(tiny_state, paths["ours"])
    save_checkpoint(to_official(tiny_state), paths["official"])
    return paths


def test_detect_format(all_formats):
    expected = {
        "ours": "ours",
        "official": "official",
        "ours-safetensors": "ours",
        "hf": "hf",
        "timm": "timm",
        "timm-folder": "timm",
    }
    assert {name: detect_format(path) for name, path in all_formats.items()} == expected


def test_every_format_gives_the_same_features(all_formats, tiny_models, images):
    with torch.no_grad():
        reference = tiny_models.target_encoder.eval()(images)
        for name, path in all_formats.items():
            encoder, transform = load_encoder(path)
            assert not encoder.training, name
            diff = (encoder(images) - reference).abs().max().item()
            assert diff <= 1e-5, f"{name}: max abs diff {diff}"
            assert callable(transform)


def test_which_selects_the_encoder(all_formats, tiny_models, images):
    with torch.no_grad():
        context = tiny_models.encoder.eval()(images)
        target = tiny_models.target_encoder.eval()(images)
        assert (context - target).abs().max() > 1e-3  # the two really differ
        for name in ("ours", "official"):
            encoder, _ = load_encoder(all_formats[name], which="context")
            assert torch.allclose(encoder(images), context, atol=1e-6, rtol=0)


def test_resize_rebuilds_positions(all_formats, tiny_models):
    encoder, transform = load_encoder(all_formats["hf"], img_size=48)
    assert encoder.img_size == (48, 48) and encoder.pos_embed.shape == (1, 36, 64)
    reference = make_models().target_encoder
    reference.resize_pos_embed(48)
    assert torch.equal(encoder.pos_embed, reference.pos_embed)
    out = transform(Image.new("RGB", (80, 60), color=(120, 30, 200)))
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32
    with torch.no_grad():
        assert encoder(out[None]).shape == (1, 36, 64)


def test_transform_normalises_with_imagenet_stats():
    transform = build_transform(32, 3)
    grey = Image.fromarray(np.full((40, 50), 128, dtype=np.uint8), mode="L")  # converted to RGB
    out = transform(grey)
    expected = (torch.tensor(128 / 255) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out[:, 16, 16], expected, atol=1e-5)


def test_single_channel_stats(tmp_path):
    models = make_models(in_chans=1)
    state = make_state(models, {**TINY_ARGS, "in_chans": 1}, step=False)
    path = tmp_path / "gray.pth.tar"
    save_checkpoint(state, path)
    encoder, transform = load_encoder(path)
    img = Image.fromarray(np.full((32, 32), 51, dtype=np.uint8), mode="L")  # 51 / 255 = 0.2
    out = transform(img)
    assert out.shape == (1, 32, 32) and encoder.in_chans == 1
    assert torch.allclose(out, torch.full_like(out, (0.2 - 0.5) / 0.5), atol=1e-5)  # 0.5/0.5
    rgb = transform(Image.fromarray(np.full((32, 32, 3), 51, dtype=np.uint8)))  # -> grayscale
    assert rgb.shape == (1, 32, 32) and torch.allclose(rgb, out, atol=2 / 255 / 0.5)
    state["config"]["data"].update(mean=[0.2], std=[0.1])  # stats recorded by the run
    save_checkpoint(state, path)
    _, transform = load_encoder(path)
    assert torch.allclose(transform(img), torch.zeros(1, 32, 32), atol=1e-5)


def test_unknown_and_mismatched_formats(tmp_path, all_formats):
    junk = tmp_path / "junk.pth"
    torch.save({"weights": torch.zeros(3)}, junk)
    with pytest.raises(ConversionError, match="matches no known format"):
        load_encoder(junk)
    with pytest.raises(ConversionError, match="not found"):
        load_encoder(tmp_path / "missing.pth.tar")
    from ijepa.compat import read_encoder

    with pytest.raises(ConversionError, match="looks like the 'hf' format"):
        read_encoder(all_formats["hf"], fmt="official")
    with pytest.raises(ConversionError, match="'target' or 'context'"):
        load_encoder(all_formats["ours"], which="ema")


def test_input_norm_travels_in_our_format_and_is_refused_elsewhere(tmp_path):
    """An encoder that standardises its input images keeps doing so when saved and loaded as our
    .safetensors; timm, transformers and the official layout have no such step, so exporting it
    there is an error, not a file whose features silently differ."""
    models = make_models(input_norm="image")
    target = models.target_encoder.eval()
    args = encoder_model_args(target)
    assert args["input_norm"] == "image"
    path = save_encoder(target, tmp_path / "enc.safetensors", EncoderMeta(args, "target"))
    loaded, _ = load_encoder(path)
    assert loaded.input_norm == "image"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), target(x))
        torch.testing.assert_close(loaded(3 * x + 1), target(x), atol=1e-2, rtol=1e-2)
    for export, where in ((save_timm, "timm"), (save_hf, "transformers")):
        with pytest.raises(ConversionError, match="per-image input standardisation"):
            export(target, tmp_path / where)
    state = make_state(models, {**TINY_ARGS, "input_norm": "image"})
    with pytest.raises(ConversionError, match="per-image input standardisation"):
        to_official(state)
