"""Small grids, impossible settings and malformed arguments: clear errors, never a hang."""

from __future__ import annotations

import time

import pytest
import torch

from ijepa.masks import MaskSamplingError, MultiBlockMaskGenerator, make_generator


@pytest.mark.timeout(30)
@pytest.mark.parametrize("min_keep", [4, 10])
def test_seven_by_seven_grid_default_mode(min_keep: int) -> None:
    gen = MultiBlockMaskGenerator((7, 7), min_keep=min_keep)
    for step in range(10):
        enc, pred = gen(64, make_generator(0, step))
        assert enc.shape[:2] == (1, 64) and enc.shape[-1] >= min_keep
        assert pred.shape[:2] == (4, 64)
        for b in range(64):
            assert not set(enc[:, b].flatten().tolist()) & set(pred[:, b].flatten().tolist())


@pytest.mark.timeout(30)
def test_two_by_two_grid() -> None:
    with pytest.raises(MaskSamplingError, match=r"input_size=\(2, 2\).*min_keep=10"):
        MultiBlockMaskGenerator((2, 2))
    enc, pred = MultiBlockMaskGenerator((2, 2), min_keep=1)(8, make_generator(0, 0))
    assert enc.shape == (1, 8, 1) and pred.shape == (4, 8, 1)
    for b in range(8):
        assert int(enc[0, b]) not in pred[:, b].flatten().tolist()


@pytest.mark.timeout(30)
def test_impossible_at_sampling_time_raises_quickly() -> None:
    # the 6x6 context can keep 36 patches only if no 2x3 target touches it, which cannot happen
    gen = MultiBlockMaskGenerator((7, 7), min_keep=36)
    start = time.perf_counter()
    with pytest.raises(MaskSamplingError, match=r"min_keep=36.*max_tries=20") as err:
        gen(4, make_generator(0, 0))
    assert time.perf_counter() - start < 10
    assert "pred_mask_scale" in str(err.value) and "npred" in str(err.value)


@pytest.mark.timeout(30)
def test_grid_too_thin() -> None:
    with pytest.raises(MaskSamplingError, match="at least 2x2"):
        MultiBlockMaskGenerator((1, 8), min_keep=0)


def test_mask_sampling_error_is_value_error() -> None:
    assert issubclass(MaskSamplingError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pred_mask_scale": (0.5, 0.2)}, "pred_mask_scale"),
        ({"enc_mask_scale": (0.0, 1.0)}, "enc_mask_scale"),
        ({"enc_mask_scale": (0.5, 1.5)}, "enc_mask_scale"),
        ({"aspect_ratio": (0.0, 1.0)}, "aspect_ratio"),
        ({"aspect_ratio": 1.0}, "aspect_ratio"),
        ({"mode": "paper"}, "mode"),
        ({"nenc": 0}, "nenc"),
        ({"npred": 0}, "npred"),
        ({"min_keep": -1}, "min_keep"),
        ({"max_tries": 0}, "max_tries"),
        ({"input_size": (1, 2, 3)}, "input_size"),
        ({"input_size": (14.0, 14)}, "input_size"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiBlockMaskGenerator(**kwargs)  # type: ignore[arg-type]


def test_bad_call_arguments() -> None:
    gen = MultiBlockMaskGenerator(14)
    with pytest.raises(ValueError, match="batch_size"):
        gen(0, make_generator(0, 0))
    with pytest.raises(TypeError, match="generator"):
        gen(4, None)  # type: ignore[arg-type]
    assert "min_keep=10" in repr(gen)


def test_max_tries_bounds_the_search() -> None:
    # with max_tries=1 the impossible case fails after a single round
    gen = MultiBlockMaskGenerator((7, 7), min_keep=36, max_tries=1)
    with pytest.raises(MaskSamplingError, match="1 size draws x 1 position rounds"):
        gen(2, torch.Generator().manual_seed(0))
