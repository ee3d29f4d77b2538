from __future__ import annotations

import math

import pytest

from autorobust.train.schedule import lr_factor


def test_cosine_starts_at_one_and_ends_at_zero():
    assert lr_factor(0, 100, schedule="cosine") == 1.0
    assert lr_factor(50, 100, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, schedule="cosine") == pytest.approx(0.0, abs=1e-12)


def test_warmup_is_linear_then_cosine_from_one():
    assert [lr_factor(s, 100, schedule="cosine", warmup_steps=4) for s in range(4)] == [
        0.25,
        0.5,
        0.75,
        1.0,
    ]
    assert lr_factor(4, 100, schedule="cosine", warmup_steps=4) == 1.0
    assert lr_factor(52, 100, schedule="cosine", warmup_steps=4) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 48 / 96))
    )


def test_step_schedule_multiplies_by_gamma_at_milestones():
    values = [
        lr_factor(s, 100, schedule="step", milestones=[0.5, 0.75], gamma=0.1)
        for s in (0, 49, 50, 74, 75, 99)
    ]
    assert values == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_factor(0, 10, schedule="linear")
