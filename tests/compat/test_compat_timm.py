"""timm *_gap ViTs: export checked against timm's own model, and import of timm weights."""

from __future__ import annotations

import pytest
import torch

from ijepa.compat import ConversionError, EncoderMeta, load_timm, save_timm
from ijepa.compat.arch import encoder_model_args
from ijepa.compat.safetensors_io import read_meta, save_tensors
from ijepa.compat.timm import timm_architecture, timm_model_args

timm = pytest.importorskip("timm")


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_file_export_matches_timm_features(tmp_path, tiny_models, images):
    encoder = tiny_models.target_encoder.eval()
    path = save_timm(encoder, tmp_path / "enc.safetensors")
    kwargs = timm_model_args(encoder)
    model = timm.create_model(
        timm_architecture(encoder),
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 0},
        **kwargs,
    ).eval()
    with torch.no_grad():
        ours = encoder(images)
        theirs = model.forward_features(images)
        pooled = model(images)
    assert theirs.shape == ours.shape == (2, 16, 64)
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (ours.mean(dim=1) - pooled).abs().max().item() <= 1e-5  # global average pooling


def test_folder_export_loads_with_local_dir(tmp_path, tiny_models, images):
    encoder = tiny_models.encoder.eval()
    folder = save_timm(encoder, tmp_path / "timm_folder")
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert model.num_classes == 0
    with torch.no_grad():
        assert (encoder(images) - model.forward_features(images)).abs().max().item() <= 1e-5
    cfg = timm.data.resolve_data_config({}, model=model)
    assert tuple(cfg["input_size"]) == (3, 32, 32)
    assert tuple(cfg["mean"]) == (0.485, 0.456, 0.406)


def test_registered_names_for_released_shapes():
    from ijepa.models import vit_encoder

    with torch.device("meta"):
        h14 = vit_encoder("huge", patch_size=14, img_size=224)
        g16 = vit_encoder("giant", patch_size=16, img_size=224)
    assert timm_architecture(h14) == "vit_huge_patch14_gap_224"
    assert timm_architecture(g16) == "vit_giant_patch16_gap_224"
    assert timm_model_args(g16)["mlp_ratio"] * 1408 == pytest.approx(6144)


def test_timm_round_trip_is_exact(tmp_path, tiny_models):
    encoder = tiny_models.target_encoder
    meta = EncoderMeta(encoder_model_args(encoder), "target", (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    for out in (tmp_path / "enc.safetensors", tmp_path / "folder"):
        save_timm(encoder, out, meta)
        back, back_meta = load_timm(out)
        _same_tensors(encoder, back)
        assert back_meta == meta


def test_imports_a_timm_model_state_dict(tmp_path, images):
    torch.manual_seed(4)
    model = timm.create_model(
        "vit_base_patch16_gap_224",
        embed_dim=64,
        depth=2,
        num_heads=4,
        patch_size=8,
        img_size=32,
        num_classes=7,
    ).eval()
    plain = tmp_path / "plain.safetensors"  # a bare timm state dict: no metadata, a head
    save_tensors(model.state_dict(), plain)
    assert read_meta(plain) is None
    # heads cannot be seen in shapes and 64 is no named width: 64-wide heads -> 1 head
    encoder, meta = load_timm(plain)
    assert encoder.num_heads == 1
    folder = tmp_path / "with_config"
    folder.mkdir()
    save_tensors(model.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(
        '{"architecture": "vit_base_patch16_gap_224", "model_args": {"num_heads": 4}}'
    )
    encoder, meta = load_timm(folder)
    assert encoder.num_heads == 4 and meta.which is None
    with torch.no_grad():
        diff = (encoder.eval()(images) - model.forward_features(images)).abs().max().item()
    assert diff <= 1e-5


def test_refuses_class_token_models(tmp_path):
    model = timm.create_model(
        "vit_base_patch16_224", embed_dim=64, depth=1, num_heads=4, patch_size=8, img_size=32
    )
    path = tmp_path / "cls.safetensors"
    save_tensors(model.state_dict(), path)
    with pytest.raises(ConversionError, match="cls_token"):
        load_timm(path)
