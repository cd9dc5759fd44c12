"""Collapse measures on point sets whose answer is known, and the CollapseMonitor's behaviour."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from ijepa.diagnostics import (
    CollapseMonitor,
    correlation_dimension,
    effective_rank,
    feature_std,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_feature_std_matches_definition_and_is_zero_for_identical_rows() -> None:
    x = torch.randn(500, 16, generator=_gen()) * torch.linspace(0.5, 2.0, 16)
    assert feature_std(x) == pytest.approx(float(x.double().std(dim=0).mean()), rel=1e-9)
    assert feature_std(torch.ones(10, 4) * 3.0) == 0.0


def test_feature_std_normalize_equals_training_target_std() -> None:
    # the loop logs the std of layer-normed target tokens: feature_std(normalize=True) is that
    x = torch.randn(64, 32, generator=_gen(1)) * 5 + 2
    ln = torch.nn.functional.layer_norm(x, (32,))
    assert feature_std(x, normalize=True) == pytest.approx(float(ln.std(dim=0).mean()), rel=1e-5)
    # scale-free: a global rescale does not change it
    assert feature_std(x * 100, normalize=True) == pytest.approx(
        feature_std(x, normalize=True), rel=1e-5
    )


def test_effective_rank_of_known_spectra() -> None:
    d = 8
    iso = torch.randn(4000, d, generator=_gen(2))
    assert effective_rank(iso) == pytest.approx(d, rel=0.03)
    # two equal directions -> 2
    basis = torch.randn(2, 32, generator=_gen(3))
    basis = torch.linalg.qr(basis.T).Q.T  # orthonormal rows
    coeff = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert effective_rank(coeff @ basis) == pytest.approx(2.0, rel=1e-6)
    # points on one line through the mean -> 1
    line = torch.randn(100, 1, generator=_gen(4)) * torch.randn(1, 16, generator=_gen(5))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-4)


def test_effective_rank_collapse_is_zero_and_centering_matters() -> None:
    same = torch.randn(1, 16, generator=_gen(6)).repeat(50, 1)
    assert effective_rank(same) == 0.0
    assert effective_rank(same, center=False) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.zeros(5, 3), center=False) == 0.0
    # a large shared offset swamps the uncentred measure but not the centred one
    x = torch.randn(300, 8, generator=_gen(7)) + 50.0
    assert effective_rank(x) > 7.5
    assert effective_rank(x, center=False) < 1.5


@pytest.mark.parametrize(("dim", "tol"), [(1, 0.15), (2, 0.25), (3, 0.4)])
def test_correlation_dimension_recovers_intrinsic_dimension(dim: int, tol: float) -> None:
    g = _gen(dim)
    latent = torch.rand(1000, dim, generator=g)
    embed = torch.linalg.qr(torch.randn(24, dim, generator=g)).Q  # (24, dim) orthonormal columns
    points = latent @ embed.T + 3.0
    assert correlation_dimension(points) == pytest.approx(dim, abs=tol)


def test_correlation_dimension_subsamples_and_handles_coincident_points() -> None:
    x = torch.rand(3000, 2, generator=_gen(8))
    a = correlation_dimension(x, max_points=500, seed=1)
    b = correlation_dimension(x, max_points=500, seed=1)
    assert a == b and a == pytest.approx(2.0, abs=0.3)
    assert correlation_dimension(torch.ones(20, 4)) == 0.0
    with pytest.raises(ValueError, match="quantiles"):
        correlation_dimension(x, quantiles=(0.5, 0.1))


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(5), torch.zeros(1, 4), torch.tensor([[1.0, math.nan], [0.0, 1.0]])],
)
def test_measures_reject_bad_input(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        feature_std(bad)
    with pytest.raises(ValueError):
        effective_rank(bad)


def test_monitor_fires_below_threshold_and_names_the_measure() -> None:
    mon = CollapseMonitor(std_threshold=0.1, rank_threshold=2.0, log=False)
    assert mon.update({"step": 10, "target_std": 0.5, "probe_rank": 12.0, "loss": 0.3}) == []
    assert not mon.alarm
    warnings = mon.update({"step": 20, "target_std": 0.01, "probe_rank": 1.0})
    assert len(warnings) == 2
    assert "step 20" in warnings[0] and "target_std" in warnings[0]
    assert "probe_rank" in warnings[1]
    assert mon.alarm
    # only one measure present: only it is checked
    assert len(mon.update({"step": 30, "probe_rank": 0.5})) == 1
    # recovery clears the alarm
    assert mon.update({"step": 40, "target_std": 0.4, "probe_rank": 9.0}) == []
    assert not mon.alarm


def test_monitor_treats_nan_as_alarm_and_ignores_missing_keys() -> None:
    mon = CollapseMonitor(log=False)
    assert mon.update({"step": 1, "loss": 1.0}) == []
    assert len(mon.update({"step": 2, "target_std": math.nan})) == 1


def test_monitor_logs_first_crossing_then_every_n(caplog: pytest.LogCaptureFixture) -> None:
    mon = CollapseMonitor(std_threshold=0.1, log_every=3)
    with caplog.at_level(logging.INFO, logger="ijepa.diagnostics"):
        for step in range(7):
            assert len(mon.update({"step": step, "target_std": 0.0})) == 1
        mon.update({"step": 7, "target_std": 1.0})
    warns = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warns] == [
        "collapse alarm at step 0",
        "collapse alarm at step 3",
        "collapse alarm at step 6",
    ]
    assert any("recovered" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_monitor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CollapseMonitor(std_threshold=-1.0)
    with pytest.raises(ValueError, match="log_every"):
        CollapseMonitor(log_every=0)
