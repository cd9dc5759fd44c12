"""transformers IJepaModel folders: export checked against transformers' own model, and import."""

from __future__ import annotations

import json

import pytest
import torch

from ijepa.compat import ConversionError, EncoderMeta, load_hf, save_hf
from ijepa.compat.arch import encoder_model_args
from ijepa.compat.safetensors_io import load_tensors, save_tensors
from ijepa.compat.transformers import encoder_to_hf_state, hf_state_to_encoder

transformers = pytest.importorskip("transformers")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_export_matches_transformers_features(tmp_path, tiny_models, images):
    encoder = tiny_models.target_encoder.eval()
    folder = save_hf(encoder, tmp_path / "hf", EncoderMeta(encoder_model_args(encoder), "target"))
    model = transformers.IJepaModel.from_pretrained(folder).eval()
    assert model.config.hidden_size == 64 and model.config.num_attention_heads == 4
    with torch.no_grad():
        ours = encoder(images)
        theirs = model(pixel_values=images).last_hidden_state
    assert theirs.shape == ours.shape == (2, 16, 64)
    assert _max_diff(ours, theirs) <= 1e-5
    # eager attention too (the default is SDPA)
    eager = transformers.IJepaModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        assert _max_diff(ours, eager(pixel_values=images).last_hidden_state) <= 1e-5
    assert model.config.ijepa["encoder"] == "target"
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32}
    assert processor["image_mean"] == [0.485, 0.456, 0.406]


def test_hf_round_trip_is_exact(tmp_path, tiny_models):
    encoder = tiny_models.encoder
    save_hf(encoder, tmp_path / "hf")
    back, meta = load_hf(tmp_path / "hf")
    _same_tensors(encoder, back)
    assert meta.model_args == encoder_model_args(encoder)


def test_reads_hub_layout_written_by_transformers(tmp_path, images):
    """A folder saved by transformers itself (the hub layout) loads and gives its features."""
    config = transformers.IJepaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        image_size=32,
        patch_size=8,
        layer_norm_eps=1e-6,
    )
    torch.manual_seed(3)
    model = transformers.IJepaModel(config).eval()
    model.save_pretrained(tmp_path / "hub")
    keys = set(load_tensors(tmp_path / "hub" / "model.safetensors"))
    assert "encoder.layer.0.attention.attention.query.weight" in keys  # hub names on disk
    encoder, meta = load_hf(tmp_path / "hub")
    assert meta.which is None  # a hub folder does not say which encoder it holds
    with torch.no_grad():
        expected = model(pixel_values=images).last_hidden_state
        assert _max_diff(encoder.eval()(images), expected) <= 1e-5


def test_reads_internal_names_and_classifier_prefix(tmp_path, tiny_models):
    encoder = tiny_models.encoder
    folder = save_hf(encoder, tmp_path / "hf")
    clf = transformers.IJepaForImageClassification.from_pretrained(folder, num_labels=5)
    internal = clf.state_dict()  # 5.x internal names, an "ijepa." prefix and a classifier head
    assert "ijepa.layers.0.attention.q_proj.weight" in internal and "classifier.weight" in internal
    back = hf_state_to_encoder(internal)
    ref = encoder.state_dict()
    assert set(back) == set(ref)
    assert all(torch.equal(back[k], ref[k]) for k in ref)


def test_rejects_unknown_tensors_and_incomplete_attention(tiny_models):
    hub = encoder_to_hf_state(tiny_models.encoder.state_dict(), 2)
    with pytest.raises(ConversionError, match="unexpected tensors"):
        hf_state_to_encoder({**hub, "embeddings.cls_token": torch.zeros(1, 1, 64)})
    del hub["encoder.layer.1.attention.attention.key.bias"]
    with pytest.raises(ConversionError, match=r"layer 1 lacks attention \['key'\] bias"):
        hf_state_to_encoder(hub)


def test_rejects_other_model_types(tmp_path, tiny_models):
    folder = save_hf(tiny_models.encoder, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "vit"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="model_type is 'vit'"):
        load_hf(folder)


def test_reads_sharded_weights(tmp_path, tiny_models):
    folder = save_hf(tiny_models.encoder, tmp_path / "hf")
    tensors = load_tensors(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    keys = sorted(tensors)
    half = len(keys) // 2
    weight_map = {}
    for shard, part in (("a.safetensors", keys[:half]), ("b.safetensors", keys[half:])):
        save_tensors({k: tensors[k] for k in part}, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    back, _ = load_hf(folder)
    _same_tensors(tiny_models.encoder, back)
