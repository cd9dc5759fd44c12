"""extract_features with a stand-in encoder, and the safetensors feature cache."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import Tensor, nn

from ijepa.eval import (
    FeatureSet,
    StaleFeatureCacheError,
    checkpoint_fingerprint,
    extract_features,
    load_features,
    save_features,
)

DIM, DEPTH, PATCH = 8, 5, 4


class TinyEncoder(nn.Module):
    """Stand-in for the ViT: patchify, residual tanh layers, shared final LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.blocks = nn.ModuleList(nn.Linear(DIM, DIM) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.calls = 0

    def _layers(self, x: Tensor) -> list[Tensor]:
        self.calls += 1
        t = self.patch(x).flatten(2).transpose(1, 2)
        outs = []
        for block in self.blocks:
            t = t + torch.tanh(block(t))
            outs.append(t)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self._layers(x)[-1])

    def get_intermediate_layers(self, x: Tensor, n: int, norm: bool = True) -> list[Tensor]:
        outs = self._layers(x)[-n:]
        return [self.norm(o) if norm else o for o in outs]


class LastLayerOnly(nn.Module):
    """An encoder with no get_intermediate_layers."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyEncoder()

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)


def _batches(n_batches: int = 3, batch: int = 5, size: int = 12) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 4, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def test_shapes_and_poolings_agree() -> None:
    torch.manual_seed(0)
    enc = TinyEncoder()
    batches = _batches()
    feats = extract_features(
        enc, batches, ("avg", "avg4", "tokens"), tokens_dtype=torch.float32, progress=False
    )
    n, tokens = 15, (12 // PATCH) ** 2
    assert feats["avg"].shape == (n, DIM) and feats["avg"].dtype == torch.float32
    assert feats["avg4"].shape == (n, 4 * DIM) and feats["avg4"].dtype == torch.float32
    assert feats["tokens"].shape == (n, tokens, DIM)
    assert feats["labels"].tolist() == torch.cat([y for _, y in batches]).tolist()
    # avg is the mean of the last-layer tokens; avg4 ends with it; tokens equal encoder(x).
    torch.testing.assert_close(feats["avg"], feats["tokens"].mean(dim=1))
    torch.testing.assert_close(feats["avg4"][:, -DIM:], feats["avg"])
    images = torch.cat([x for x, _ in batches])
    with torch.no_grad():
        torch.testing.assert_close(feats["tokens"], enc(images))
        layers = enc.get_intermediate_layers(images, 4)
    torch.testing.assert_close(feats["avg4"], torch.cat([t.mean(1) for t in layers], dim=1))
    # The 4 layers are distinct (not the last one repeated).
    assert not torch.allclose(feats["avg4"][:, :DIM], feats["avg"])


def test_grid_and_flat_readouts() -> None:
    """grid: the 2 x 2 quadrant means (the middle row/column of an odd grid in both halves);
    flat: every token in grid order."""
    torch.manual_seed(0)
    enc = TinyEncoder()
    batches = _batches(size=12)  # a 3 x 3 token grid
    feats = extract_features(
        enc, batches, ("grid", "flat", "tokens"), tokens_dtype=torch.float32, progress=False
    )
    tokens = feats["tokens"]  # (15, 9, DIM)
    torch.testing.assert_close(feats["flat"], tokens.flatten(1))
    grid = tokens.reshape(15, 3, 3, DIM)
    quadrants = [grid[:, r : r + 2, c : c + 2].mean(dim=(1, 2)) for r in (0, 1) for c in (0, 1)]
    torch.testing.assert_close(feats["grid"], torch.cat(quadrants, dim=1))


def test_one_forward_per_batch_and_mode_restored() -> None:
    enc = TinyEncoder()
    enc.train()
    extract_features(enc, _batches(n_batches=4), ("avg", "avg4", "tokens"), progress=False)
    assert enc.calls == 4
    assert enc.training


def test_tokens_half_precision_and_bf16() -> None:
    enc = TinyEncoder()
    feats = extract_features(enc, _batches(), ("avg", "tokens"), progress=False)
    assert feats["tokens"].dtype == torch.float16
    torch.testing.assert_close(feats["avg"], feats["tokens"].float().mean(1), atol=2e-3, rtol=0)
    bf = extract_features(
        enc, _batches(), ("avg", "tokens"), bf16=True, tokens_dtype=torch.bfloat16, progress=False
    )
    assert bf["avg"].dtype == torch.float32 and bf["tokens"].dtype == torch.bfloat16
    torch.testing.assert_close(bf["avg"], feats["avg"], atol=0.05, rtol=0)


def test_avg4_needs_intermediate_layers() -> None:
    enc = LastLayerOnly()
    feats = extract_features(enc, _batches(), ("avg",), progress=False)
    assert feats["avg"].shape == (15, DIM)
    with pytest.raises(ValueError, match="get_intermediate_layers"):
        extract_features(enc, _batches(), ("avg", "avg4"), progress=False)


@pytest.mark.parametrize(
    ("poolings", "match"),
    [(("max",), "unknown pooling"), ((), "empty"), (("avg", "avg"), "duplicates")],
)
def test_bad_poolings(poolings: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        extract_features(TinyEncoder(), _batches(), poolings, progress=False)


def test_bad_batches() -> None:
    enc = TinyEncoder()
    with pytest.raises(ValueError, match="empty dataset"):
        extract_features(enc, [], progress=False)
    with pytest.raises(ValueError, match="labels must be"):
        extract_features(enc, [(torch.randn(2, 3, 8, 8), torch.zeros(3))], progress=False)
    with pytest.raises(ValueError, match="images must be"):
        extract_features(enc, [(torch.randn(3, 8, 8), torch.zeros(3))], progress=False)


def _meta(ckpt: str) -> dict[str, object]:
    return {
        **checkpoint_fingerprint(ckpt),
        "encoder": "target",
        "pooling": ["avg", "avg4"],
        "img": 28,
    }


def test_cache_roundtrip_and_stale(tmp_path: os.PathLike[str]) -> None:
    ckpt = os.path.join(tmp_path, "ckpt.pt")
    with open(ckpt, "wb") as f:
        f.write(b"weights")
    feats = {
        "avg": torch.randn(6, 4),
        "tokens": torch.randn(6, 3, 4).half(),
        "labels": torch.arange(6),
    }
    path = os.path.join(tmp_path, "sub", "feats.safetensors")
    save_features(path, feats, _meta(ckpt))
    loaded = load_features(path, _meta(ckpt))
    assert set(loaded) == set(feats)
    for key, value in feats.items():
        assert loaded[key].dtype == value.dtype
        assert torch.equal(loaded[key], value)
    with pytest.raises(StaleFeatureCacheError, match="encoder"):
        load_features(path, {**_meta(ckpt), "encoder": "context"})
    with open(ckpt, "ab") as f:  # the checkpoint changes: size and mtime differ
        f.write(b" more")
    with pytest.raises(StaleFeatureCacheError, match="checkpoint_size"):
        load_features(path, _meta(ckpt))
    with pytest.raises(FileNotFoundError):
        load_features(os.path.join(tmp_path, "missing.safetensors"))
    with pytest.raises(ValueError, match="JSON"):
        save_features(path, feats, {"bad": object()})


def test_feature_set_recomputes_only_when_stale(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f.safetensors")
    calls = []

    def compute() -> dict[str, Tensor]:
        calls.append(1)
        return {"avg": torch.full((2, 3), float(len(calls))), "labels": torch.tensor([0, 1])}

    meta = {"data": "fashion-mnist", "split": "train", "poolings": ("avg",)}
    first = FeatureSet(path, meta).get_or_compute(compute)
    again = FeatureSet(path, dict(meta)).get_or_compute(compute)
    assert len(calls) == 1 and torch.equal(first["avg"], again["avg"])
    other = FeatureSet(path, {**meta, "split": "test"}).get_or_compute(compute)
    assert len(calls) == 2 and float(other["avg"][0, 0]) == 2.0
    # The file now holds the recomputed features with the new metadata.
    assert FeatureSet(path, meta).load() is None
    assert json.dumps({k: v.tolist() for k, v in other.items()})


def test_fingerprint_of_a_sharded_checkpoint_folder(tmp_path) -> None:
    """A ``.dcp`` folder (and the ``latest`` symlink to it) is fingerprinted by its files."""
    folder = tmp_path / "jepa-step00000004.dcp"
    folder.mkdir()
    (folder / "__0_0.distcp").write_bytes(b"a" * 10)
    (folder / "ijepa.json").write_text("{}")
    link = tmp_path / "jepa-latest.dcp"
    link.symlink_to(folder.name)
    first = checkpoint_fingerprint(link)
    assert first == checkpoint_fingerprint(folder)
    assert first["checkpoint_size"] == 12 and first["checkpoint"] == str(folder.resolve())
    (folder / "__1_0.distcp").write_bytes(b"b")
    assert checkpoint_fingerprint(link)["checkpoint_size"] == 13
    with pytest.raises(FileNotFoundError):
        checkpoint_fingerprint(tmp_path / "missing.dcp")
