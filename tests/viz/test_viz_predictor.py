"""The predictor decoder: patch geometry, fitting, and decoded predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from viz_helpers import MODEL_ARGS, synthetic_images

from ijepa.masks import MultiBlockMaskGenerator, make_generator
from ijepa.models import build_models
from ijepa.viz.predictor_decoder import (
    decode_predictions,
    patchify,
    save_predictor_figure,
    train_decoder,
    unpatchify,
)


def test_patchify_roundtrip_and_order() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # patch 1 is the top-right 4x4 block, channel-major
    assert torch.equal(p[0, 1, :16], x[0, 0, :4, 4:].flatten())
    assert torch.equal(unpatchify(p, (2, 2), 4), x)


@pytest.mark.slow
def test_decoder_fits_and_predictions_fill_only_targets(tmp_path: Path) -> None:
    torch.manual_seed(0)
    models = build_models(MODEL_ARGS)
    images = (synthetic_images(32) - 0.5) / 0.25
    fit = train_decoder(models.target_encoder, images, steps=60, batch_tokens=512)
    assert fit.train_mse < 0.5 * fit.pixel_var  # it learned far more than the mean
    assert fit.losses[-1] < fit.losses[0]
    gen = MultiBlockMaskGenerator((8, 8), min_keep=4)
    enc, pred = gen(3, make_generator(0, 0))
    m = models
    pics = decode_predictions(
        m.encoder, m.predictor, m.target_encoder, fit.decoder, images[:3], enc, pred
    )
    assert pics.predicted.shape == pics.reconstructed.shape == (3, 3, 32, 32)
    is_target = torch.zeros(3, 64, dtype=torch.bool)
    for b in range(3):
        is_target[b, pred[:, b].flatten()] = True
    outside = ~is_target[..., None].expand(-1, -1, 48)
    assert torch.equal(patchify(pics.predicted, 4)[outside], patchify(images[:3], 4)[outside])
    assert not torch.equal(patchify(pics.predicted, 4)[~outside], patchify(images[:3], 4)[~outside])
    assert not (pics.context & is_target).any()  # context and targets are disjoint
    assert pics.mse_reconstructed < pics.mse_mean
    out = save_predictor_figure(
        pics, tmp_path / "p.png", patch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    assert out.stat().st_size > 1000
