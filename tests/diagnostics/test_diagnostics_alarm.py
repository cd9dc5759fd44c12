"""The collapse alarm: it fires on collapsed encoders and runs, and stays quiet on healthy ones.

Evidence for the default thresholds (``DEFAULT_STD_THRESHOLD``, ``DEFAULT_RANK_THRESHOLD``):
each case below prints its measures (run with ``-s`` to see them).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ijepa.diagnostics import CollapseMonitor, feature_std, probe_rank
from ijepa.masks import MultiBlockMaskGenerator, make_generator
from ijepa.models import build_models, vit_encoder
from ijepa.train.optim import build_optimizer
from ijepa.train.step import train_step

MODEL_ARGS = {
    "model_name": "vit_tiny",
    "img_size": 32,
    "patch_size": 8,
    "in_chans": 3,
    "pred_depth": 1,
    "pred_emb_dim": 48,
    "enc_depth": 2,
    "enc_emb_dim": None,
    "enc_num_heads": None,
}


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Structured synthetic images: smooth colour fields plus a bright square, normalised."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear")
    for i, (r, c) in enumerate(torch.randint(0, 24, (n, 2), generator=g).tolist()):
        x[i, :, r : r + 8, c : c + 8] = 1.0
    return (x - 0.5) / 0.25


def _measures(encoder: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        tokens = encoder.eval()(images)
    return {
        "target_std": feature_std(tokens.flatten(0, 1), normalize=True),
        "probe_rank": probe_rank(encoder, images),
    }


@pytest.fixture(scope="module")
def probe() -> torch.Tensor:
    return _images(256, seed=1)


def test_alarm_fires_on_a_constant_output_encoder(probe: torch.Tensor) -> None:
    enc = vit_encoder("tiny", depth=2, img_size=32, patch_size=8)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name != "norm.bias":
                p.zero_()
        enc.pos_embed.zero_()
        enc.norm.bias.normal_()
    m = _measures(enc, probe)
    print("constant output:", m)
    assert m == {"target_std": 0.0, "probe_rank": 0.0}
    warnings = CollapseMonitor(log=False).update({"step": 1, **m})
    assert len(warnings) == 2


def test_alarm_fires_on_an_input_blind_encoder(probe: torch.Tensor) -> None:
    # output depends on the patch position only: the probe rank is 0 (the token std, 0.21 here,
    # is below the calibrated std threshold too)
    enc = vit_encoder("tiny", depth=2, img_size=32, patch_size=8)
    with torch.no_grad():
        enc.patch_embed.proj.weight.zero_()
    m = _measures(enc, probe)
    print("input-blind:", m)
    assert m["probe_rank"] == 0.0
    warnings = CollapseMonitor(log=False).update({"step": 1, **m})
    assert any("probe_rank" in w for w in warnings)


@pytest.mark.parametrize("size", [dict(depth=2, patch_size=8), dict(depth=6, patch_size=4)])
def test_alarm_is_quiet_on_random_init(probe: torch.Tensor, size: dict[str, int]) -> None:
    torch.manual_seed(0)
    enc = vit_encoder("tiny", img_size=32, **size)
    m = _measures(enc, probe)
    print("random init", size, m)
    assert CollapseMonitor(log=False).update({"step": 0, **m}) == []


def _run(steps: int, probe: torch.Tensor, *, blind: bool = False) -> list[dict[str, float]]:
    """A short I-JEPA run with the real train step; measures every 10 steps as the loop would.

    With ``blind`` the run is deliberately collapsed: the patch embedding weights and the
    positional table are zeroed and frozen in both encoders, so every token enters the blocks
    equal and the encoders cannot see their input.
    """
    lr, wd, momentum = 1e-3, 0.04, 0.996
    torch.manual_seed(0)
    models = build_models(MODEL_ARGS)
    if blind:
        for enc in (models.encoder, models.target_encoder):
            with torch.no_grad():
                enc.patch_embed.proj.weight.zero_()
                enc.pos_embed.zero_()
            enc.patch_embed.proj.weight.requires_grad_(False)
    opt = build_optimizer(models.encoder, models.predictor, lr=lr, weight_decay=wd)
    masks = MultiBlockMaskGenerator((4, 4), pred_mask_scale=(0.1, 0.2), npred=2, min_keep=2)
    data = _images(256, seed=2)
    g = torch.Generator().manual_seed(0)
    records = []
    for step in range(steps):
        x = data[torch.randint(0, 256, (32,), generator=g)]
        enc_m, pred_m = masks(32, make_generator(0, step))
        out = train_step(models, opt, x, enc_m, pred_m, lr=lr, wd=wd, momentum=momentum)
        if (step + 1) % 10 == 0:
            records.append(
                {
                    "step": step + 1,
                    "loss": float(out.loss),
                    "target_std": float(out.target_std),
                    "probe_rank": probe_rank(models.target_encoder, probe),
                }
            )
    return records


@pytest.mark.slow
def test_alarm_is_quiet_during_a_healthy_run(probe: torch.Tensor) -> None:
    records = _run(30, probe)
    mon = CollapseMonitor(log=False)
    for rec in records:
        print("healthy run:", rec)
        assert mon.update(rec) == []
    assert records[-1]["loss"] < records[0]["loss"]  # it does learn


@pytest.mark.slow
def test_alarm_fires_on_a_deliberately_collapsed_run(probe: torch.Tensor) -> None:
    records = _run(20, probe, blind=True)
    mon = CollapseMonitor(log=False)
    for rec in records:
        print("collapsed run:", rec)
        warnings = mon.update(rec)
        assert len(warnings) == 2, rec  # both the target std and the probe rank
        assert rec["target_std"] < 1e-3 and rec["probe_rank"] == 0.0


def test_probe_rank_is_cheap(probe: torch.Tensor) -> None:
    """One forward pass plus an SVD of the pooled features: counted, not timed (timings in tests
    are noise on a shared machine)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    enc = vit_encoder("tiny", depth=6, img_size=32, patch_size=4)  # the demo's encoder
    calls = []
    enc.register_forward_hook(lambda *_: calls.append(1))
    with FlopCounterMode(display=False) as fwd_count, torch.no_grad():
        enc(probe)
    calls.clear()
    with FlopCounterMode(display=False) as rank_count:
        probe_rank(enc, probe)
    assert len(calls) == 1  # a single forward pass over the probe batch
    forward = fwd_count.get_total_flops()
    # nothing else that multiplies matrices (matmul, conv, attention) runs
    assert rank_count.get_total_flops() == pytest.approx(forward, rel=1e-6)
    # the SVD of the (256, 192) pooled features, ~4 m n^2 flops, is negligible next to the forward
    m, n = probe.shape[0], enc.embed_dim
    assert 4 * m * n * n < 0.01 * forward


