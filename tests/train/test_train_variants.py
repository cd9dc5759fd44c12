"""The variants in the training step and the builders: pixel targets, the EMA-free teacher,
padded masks, the energy backbone, the mask strategies; and short training runs of each."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ijepa.config import Config, apply_overrides
from ijepa.masks import (
    BlockMaskGenerator,
    MultiBlockMaskGenerator,
    RandomMaskGenerator,
    RasterMaskGenerator,
    make_generator,
)
from ijepa.models import EnergyTransformer, VisionTransformer, build_models
from ijepa.models.heads import PixelPredictor, pixel_targets
from ijepa.recipes import TINY_OVERRIDES
from ijepa.train.build import build_mask_generator, model_args_from_config
from ijepa.train.loop import train
from ijepa.train.objective import Objective
from ijepa.train.optim import build_optimizer
from ijepa.train.regularizers import SIGReg
from ijepa.train.step import feature_stds, forward_loss, jepa_loss, train_step

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


def _images(b: int = 4) -> torch.Tensor:
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _masks(pad: bool = False, b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = MultiBlockMaskGenerator((4, 4), min_keep=2, pred_mask_scale=(0.1, 0.3), pad=pad)
    return gen(b, make_generator(seed, 0))


# ----------------------------------------------------------------------------- builders
def test_model_args_carry_variants_only_when_set() -> None:
    base = apply_overrides(Config(), list(TINY_OVERRIDES))
    args = model_args_from_config(base, 3)
    assert not {"backbone", "target", "energy_steps"} & set(args)  # old checkpoints still match
    energy = apply_overrides(base, ["meta.backbone=energy", "meta.energy_steps=3"])
    args = model_args_from_config(energy, 3)
    assert args["backbone"] == "energy" and args["energy_steps"] == 3
    models = build_models(args)
    assert isinstance(models.encoder, EnergyTransformer) and models.encoder.steps == 3
    assert isinstance(models.target_encoder, EnergyTransformer)
    assert models.encoder.embed_dim == 48 and models.encoder.num_heads == 3
    pixels = model_args_from_config(apply_overrides(base, ["meta.target=pixels"]), 3)
    pred = build_models(pixels).predictor
    assert isinstance(pred, PixelPredictor) and pred.pixel_head.out_features == 4 * 4 * 3
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_models(args, drop_path_rate=0.1)


@pytest.mark.parametrize(
    ("strategy", "kind"),
    [
        ("multiblock", MultiBlockMaskGenerator),
        ("random", RandomMaskGenerator),
        ("block", BlockMaskGenerator),
        ("raster", RasterMaskGenerator),
    ],
)
def test_mask_strategy_key_builds_its_sampler(strategy: str, kind: type) -> None:
    cfg = apply_overrides(Config(), [*TINY_OVERRIDES, f"mask.strategy={strategy}", "mask.pad=true"])
    gen = build_mask_generator(cfg)
    assert isinstance(gen, kind) and gen.strategy == strategy and gen.pad
    enc, pred = gen(3, make_generator(0, 0))
    assert enc.shape[:2] == (1, 3) and pred.shape[1] == 3


# ----------------------------------------------------------------------------- objectives
def test_pixel_targets_loss_and_monitor() -> None:
    torch.manual_seed(0)
    models = build_models({**ARGS, "target": "pixels"})
    images = _images()
    me, mp = _masks()
    obj = Objective(target="pixels", patch_size=4)
    out = forward_loss(models, images, me, mp, objective=obj)
    pred = models.predictor(models.encoder(images, me), me, mp)
    want = F.smooth_l1_loss(pred, pixel_targets(images, 4, mp))
    assert torch.allclose(out.loss, want, atol=1e-6)
    assert float(out.target_std) > 0  # the context features, not a zero that would alarm
    out.loss.backward()
    assert all(p.grad is None for p in models.target_encoder.parameters())


def test_teacher_none_trains_the_encoder_through_the_targets_and_copies_it() -> None:
    torch.manual_seed(0)
    models = build_models(ARGS)
    images = _images()
    me, mp = _masks()
    obj = Objective(teacher="none")
    out = forward_loss(models, images, me, mp, objective=obj)
    # the targets are the context encoder's own full-image tokens, with gradients
    with torch.no_grad():
        full = F.layer_norm(models.encoder(images), (48,))
        ema = F.layer_norm(models.target_encoder(images), (48,))
    assert torch.allclose(full, ema)  # identical at init; they differ after a step
    probe = copy.deepcopy(models)
    z = probe.predictor(probe.encoder(images, me), me, mp)
    t = F.layer_norm(probe.encoder(images), (48,))
    t = t[torch.arange(4)[None, :, None], mp].flatten(0, 1)  # (M*B, Kt, D)
    F.smooth_l1_loss(z, t).backward()
    grads_with_target = probe.encoder.patch_embed.proj.weight.grad.clone()
    out.loss.backward()
    assert torch.allclose(models.encoder.patch_embed.proj.weight.grad, grads_with_target, atol=1e-6)
    # one step: with teacher none the target encoder is the updated encoder, not an average
    torch.manual_seed(0)
    models = build_models(ARGS)
    opt = build_optimizer(models.encoder, models.predictor, lr=1e-2, weight_decay=0.0)
    reg = SIGReg(seed=0)
    train_step(
        models, opt, images, me, mp, lr=1e-2, wd=0.0, momentum=0.996, objective=obj,
        regularizer=reg, reg_weight=0.05,
    )  # fmt: skip
    for a, b in zip(models.encoder.parameters(), models.target_encoder.parameters(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- padding
def test_padded_loss_weights_each_real_target_token_once() -> None:
    """The padded batch's loss equals the token-weighted mean of each image run alone."""
    torch.manual_seed(0)
    models = build_models(ARGS)
    images = _images()
    me, mp = _masks(pad=True, seed=3)
    assert bool((me == -1).any())  # contexts of different sizes: padding present
    out = forward_loss(models, images, me, mp)
    total, count = 0.0, 0
    for b in range(4):
        e = me[:, b : b + 1]
        e = e[..., : int((e[0, 0] >= 0).sum())]
        one = forward_loss(models, images[b : b + 1], e, mp[:, b : b + 1])
        n = mp.shape[0] * mp.shape[-1] * 48
        total += float(one.loss.detach()) * n
        count += n
    assert abs(float(out.loss.detach()) - total / count) < 1e-5
    # the same with accelerator-style explicit valid masks
    again = forward_loss(models, images, me.clamp(min=0), mp, valid_enc=me >= 0, valid_pred=mp >= 0)
    assert torch.allclose(again.loss, out.loss)


