"""Temperature scaling on the meta set: the fitted temperature and the ``calibration`` block."""

from __future__ import annotations

import numpy as np
import pytest

import autorobust
from autorobust.design import scoring
from autorobust.train.calibration import (
    balanced_mean,
    calibration_report,
    fit_temperature,
    per_image_log_loss,
    softmax,
)


def _logits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident logits (scaled by 4) of 3 classes, 60 images, 70% right, imbalanced labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], [30, 20, 10])
    logits = rng.normal(size=(60, 3))
    right = rng.random(60) < 0.7
    logits[np.arange(60)[right], labels[right]] += 2.0
    return 4.0 * logits, labels


def test_the_temperature_is_the_grid_minimum_of_the_balanced_log_loss() -> None:
    logits, labels = _logits()
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 4001))
    losses = [balanced_mean(per_image_log_loss(logits / t, labels), labels, 3) for t in grid]
    best = grid[int(np.argmin(losses))]
    fitted = fit_temperature(logits, labels, 3)
    assert fitted == pytest.approx(best, rel=2e-3)
    assert fitted > 1.5  # the logits were made over-confident


def test_the_design_score_uses_the_same_function() -> None:
    assert scoring.fit_temperature is fit_temperature
    assert scoring.per_image_log_loss is per_image_log_loss
    assert scoring.balanced_mean is balanced_mean


def test_the_report_before_and_after() -> None:
    logits, labels = _logits(1)
    report = calibration_report(logits, labels, 3)
    t = report["temperature"]
    assert t == pytest.approx(fit_temperature(logits, labels, 3))
    assert report["nll_before"] == pytest.approx(
        balanced_mean(per_image_log_loss(logits, labels), labels, 3)
    )
    assert report["nll_after"] == pytest.approx(
        balanced_mean(per_image_log_loss(logits / t, labels), labels, 3)
    )
    assert report["nll_after"] < report["nll_before"]
    assert report["expected_calibration_error_after"] < report["expected_calibration_error_before"]
    assert report["num_bins"] == 15 and report["fitted_on"] == "meta"
    np.testing.assert_allclose(softmax(logits, t).sum(axis=1), 1.0)
    np.testing.assert_array_equal(softmax(logits, t).argmax(1), logits.argmax(1))


def test_every_run_stores_its_calibration(tmp_path) -> None:
    config = autorobust.load_config(
        "demo",
        [
            "train.epochs=1",
            "train.progress=false",
            "train.threads=1",
            "device=cpu",
            "model.options.width=8",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    calibration = autorobust.train_run(config, evaluate_test=False).metrics["calibration"]
    assert set(calibration) == {
        "temperature",
        "expected_calibration_error_before",
        "expected_calibration_error_after",
        "nll_before",
        "nll_after",
        "num_bins",
        "fitted_on",
    }
    assert 0.05 <= calibration["temperature"] <= 20.0
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
