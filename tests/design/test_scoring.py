"""The design's meta score, its paired standard error and the one-standard-error choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autorobust.design.scoring import (
    ScoredDesign,
    balanced_log_loss,
    choose_within_one_standard_error,
    per_image_log_loss,
    weighted_difference,
)


def test_per_image_log_loss_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64) * 5
    labels = torch.randint(0, 4, (7,), generator=g)
    expected = F.cross_entropy(logits, labels, reduction="none").numpy()
    np.testing.assert_allclose(per_image_log_loss(logits.numpy(), labels.numpy()), expected)


def test_balanced_log_loss_by_hand() -> None:
    # class 0: losses 1 and 3 (mean 2); class 1: loss 5; class 2 absent -> (2 + 5) / 2.
    assert balanced_log_loss(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 1]), 3) == 3.5


def test_paired_difference_and_its_standard_error_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    a = np.array([1.0, 2.0, 3.0, 4.0, 8.0])
    b = np.array([0.0, 0.0, 3.0, 3.0, 3.0])
    # d = [1, 2 | 0, 1, 5]; class means 1.5 and 2 -> difference 1.75.
    # variances (ddof 1): class 0: 0.5, class 1: 7; SE^2 = 0.5 / (4 * 2) + 7 / (4 * 3).
    diff, se = weighted_difference(a, b, labels, 2)
    assert diff == pytest.approx(1.75)
    assert se == pytest.approx(np.sqrt(0.5 / 8 + 7 / 12))


def test_one_standard_error_rule_keeps_the_simplest_within_reach() -> None:
    labels = np.repeat([0, 1], 5)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.5, 10)
    noisy = np.tile([0.3, -0.3, 0.2, -0.2, 0.0], 2)  # zero mean within each class
    simple = ScoredDesign(key=0, complexity=(0, 1.0), losses=base)
    # A complex design better by far less than its paired error: the simple one is kept.
    close = ScoredDesign(key=1, complexity=(2, 1.0), losses=base - 0.01 + noisy)
    # A complex design better by much more than its paired error: it wins.
    far = ScoredDesign(key=2, complexity=(2, 1.0), losses=base - 0.5)
    best, chosen, rows = choose_within_one_standard_error([simple, close], labels, 2)
    assert chosen == 0
    assert {r["key"] for r in rows} == {0, 1}
    best, chosen, _ = choose_within_one_standard_error([simple, close, far], labels, 2)
    assert best == chosen == 2


def test_choice_needs_a_design() -> None:
    with pytest.raises(ValueError, match="no design"):
        choose_within_one_standard_error([], np.array([0]), 1)