DATA = __import__("pathlib").Path(__file__).parent / "data"


def _replay(name: str) -> list[dict[str, float]]:
    import json

    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "name",
    ["collapsed_digits_old_small_preset", "collapsed_embedded_object_old_demo_preset"],
)
def test_replayed_collapsed_runs_are_called_collapsed(name: str) -> None:
    """Metrics of real runs whose trained encoder ended below its random init (kNN -15 and -8
    points: the old small-CPU recipe on 28 px digits, the old demo recipe on the object layout)."""
    from ijepa.diagnostics import collapse_message, collapse_summary

    records = _replay(name)
    mon = CollapseMonitor(log=False)
    fired = [rec["step"] for rec in records if mon.update(rec)]
    verdict = collapse_summary(records)
    print(name, verdict)
    assert fired and fired[0] <= 400  # the alarm goes off early ...
    assert verdict["collapsed"] and verdict["collapse_step"] <= 400  # ... and holds to the end
    assert collapse_message(verdict).startswith("COLLAPSED")


@pytest.mark.parametrize("name", ["healthy_fashion_mnist", "healthy_embedded_shapes"])
def test_replayed_healthy_runs_raise_no_alarm(name: str) -> None:
    """Metrics of real runs that learned (kNN +9 and +19 points over the random init)."""
    from ijepa.diagnostics import collapse_message, collapse_summary

    records = _replay(name)
    mon = CollapseMonitor(log=False)
    assert [rec["step"] for rec in records if mon.update(rec)] == []
    verdict = collapse_summary(records)
    assert not verdict["collapsed"]
    assert collapse_message(verdict).startswith("no collapse")
