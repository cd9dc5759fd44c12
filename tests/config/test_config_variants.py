"""Config keys of the variants: choices, cross-field checks with one-line messages."""

from __future__ import annotations

import pytest

from ijepa.config import Config, ConfigError, apply_overrides, validate


def _validated(*overrides: str) -> Config:
    cfg = apply_overrides(Config(), list(overrides))
    validate(cfg)
    return cfg


def test_defaults_are_the_paper() -> None:
    cfg = Config()
    assert (cfg.mask.strategy, cfg.mask.pad) == ("multiblock", False)
    assert (cfg.meta.backbone, cfg.meta.target, cfg.meta.teacher) == ("vit", "latent", "ema")


def test_every_variant_validates() -> None:
    for item in (
        "mask.strategy=random",
        "mask.strategy=block",
        "mask.strategy=raster",
        "mask.pad=true",
        "meta.backbone=energy",
        "meta.target=pixels",
        "meta.input_norm=image",
    ):
        _validated(item)
    _validated("meta.teacher=none", "meta.regularizer=sigreg")
    _validated("meta.backbone=energy", "meta.energy_steps=4", "meta.energy_step_size=0.05")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["mask.strategy=grid"], "mask.strategy must be one of multiblock, random, block, raster"),
        (["meta.backbone=resnet"], "meta.backbone must be one of vit, energy"),
        (["meta.target=tokens"], "meta.target must be one of latent, pixels"),
        (["meta.teacher=momentum"], "meta.teacher must be one of ema, none"),
        (["meta.teacher=none"], "meta.teacher=none needs meta.regularizer=sigreg"),
        (["mask.strategy=raster", "mask.mode=official"], "applies to mask.strategy=multiblock"),
        (["mask.strategy=random", "mask.num_enc_masks=2"], "set mask.num_enc_masks=1"),
        (["mask.strategy=block", "mask.fixed_sizes=true"], "applies to mask.strategy=multiblock"),
        (["mask.pad=true", "mask.mode=official"], "does not go with mask.mode=official"),
        (["mask.pad=true", "mask.fixed_sizes=true"], "does not go with mask.fixed_sizes=true"),
        (["mask.pad=true", "meta.pred_shared_context=true"], "meta.pred_shared_context=true"),
        (["meta.target=pixels", "meta.target_layers=2"], "does not go"),
        (
            ["meta.backbone=energy", "meta.energy_steps=2", "meta.target_layers=3"],
            "encoder depth = 2",
        ),
        (["meta.input_norm=batch"], "meta.input_norm must be one of none, image"),
        (["meta.backbone=energy", "meta.input_norm=image"], "applies to meta.backbone=vit only"),
        (["meta.energy_steps=0"], "meta.energy_steps must be >= 1"),
        (["meta.energy_step_size=0"], "meta.energy_step_size must be > 0"),
    ],
)
def test_bad_variant_settings_are_clear(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        _validated(*overrides)
    assert needle in str(err.value)


def test_target_layers_all_is_the_encoder_depth() -> None:
    """``meta.target_layers=all`` averages every block, whatever the depth; other words are refused."""
    from ijepa.models.jepa import encoder_depth
    from ijepa.train.setup import target_layers_of

    cfg = _validated("meta.target_layers=all", "meta.enc_depth=3")
    assert cfg.meta.target_layers == "all"
    assert target_layers_of(cfg, {"model_name": "vit_tiny", "enc_depth": 3}) == 3
    assert target_layers_of(cfg, {"model_name": "vit_small"}) == 12
    assert encoder_depth({"backbone": "energy", "energy_steps": 5}) == 5
    with pytest.raises(ConfigError, match="expected an integer"):
        _validated("meta.target_layers=some")
    with pytest.raises(ConfigError, match="in \\[1, 12\\]"):
        target_layers_of(_validated("meta.target_layers=13"), {"model_name": "vit_small"})


def test_input_norm_reaches_the_model_args_only_when_set() -> None:
    """``meta.input_norm`` is a variant key of ``model_args``: absent at the paper's default (so
    default checkpoints stay as they were), present and rebuilt by ``build_encoder`` when set."""
    from ijepa.models import build_encoder
    from ijepa.train.build import model_args_from_config

    assert "input_norm" not in model_args_from_config(_validated(), 3)
    args = model_args_from_config(
        _validated("meta.input_norm=image", "meta.model_name=vit_tiny"), 3
    )
    assert args["input_norm"] == "image"
    assert build_encoder(args).input_norm == "image"
