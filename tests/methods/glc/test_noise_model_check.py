"""The noise model's ground-truth-free check: its shrinkage, its decision and its file field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autorobust.errors import DataError
from autorobust.methods.glc.noise_model import (
    NoiseModel,
    NoiseModelCheck,
    estimate_noise_model,
    noise_model_errors,
    shrink_noise_model,
    true_transition,
)

K = 4
COUNTS = np.array([600, 300, 120, 40])


def _symmetric(rate: float) -> np.ndarray:
    t = np.full((K, K), rate / (K - 1))
    np.fill_diagonal(t, 1 - rate)
    return t


def _simulate(
    seed: int, transition: np.ndarray, confusion: np.ndarray, meta_per_class: int = 10
) -> dict[str, np.ndarray]:
    """A pool with noise ``transition`` and a probe whose predicted class follows ``confusion``
    (rows: true class), as logits: N(0, 1) plus 8 on the predicted class."""
    rng = np.random.default_rng(seed)
    clean = np.repeat(np.arange(K), COUNTS)
    observed = (rng.random(len(clean))[:, None] > np.cumsum(transition[clean], 1)).sum(1)

    def logits(y: np.ndarray) -> np.ndarray:
        predicted = (rng.random(len(y))[:, None] > np.cumsum(confusion[y], 1)).sum(1)
        z = rng.normal(0.0, 1.0, (len(y), K))
        z[np.arange(len(y)), predicted] += 8.0
        return z

    meta_labels = np.repeat(np.arange(K), meta_per_class)
    return {
        "clean": clean,
        "observed": observed,
        "pool_logits": logits(clean),
        "meta_logits": logits(meta_labels),
        "meta_labels": meta_labels,
    }


def _estimate(data: dict[str, np.ndarray], **options) -> NoiseModel:
    return estimate_noise_model(
        observed_labels=data["observed"],
        num_classes=K,
        pool_logits=data["pool_logits"],
        meta_logits=data["meta_logits"],
        meta_labels=data["meta_labels"],
        resamples=40,
        **options,
    )


def test_no_noise_and_a_perfect_probe_is_rejected_to_the_observed_counts() -> None:
    model = _estimate(_simulate(0, np.eye(K), np.eye(K)), check=True)
    assert model.check is not None
    assert model.check.status == "rejected" and model.check.shrinkage == 0.0
    assert model.check.departure == 0.0
    np.testing.assert_array_equal(model.transition, np.eye(K))
    np.testing.assert_allclose(model.clean_counts, COUNTS)
    assert model.check.reason.startswith("rejected: ")


def test_strong_clean_evidence_is_used_unchanged() -> None:
    # A perfect probe and 40% noise: every resample gives the same estimate, spread ~0.
    data = _simulate(1, _symmetric(0.4), np.eye(K), meta_per_class=30)
    raw = _estimate(data)
    model = _estimate(data, check=True)
    assert raw.check is None
    assert model.check is not None and model.check.status == "used"
    assert model.check.shrinkage == 1.0
    np.testing.assert_allclose(model.clean_counts, raw.clean_counts)
    np.testing.assert_allclose(model.check.raw_clean_counts, raw.clean_counts)
    np.testing.assert_allclose(model.clean_counts, COUNTS, rtol=0.1)
    assert model.check.departure > 5 * model.check.spread  # measured 7.6 (the pool's resampling)


def test_shrinkage_mixes_the_joint_counts_with_no_noise() -> None:
    model = NoiseModel(
        transition=np.array([[0.8, 0.2], [0.0, 1.0]]),
        clean_counts=np.array([500.0, 500.0]),
        observed_counts=np.array([400, 600]),
    )
    half = shrink_noise_model(model, 0.5)
    # Joint counts: 0.5 [[400, 100], [0, 500]] + 0.5 [[400, 0], [0, 600]] = [[400, 50], [0, 550]].
    np.testing.assert_allclose(half.clean_counts, [450.0, 550.0])
    np.testing.assert_allclose(half.transition, [[400 / 450, 50 / 450], [0.0, 1.0]])
    none = shrink_noise_model(model, 0.0)
    np.testing.assert_allclose(none.transition, np.eye(2))
    np.testing.assert_allclose(none.clean_counts, [400.0, 600.0])
    full = shrink_noise_model(model, 1.0)
    np.testing.assert_allclose(full.transition, model.transition)
    np.testing.assert_allclose(full.clean_counts, model.clean_counts)
    with pytest.raises(ValueError, match=r"factor must be in \[0, 1\], got 1.5"):
        shrink_noise_model(model, 1.5)


def test_pool_target_fully_shrunk_is_no_noise() -> None:
    # M shrunk all the way to the pool's confusion per observed label explains C with T = I.
    overlap = np.eye(K)
    overlap[0, :2] = [0.6, 0.4]
    overlap[1, :2] = [0.3, 0.7]
    data = _simulate(2, _symmetric(0.4), overlap)
    model = _estimate(data, confusion_target="pool", pseudo_count=1e9, floor=0.0)
    observed = np.bincount(data["observed"], minlength=K)
    np.testing.assert_allclose(model.clean_counts, observed, rtol=1e-5)
    np.testing.assert_allclose(model.transition, np.eye(K), atol=1e-5)
    assert model.info["confusion_target"] == "pool"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_checked_prior_is_never_further_than_the_observed_counts(seed: int, rate: float) -> None:
    # Not at rate 0: the observed counts are then exact, and the check measured 0.008-0.024 TV.
    data = _simulate(seed, _symmetric(rate), np.eye(K) * 0.9 + 0.1 / K)
    truth = true_transition(data["clean"], data["observed"], K), COUNTS
    model = _estimate(data, check=True, confusion_target="pool")
    errors = noise_model_errors(model, *truth)
    assert errors["prior_total_variation"] <= errors["observed_prior_total_variation"] + 1e-9


def test_check_round_trips_and_old_files_load(tmp_path) -> None:
    model = _estimate(_simulate(3, _symmetric(0.4), np.eye(K)), check=True)
    path = model.save(tmp_path / "nm.json")
    loaded = NoiseModel.load(path)
    assert loaded.check == model.check
    np.testing.assert_array_equal(loaded.clean_counts, model.clean_counts)
    data = json.loads(path.read_text())
    assert data["check"]["status"] == "used"
    del data["check"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert NoiseModel.load(old).check is None
    data["check"] = {**model.check.to_dict(), "status": "maybe"}  # type: ignore[union-attr]
    old.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"old.json: check: status must be one of used, shrunk"):
        NoiseModel.load(old)


def test_check_refuses_too_few_resamples() -> None:
    with pytest.raises(ValueError, match=r"resamples must be an integer >= 20, got 5"):
        estimate_noise_model(
            observed_labels=np.array([0, 1]), num_classes=2, method="confusion",
            pool_logits=np.eye(2), correct_confusion=False, check=True, resamples=5,
        )  # fmt: skip


def test_check_is_deterministic_given_the_seed() -> None:
    data = _simulate(4, _symmetric(0.2), np.eye(K) * 0.8 + 0.2 / K)
    first, second = _estimate(data, check=True, seed=7), _estimate(data, check=True, seed=7)
    assert first.check == second.check
    assert isinstance(first.check, NoiseModelCheck)
