"""Choices made by measurement at train start: ``use_bfloat16: auto``, kernels before compiling;
and the speed options (fixed mask sizes, the shared-context predictor) in a training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import ijepa.train.setup as setup
from ijepa.config import Config, ConfigError, apply_overrides, validate
from ijepa.hardware import DtypeChoice
from ijepa.models import Attention, build_models
from ijepa.recipes import TINY_OVERRIDES, preset
from ijepa.train.loop import train
from ijepa.train.precision import resolve_bf16, step_block_shapes, warm_up_kernels

TINY = [
    *TINY_OVERRIDES,
    "data.batch_size=8",
    "optimization.epochs=1",
    "optimization.warmup=0",
    "optimization.max_steps=3",
    "logging.log_every=1",
]
ARGS = {
    "model_name": "vit_tiny",
    "img_size": 16,
    "patch_size": 4,
    "in_chans": 3,
    "pred_depth": 2,
    "pred_emb_dim": 24,
    "enc_depth": 2,
    "enc_emb_dim": 48,
    "enc_num_heads": 3,
}


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_config_accepts_auto_and_rejects_other_strings() -> None:
    cfg = apply_overrides(Config(), ["meta.use_bfloat16=auto"])
    assert cfg.meta.use_bfloat16 == "auto"
    assert apply_overrides(Config(), ["meta.use_bfloat16=true"]).meta.use_bfloat16 is True
    with pytest.raises(ConfigError, match="expected true or false"):
        apply_overrides(Config(), ["meta.use_bfloat16=fast"])
    for name in ("demo", "small-cpu"):  # the presets decide by measurement
        assert preset(name).meta.use_bfloat16 == "auto"
    with pytest.raises(ConfigError, match="fixed_sizes"):
        validate(apply_overrides(Config(), ["mask.fixed_sizes=true", "mask.mode=official"]))


@pytest.mark.parametrize("measured", [True, False])
def test_auto_bf16_follows_the_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, measured: bool
) -> None:
    seen: list[bool] = []
    calls: list[tuple[Any, ...]] = []
    real_step = setup.train_step

    def fake_resolve(setting: Any, models: Any, **kwargs: Any) -> DtypeChoice:
        calls.append((setting, kwargs["batch_size"], tuple(kwargs["masks_enc"].shape[:2])))
        return DtypeChoice(measured, 1.0, 0.5 if measured else 2.0, "fake timings")

    def spy_step(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["bf16"])
        return real_step(*args, **kwargs)

    monkeypatch.setattr(setup, "resolve_bf16", fake_resolve)
    monkeypatch.setattr(setup, "train_step", spy_step)
    cfg = apply_overrides(
        Config(), [*TINY, "meta.use_bfloat16=auto", f"logging.folder={tmp_path / 'run'}"]
    )
    train(cfg)
    assert calls == [("auto", 8, (1, 8))]
    assert seen == [measured] * 3


def test_boolean_setting_is_not_measured() -> None:
    models = build_models(ARGS)
    masks = torch.zeros(1, 2, 3, dtype=torch.long)
    choice = resolve_bf16(False, models, batch_size=2, masks_enc=masks, masks_pred=masks)
    assert choice.bf16 is False and choice.reason == "set in the config"
    with pytest.raises(ValueError, match="auto"):
        resolve_bf16("yes", models, batch_size=2, masks_enc=masks, masks_pred=masks)


def test_block_shapes_of_a_step() -> None:
    models = build_models(ARGS)
    me = torch.zeros(1, 8, 10, dtype=torch.long)
    mp = torch.zeros(4, 8, 3, dtype=torch.long)
    target, context, pred = step_block_shapes(models, 8, me, mp)
    assert (target.dim, target.tokens, target.batch, target.count, target.backward) == (
        48,
        16,
        8,
        2,
        False,
    )
    assert (context.tokens, context.batch, context.backward) == (10, 8, True)
    assert (pred.dim, pred.tokens, pred.batch, pred.count) == (24, 13, 32, 2)
    models.predictor.shared_context = True
    pred = step_block_shapes(models, 8, me, mp)[2]
    assert (pred.tokens, pred.batch) == (10 + 4 * 3, 8)


def test_warm_up_records_kernels_without_side_effects() -> None:
    models = build_models(ARGS)
    me = torch.stack([torch.arange(10)[None].expand(2, -1)])
    mp = torch.stack([torch.arange(10, 13)[None].expand(2, -1)] * 4)
    state = torch.get_rng_state()
    warm_up_kernels(models, images_shape=(2, 3, 16, 16), masks_enc=me, masks_pred=mp, bf16=False)
    assert torch.equal(torch.get_rng_state(), state)
    for net in (models.encoder, models.predictor):
        assert all(p.grad is None for p in net.parameters())
    for net in (models.encoder, models.predictor, models.target_encoder):
        attns = [m for m in net.modules() if isinstance(m, Attention)]
        assert attns and all(m._chosen for m in attns)  # what the compiled step will read


def test_fixed_sizes_and_shared_context_train(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    cfg = apply_overrides(
        Config(),
        [
            *TINY,
            "mask.fixed_sizes=true",
            "meta.pred_shared_context=true",
            "optimization.max_steps=4",
            f"logging.folder={folder}",
        ],
    )
    result = train(cfg)
    assert result.models.predictor.shared_context is True
    records = _records(folder)
    assert len(records) == 4
    assert len({(r["context_tokens"], r["target_tokens"]) for r in records}) == 1
    assert all(r["loss"] > 0 for r in records)


def test_deterministic_pins_sdpa(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    cfg = apply_overrides(Config(), [*TINY, "meta.deterministic=true", f"logging.folder={folder}"])
    result = train(cfg)
    attns = [m for m in result.models.encoder.modules() if isinstance(m, Attention)]
    assert attns and all(m.attn_impl == "sdpa" for m in attns)


def test_block_shapes_of_an_energy_backbone() -> None:
    """The energy backbone has no blocks: its descent steps stand in for them (it crashed)."""
    models = build_models(
        {**ARGS, "backbone": "energy", "energy_steps": 3, "energy_step_size": 0.1}
    )
    me = torch.zeros(1, 8, 10, dtype=torch.long)
    mp = torch.zeros(4, 8, 3, dtype=torch.long)
    target, context, _ = step_block_shapes(models, 8, me, mp)
    assert (target.dim, target.count, context.count) == (48, 3, 3)
