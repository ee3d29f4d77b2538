"""The design's meta score, its paired standard error and the one-standard-error choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autorobust.design.scoring import (
    ENSEMBLE_KEY,
    FinalistChoice,
    ScoredDesign,
    balanced_mean,
    calibrated_log_loss,
    choose_finalist,
    choose_within_one_standard_error,
    fit_temperature,
    per_image_log_loss,
    per_image_score,
    scored_balanced_mean,
    stratified_folds,
    weighted_difference,
)


def test_per_image_log_loss_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64) * 5
    labels = torch.randint(0, 4, (7,), generator=g)
    expected = F.cross_entropy(logits, labels, reduction="none").numpy()
    np.testing.assert_allclose(per_image_log_loss(logits.numpy(), labels.numpy()), expected)


def test_balanced_mean_by_hand() -> None:
    # class 0: losses 1 and 3 (mean 2); class 1: loss 5; class 2 absent -> (2 + 5) / 2.
    assert balanced_mean(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 1]), 3) == 3.5


def test_stratified_folds_deal_each_class_round_robin() -> None:
    labels = np.array([2, 0, 0, 2, 0, 1, 0])
    # class 0 at positions 1, 2, 4, 6 -> folds 0, 1, 2, 0; class 1 -> 0; class 2 -> 0, 1.
    np.testing.assert_array_equal(stratified_folds(labels, 3), [0, 0, 1, 1, 2, 0, 0])


def _noisy_logits(n_per_class: int, k: int, scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_class)
    logits = rng.normal(size=(len(labels), k))
    logits[np.arange(len(labels)), labels] += 1.0
    return logits * scale, labels


def test_fit_temperature_minimises_the_balanced_log_loss_on_a_grid() -> None:
    logits, labels = _noisy_logits(8, 4, scale=0.3)  # under-confident: T < 1 is better
    t = fit_temperature(logits, labels, 4)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    losses = [balanced_mean(per_image_log_loss(logits / g, labels), labels, 4) for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(losses))], rel=2e-3)
    assert t < 1.0


def test_calibrated_log_loss_scores_each_fold_at_the_other_folds_temperature() -> None:
    logits, labels = _noisy_logits(6, 3, scale=4.0, seed=1)
    losses = calibrated_log_loss(logits, labels, 3, folds=3)
    fold = stratified_folds(labels, 3)
    for f in range(3):
        held = fold == f
        t = fit_temperature(logits[~held], labels[~held], 3)
        np.testing.assert_allclose(losses[held], per_image_log_loss(logits[held] / t, labels[held]))
    # Scaling a design's logits (more or less confident, same ranking) barely moves its score;
    # the raw log-loss moves a lot.
    sharper = calibrated_log_loss(3.0 * logits, labels, 3, folds=3)
    assert balanced_mean(sharper, labels, 3) == pytest.approx(
        balanced_mean(losses, labels, 3), abs=0.02
    )
    raw_gap = balanced_mean(per_image_log_loss(3.0 * logits, labels), labels, 3) - balanced_mean(
        per_image_log_loss(logits, labels), labels, 3
    )
    assert abs(raw_gap) > 0.5


def test_calibrated_log_loss_fits_one_temperature_with_one_image_per_class() -> None:
    logits, labels = _noisy_logits(1, 4, scale=2.0)
    t = fit_temperature(logits, labels, 4)
    np.testing.assert_allclose(
        calibrated_log_loss(logits, labels, 4), per_image_log_loss(logits / t, labels)
    )


def test_per_image_error_and_unknown_score() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    labels = np.array([0, 0, 1])
    np.testing.assert_array_equal(per_image_score(logits, labels, 2, "error"), [0.0, 1.0, 1.0])
    np.testing.assert_allclose(
        per_image_score(logits, labels, 2, "log_loss"), per_image_log_loss(logits, labels)
    )
    with pytest.raises(ValueError, match="unknown meta score 'accuracy'"):
        per_image_score(logits, labels, 2, "accuracy")  # type: ignore[arg-type]


def test_paired_difference_and_its_standard_error_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    a = np.array([1.0, 2.0, 3.0, 4.0, 8.0])
    b = np.array([0.0, 0.0, 3.0, 3.0, 3.0])
    # d = [1, 2 | 0, 1, 5]; class means 1.5 and 2 -> difference 1.75.
    # variances (ddof 1): class 0: 0.5, class 1: 7; SE^2 = 0.5 / (4 * 2) + 7 / (4 * 3).
    diff, se = weighted_difference(a, b, labels, 2)
    assert diff == pytest.approx(1.75)
    assert se == pytest.approx(np.sqrt(0.5 / 8 + 7 / 12))


def test_a_cross_fitted_design_is_compared_on_the_images_it_is_scored_on() -> None:
    labels = np.array([0, 0, 1, 1, 1, 0])
    a = np.array([1.0, 2.0, 3.0, 4.0, 8.0, np.nan])
    b = np.array([0.0, 0.0, 3.0, 3.0, 3.0, 9.0])
    # The NaN image is left out of the difference: the pairs of the test above.
    diff, se = weighted_difference(a, b, labels, 2)
    assert diff == pytest.approx(1.75)
    assert se == pytest.approx(np.sqrt(0.5 / 8 + 7 / 12))
    assert scored_balanced_mean(a, labels, 2) == pytest.approx((1.5 + 5.0) / 2)
    assert scored_balanced_mean(b, labels, 2) == pytest.approx((3.0 + 3.0) / 2)
    best, chosen, rows = choose_within_one_standard_error(
        [ScoredDesign(0, (0, 1.0), b), ScoredDesign(1, (1, 1.0), a)], labels, 2
    )
    assert best == chosen == 0
    assert {r["key"]: r["score"] for r in rows}[1] == pytest.approx(3.25)


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


def test_the_ensemble_is_one_more_finalist_of_the_one_standard_error_rule() -> None:
    """A simpler, worse finalist within one standard error of the best is kept over it; the
    ensemble beats that one by more than an error but not the best finalist: the best finalist is
    kept (compared with the kept finalist alone, the ensemble would have won)."""
    labels = np.repeat([0, 1], 5)
    base = np.random.default_rng(0).uniform(0.5, 1.5, 10)
    wiggle = np.tile([0.3, -0.3, 0.2, -0.2, 0.0], 2)  # zero mean within each class
    simple = ScoredDesign(0, (2, 1.0), base + 0.12 + 1.6 * wiggle)
    best = ScoredDesign(1, (3, 1.0), base)
    ensemble = ScoredDesign(ENSEMBLE_KEY, (4, 2.0), base - 0.01 + 0.3 * wiggle)
    diff, se = weighted_difference(simple.losses, best.losses, labels, 2)
    assert 0.0 < diff <= se  # the simpler finalist is within reach of the best
    assert choose_within_one_standard_error([simple, best], labels, 2)[1] == 0
    diff, se = weighted_difference(ensemble.losses, simple.losses, labels, 2)
    assert diff + se < 0.0  # the ensemble beats the simpler finalist by more than an error
    diff, se = weighted_difference(ensemble.losses, best.losses, labels, 2)
    assert -se <= diff < 0.0  # but not the best finalist
    choice = choose_finalist([simple, best], ensemble, labels, 2)
    assert (choice.kept, choice.ensemble_kept, choice.best_single) == (1, False, 1)
    assert [row["key"] for row in choice.rows] == [0, 1, ENSEMBLE_KEY]
    # Far better than every finalist, it is kept; the design it names is the finalists' choice.
    far = ScoredDesign(ENSEMBLE_KEY, (4, 2.0), base - 0.5)
    assert choose_finalist([simple, best], far, labels, 2) == FinalistChoice(
        0, True, 1, choose_within_one_standard_error([simple, best, far], labels, 2)[2]
    )
    # Without the rule the best score wins, the ensemble's included.
    choice = choose_finalist([simple, best], ensemble, labels, 2, one_standard_error=False)
    assert (choice.kept, choice.ensemble_kept) == (1, True)
    # No ensemble: the finalists' own choice.
    assert choose_finalist([simple, best], None, labels, 2).kept == 0