def test_padded_targets_and_pixels() -> None:
    """Padded target slots (per-image sizes) are out of the loss, with pixel targets too."""
    torch.manual_seed(0)
    gen = MultiBlockMaskGenerator((4, 4), min_keep=2, pad=True, per_image_size=True)
    me, mp = gen(4, make_generator(1, 2))
    assert bool((mp == -1).any())
    models = build_models({**ARGS, "target": "pixels"})
    obj = Objective(target="pixels", patch_size=4)
    out = forward_loss(models, _images(), me, mp, objective=obj)
    assert bool(torch.isfinite(out.loss)) and bool(torch.isfinite(out.target_std))


def test_loss_regulariser_and_monitors_leave_padding_out() -> None:
    pred, target = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    target[1, 2] = 100.0  # a padded slot: must not count
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert float(jepa_loss(pred, target, "l2", valid)) == pytest.approx(1.0)
    assert float(jepa_loss(pred, target, "l2")) > 1.0
    z = torch.randn(6, 5, 8)
    keep = torch.ones(6, 5, dtype=torch.bool)
    keep[:, 3:] = False
    for on in ("pooled", "tokens"):
        reg = SIGReg(seed=0, on=on)
        assert torch.allclose(reg(z, 3, keep), reg(z[:, :3], 3))
    for a, b in zip(feature_stds(z, keep), feature_stds(z[:, :3]), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- training runs
VARIANT_RUNS = {
    "random": ["mask.strategy=random"],
    "block": ["mask.strategy=block"],
    "raster": ["mask.strategy=raster", "mask.pad=true", "data.crop_size=20"],
    "pixels": ["meta.target=pixels"],
    "lejepa": ["meta.teacher=none", "meta.regularizer=sigreg"],
    "energy": ["meta.backbone=energy", "meta.energy_steps=3"],
    "padded": ["mask.pad=true"],
    "padded-lejepa-energy": [
        "mask.pad=true",
        "meta.teacher=none",
        "meta.regularizer=sigreg",
        "meta.backbone=energy",
        "meta.energy_steps=2",
    ],
}


@pytest.mark.parametrize("name", sorted(VARIANT_RUNS))
def test_each_variant_trains_and_resumes(tmp_path: Path, name: str) -> None:
    cfg = apply_overrides(
        Config(),
        [
            *TINY_OVERRIDES,
            f"logging.folder={tmp_path}",
            "optimization.epochs=2",
            "optimization.warmup=0",
            "data.batch_size=16",
            "logging.log_every=2",
            *VARIANT_RUNS[name],
        ],
    )
    first = train(apply_overrides(cfg, ["optimization.max_steps=4"]))
    assert first.step == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in first.history)
    done = train(cfg)  # resumes from the run folder's checkpoint
    assert done.step == 8
    kind = EnergyTransformer if "energy" in name else VisionTransformer
    assert isinstance(done.models.target_encoder, kind)


def test_energy_encoder_loads_through_load_encoder(tmp_path: Path) -> None:
    import ijepa
    from ijepa.compat import ConversionError, save_encoder
    from ijepa.compat.timm import save_timm

    cfg = apply_overrides(
        Config(),
        [
            *TINY_OVERRIDES,
            f"logging.folder={tmp_path / 'run'}",
            "optimization.epochs=1",
            "optimization.warmup=0",
            "optimization.max_steps=2",
            "data.batch_size=16",
            "meta.backbone=energy",
            "meta.energy_steps=3",
        ],
    )
    result = train(cfg)
    trained = result.models.target_encoder.eval()
    x = torch.randn(2, 3, 16, 16)
    ckpt = tmp_path / "run" / "jepa-latest.pth.tar"
    for which, module in (("target", trained), ("context", result.models.encoder.eval())):
        loaded, transform = ijepa.load_encoder(ckpt, which=which)
        assert transform is not None
        assert isinstance(loaded, EnergyTransformer) and loaded.steps == 3
        assert torch.equal(loaded(x), module(x))
    exported = save_encoder(trained, tmp_path / "energy.safetensors")
    again, _ = ijepa.load_encoder(exported)
    assert isinstance(again, EnergyTransformer) and torch.equal(again(x), trained(x))
    with pytest.raises(ConversionError, match="timm has no EnergyTransformer"):
        save_timm(trained, tmp_path / "timm.safetensors")
    from ijepa.checkpoint import load_checkpoint
    from ijepa.compat.official import to_official

    with pytest.raises(ConversionError, match="only the ViT encoder"):
        to_official(load_checkpoint(ckpt), "energy run")
