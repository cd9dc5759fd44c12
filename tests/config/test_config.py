"""Config: round trip, overrides, unknown keys, official YAML files, placeholders, validation."""

from pathlib import Path

import pytest

from ijepa.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    dataset_spec,
    load_config,
    save_config,
    validate,
)

REPO = Path(__file__).resolve().parents[2]
OFFICIAL = sorted((REPO / "configs" / "official").glob("*.yaml"))


def test_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["data.batch_size=7", "mask.pred_mask_scale=[0.1, 0.3]"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.mask.pred_mask_scale == (0.1, 0.3)


def test_overrides_types():
    cfg = apply_overrides(Config(), ["optimization.lr=0.01", "meta.use_bfloat16=false"])
    assert cfg.optimization.lr == 0.01 and cfg.meta.use_bfloat16 is False
    # an int is accepted where a float is expected, but not the other way round
    assert apply_overrides(Config(), ["optimization.lr=1"]).optimization.lr == 1.0
    # PyYAML reads 1e-3 as a string; numeric spellings are still accepted for numbers
    assert apply_overrides(Config(), ["optimization.lr=1e-3"]).optimization.lr == 1e-3
    with pytest.raises(ConfigError, match="expected a number"):
        apply_overrides(Config(), ["optimization.lr=fast"])
    with pytest.raises(ConfigError, match=r"data.batch_size: expected an integer"):
        apply_overrides(Config(), ["data.batch_size=1.5"])
    with pytest.raises(ConfigError, match="expected true or false"):
        apply_overrides(Config(), ["meta.use_bfloat16=maybe"])
    with pytest.raises(ConfigError, match="list of 2"):
        apply_overrides(Config(), ["data.crop_scale=0.3"])


def test_unknown_keys_suggest_nearest():
    with pytest.raises(ConfigError, match=r"did you mean 'batch_size'"):
        apply_overrides(Config(), ["data.batchsize=3"])
    with pytest.raises(ConfigError, match=r"did you mean 'optimization'"):
        config_from_dict({"optimisation": {"lr": 1.0}})
    with pytest.raises(ConfigError, match=r"did you mean 'pred_depth'"):
        config_from_dict({"meta": {"pred_dept": 3}})
    with pytest.raises(ConfigError, match=r"form section\.key=value"):
        apply_overrides(Config(), ["nonsense"])


def test_choices():
    with pytest.raises(ConfigError, match="must be one of smooth_l1, l2"):
        apply_overrides(Config(), ["optimization.loss=l1"])
    with pytest.raises(ConfigError, match=r"mask\.mode must be one of"):
        apply_overrides(Config(), ["mask.mode=weird"])


@pytest.mark.parametrize("path", OFFICIAL, ids=[p.name for p in OFFICIAL])
def test_official_yaml_loads_and_maps(path):
    cfg = load_config(path)
    assert cfg.meta.model_name in ("vit_huge", "vit_giant")
    assert cfg.mask.num_pred_masks == 4 and cfg.mask.enc_mask_scale == (0.85, 1.0)
    assert cfg.optimization.ema == (0.996, 1.0)
    # the placeholders must be named
    with pytest.raises(ConfigError, match=r"data.root_path is still the placeholder"):
        validate(cfg)
    fixed = apply_overrides(cfg, ["data.root_path=/data", "logging.folder=/tmp/run"])
    validate(fixed)
    assert dataset_spec(fixed) == "imagefolder:/data/imagenet_full_size/061417"


def test_four_official_files_present():
    names = {p.name for p in OFFICIAL}
    assert names == {
        "in1k_vith14_ep300.yaml",
        "in1k_vith16-448_ep300.yaml",
        "in22k_vitg16_ep44.yaml",
        "in22k_vith14_ep66.yaml",
    }
    vitg = load_config(REPO / "configs/official/in22k_vitg16_ep44.yaml")
    assert (vitg.meta.model_name, vitg.meta.pred_depth, vitg.optimization.epochs) == (
        "vit_giant",
        16,
        44,
    )


def test_validate_cross_field():
    with pytest.raises(ConfigError, match=r"multiple of mask\.patch_size"):
        validate(apply_overrides(Config(), ["data.crop_size=30", "mask.patch_size=4"]))
    with pytest.raises(ConfigError, match=r"optimization\.warmup"):
        validate(apply_overrides(Config(), ["optimization.epochs=2", "optimization.warmup=5"]))


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
