"""bf16 against fp32 is chosen by measurement (fake timings injected), never from flags alone."""

from __future__ import annotations

import pytest
import torch

from ijepa import hardware
from ijepa.hardware import BlockShape, choose_bf16, time_blocks

SHAPES = (BlockShape(dim=32, heads=2, tokens=9, batch=4, count=2),)


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_DTYPE_CHOICES", {})


def fake_timings(
    monkeypatch: pytest.MonkeyPatch, fp32: float, bf16: float
) -> list[tuple[BlockShape, ...]]:
    calls: list[tuple[BlockShape, ...]] = []

    def fake(
        shapes: tuple[BlockShape, ...], device: object, **kwargs: object
    ) -> tuple[float, float]:
        calls.append(tuple(shapes))
        return fp32, bf16

    monkeypatch.setattr(hardware, "time_blocks", fake)
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": True)
    return calls


@pytest.mark.parametrize(
    ("fp32", "bf16", "expected"), [(1.0, 0.5, True), (1.0, 0.97, False), (0.2, 0.265, False)]
)
def test_choice_follows_the_measurement(
    monkeypatch: pytest.MonkeyPatch, fp32: float, bf16: float, expected: bool
) -> None:
    calls = fake_timings(monkeypatch, fp32, bf16)
    choice = choose_bf16(SHAPES)
    assert choice.bf16 is expected
    assert (choice.fp32_s, choice.bf16_s) == (fp32, bf16)
    assert choose_bf16(SHAPES) is choice  # cached per process and shapes
    assert calls == [SHAPES]
    choose_bf16((BlockShape(dim=64, heads=2, tokens=9, batch=4),))
    assert len(calls) == 2  # other shapes: measured again


def test_no_native_bf16_means_no_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> tuple[float, float]:
        raise AssertionError("measured without native bf16")

    monkeypatch.setattr(hardware, "time_blocks", boom)
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": False)
    choice = choose_bf16(SHAPES)
    assert not choice.bf16 and "not measured" in choice.reason


def test_time_blocks_measures_both_dtypes() -> None:
    torch.set_num_threads(1)
    shapes = (*SHAPES, BlockShape(dim=32, heads=2, tokens=9, batch=4, backward=False))
    fp32, bf16 = time_blocks(shapes, budget_s=0.05)
    assert fp32 > 0 and bf16 > 0
