"""The noise model's estimators against exact cases, its file round trip and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autorobust.errors import ConfigError, DataError
from autorobust.methods.glc.noise_model import (
    NoiseModel,
    average_noise_models,
    confusion_matrix,
    estimate_clean_counts,
    estimate_noise_model,
    estimate_transition,
    estimate_transition_confusion,
    noise_model_errors,
    true_transition,
)

T = np.array([[0.7, 0.2, 0.1], [0.0, 0.9, 0.1], [0.3, 0.0, 0.7]])


def test_glc_rows_are_class_means_of_the_probabilities() -> None:
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.9, 0.0], [0.2, 0.2, 0.6], [0.0, 0.4, 0.6]]
    )
    labels = np.array([0, 0, 1, 2, 2])
    estimate = estimate_transition(probabilities, labels, 3)
    np.testing.assert_allclose(estimate, [[0.7, 0.2, 0.1], [0.1, 0.9, 0.0], [0.1, 0.3, 0.6]])
    np.testing.assert_allclose(estimate.sum(axis=1), 1.0)


def test_glc_class_without_meta_image_is_named() -> None:
    with pytest.raises(DataError, match=r"class 1 \('trouser'\) has no meta image"):
        estimate_transition(
            np.full((2, 3), 1 / 3), np.array([0, 2]), 3, class_names=["shirt", "trouser", "bag"]
        )


def test_true_transition_counts_the_realised_flips() -> None:
    clean = np.array([0, 0, 0, 0, 1, 1, 2])
    observed = np.array([0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(
        true_transition(clean, observed, 4),
        [[0.75, 0.25, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
    )


@st.composite
def _noise(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    k = draw(st.integers(2, 8))
    # Diagonally dominant rows (at most 45% noise) keep Tᵀ invertible, so n is identifiable.
    off = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=k * k, max_size=k * k)))
    off = off.reshape(k, k) * (1 - np.eye(k))
    rates = np.array(draw(st.lists(st.floats(0.0, 0.45), min_size=k, max_size=k)))
    sums = off.sum(axis=1, keepdims=True)
    t = np.where(sums > 0, off / np.where(sums > 0, sums, 1) * rates[:, None], 0.0)
    t[np.arange(k), np.arange(k)] = 1.0 - t.sum(axis=1)
    counts = np.array(draw(st.lists(st.integers(1, 5000), min_size=k, max_size=k)), float)
    return t, counts


@settings(max_examples=200, deadline=None)
@given(_noise())
def test_clean_counts_recovered_when_transition_is_exact(noise) -> None:
    t, counts = noise
    observed = t.T @ counts  # the expected observed counts
    estimate = estimate_clean_counts(t, observed, floor=0.0)
    np.testing.assert_allclose(estimate, counts, rtol=1e-6, atol=1e-6 * counts.sum())
    # Classes above the floor are unchanged by it.
    floored = estimate_clean_counts(t, observed, floor=1e-4)
    big = counts >= 1e-4 * counts.sum() / len(counts) * 1.01
    if big.all():
        np.testing.assert_allclose(floored, counts, rtol=1e-6, atol=1e-6 * counts.sum())


def test_floor_raises_a_class_lost_by_nnls_and_keeps_the_total() -> None:
    # Class 2's observed count is fully explained by the noise of classes 0 and 1.
    t = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    observed = t.T @ np.array([1000.0, 1000.0, 0.0])  # (900, 900, 200)
    assert estimate_clean_counts(t, observed, floor=0.0)[2] == pytest.approx(0.0, abs=1e-9)
    counts = estimate_clean_counts(t, observed)  # default floor 0.01 of N / K
    minimum = 0.01 * observed.sum() / 3
    assert counts[2] == pytest.approx(minimum)
    assert counts.sum() == pytest.approx(observed.sum())
    np.testing.assert_allclose(counts[:2], [1000 - minimum / 2] * 2, rtol=1e-9)
    assert (np.log(counts / counts.sum()) > -np.inf).all()


def test_confusion_estimate_is_exact_with_a_perfect_probe() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 3, 500)
    observed = np.array([rng.choice(3, p=T[c]) for c in clean])
    transition, counts = estimate_transition_confusion(clean, observed, 3)
    np.testing.assert_allclose(transition, true_transition(clean, observed, 3))
    np.testing.assert_allclose(counts, np.bincount(clean, minlength=3))


def test_corrected_confusion_undoes_a_known_probe_confusion() -> None:
    """C = Mᵀ diag(n) T exactly when ŷ and ỹ are independent given y (built with exact counts)."""
    m = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.2, 0.0, 0.8]])
    n = np.array([1000, 500, 200])
    pool_pred, pool_obs, clean = [], [], []
    for i in range(3):
        for j in range(3):
            for k in range(3):
                count = round(n[i] * m[i, j] * T[i, k])
                pool_pred += [j] * count
                pool_obs += [k] * count
                clean += [i] * count
    meta_labels = np.repeat(np.arange(3), 10)
    meta_pred = np.concatenate(
        [np.repeat(np.arange(3), np.round(10 * m[i]).astype(int)) for i in range(3)]
    )
    np.testing.assert_allclose(confusion_matrix(meta_pred, meta_labels, 3), m)
    one_hot = np.eye(3) * 5.0  # logits whose argmax is the prediction
    model = estimate_noise_model(
        observed_labels=np.array(pool_obs),
        num_classes=3,
        method="confusion",
        pool_logits=one_hot[pool_pred],
        meta_logits=one_hot[meta_pred],
        meta_labels=meta_labels,
        pseudo_count=0.0,  # M is exact here: undo it fully
    )
    assert model.method == "confusion_corrected"
    np.testing.assert_allclose(model.transition, T, atol=1e-9)
    np.testing.assert_allclose(model.clean_counts, n, rtol=1e-9)
    uncorrected = estimate_noise_model(
        observed_labels=np.array(pool_obs),
        num_classes=3,
        pool_logits=one_hot[pool_pred],
        correct_confusion=False,
    )
    assert uncorrected.method == "confusion"
    assert np.abs(uncorrected.transition - T).sum(axis=1).max() > 0.1


def test_glc_of_a_logit_adjusted_probe_uses_its_noisy_posterior() -> None:
    """A probe trained with logit adjustment at the observed prior π̃ fits softmax(z + τ log π̃)
    to the noisy labels; GLC must average that, not softmax(z)."""
    observed = np.array([0] * 60 + [1] * 30 + [2] * 10)
    prior = np.array([0.6, 0.3, 0.1])
    meta_labels = np.array([0, 1, 2])
    posterior = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    z = np.log(posterior) - 0.5 * np.log(prior)  # the balanced logits of a τ = 0.5 probe
    model = estimate_noise_model(
        observed_labels=observed,
        num_classes=3,
        method="glc",
        meta_logits=z,
        meta_labels=meta_labels,
        probe_tau=0.5,
    )
    np.testing.assert_allclose(model.transition, posterior, rtol=1e-12)
    assert model.method == "glc" and model.info["probe_tau"] == 0.5


def test_confusion_shrinks_towards_identity_by_pseudo_counts() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 1, 1, 0, 1])
    np.testing.assert_allclose(
        confusion_matrix(predicted, labels, 3), [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]]
    )
    # Class 0: (2 + 4, 2) / (4 + 4); class 1: (1, 1 + 4) / (2 + 4); class 2: identity.
    np.testing.assert_allclose(
        confusion_matrix(predicted, labels, 3, pseudo_count=4.0),
        [[0.75, 0.25, 0], [1 / 6, 5 / 6, 0], [0, 0, 1]],
    )


def test_errors_by_hand() -> None:
    model = NoiseModel(
        transition=np.array([[0.6, 0.4], [0.1, 0.9]]),
        clean_counts=np.array([30.0, 70.0]),
        observed_counts=np.array([25, 75]),
    )
    errors = noise_model_errors(model, np.array([[0.8, 0.2], [0.0, 1.0]]), np.array([50, 50]))
    np.testing.assert_allclose(errors["transition_row_l1"], [0.4, 0.2])
    assert errors["transition_row_l1_max"] == pytest.approx(0.4)
    assert errors["transition_row_l1_mean"] == pytest.approx(0.3)
    np.testing.assert_allclose(errors["transition_diagonal_error"], [-0.2, -0.1])
    assert errors["transition_diagonal_error_min"] == pytest.approx(-0.2)
    assert errors["prior_total_variation"] == pytest.approx(0.2)
    assert errors["observed_prior_total_variation"] == pytest.approx(0.25)
    np.testing.assert_allclose(errors["prior_log_ratio"], [np.log(0.6), np.log(1.4)])
    assert errors["prior_log_ratio_max"] == pytest.approx(-np.log(0.6))
    json.dumps(errors, allow_nan=False)


def _model() -> NoiseModel:
    return NoiseModel(
        transition=T.copy(),
        clean_counts=np.array([600.0, 300.0, 100.0]),
        observed_counts=np.array([450, 390, 160]),
        method="glc",
        info={"floor": 0.01},
    )


def test_json_round_trip_is_exact_and_atomic(tmp_path) -> None:
    path = _model().save(tmp_path / "noise_model.json")
    assert [p.name for p in tmp_path.iterdir()] == ["noise_model.json"]
    loaded = NoiseModel.load(path)
    np.testing.assert_array_equal(loaded.transition, T)
    np.testing.assert_array_equal(loaded.clean_counts, [600.0, 300.0, 100.0])
    np.testing.assert_array_equal(loaded.observed_counts, [450, 390, 160])
    assert loaded.method == "glc" and loaded.info == {"floor": 0.01}
    np.testing.assert_allclose(loaded.prior, [0.6, 0.3, 0.1])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="other"), r"not an autorobust noise model"),
        (lambda d: d.update(version=2), r"unsupported version 2, expected 1"),
        (lambda d: d.pop("clean_counts"), r"missing clean_counts"),
        (lambda d: d.update(num_classes=4), r"transition must be 4 x 4 \(.*\), got shape \(3, 3\)"),
        (lambda d: d["transition"][1].__setitem__(0, 0.5), r"transition row 1 sums to 1.5, exp"),
        (lambda d: d["transition"][2].__setitem__(1, "x"), r"transition must hold numbers only"),
        (lambda d: d.update(clean_counts=[1.0, 0.0, 2.0]), r"clean_counts must be > 0 .*class 1"),
        (lambda d: d.update(observed_counts=[1.5, 2, 3]), r"observed_counts must be integers"),
        (lambda d: d.update(clean_counts=[1.0, 2.0]),
         r"clean_counts and observed_counts must have 3 entries"),
    ],
)  # fmt: skip
def test_malformed_file_is_refused_in_one_line_naming_it(tmp_path, edit, message) -> None:
    data = _model().to_dict()
    edit(data)
    path = tmp_path / "nm.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"^noise model {path}: {message}") as info:
        NoiseModel.load(path)
    assert "\n" not in str(info.value)


def test_unreadable_files_are_refused(tmp_path) -> None:
    with pytest.raises(DataError, match=r"nope.json: no such file"):
        NoiseModel.load(tmp_path / "nope.json")
    text = tmp_path / "text.json"
    text.write_text("transition: [[1]]")
    with pytest.raises(DataError, match=r"text.json: not a JSON file"):
        NoiseModel.load(text)
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(_model().to_dict()).replace("0.7", "NaN", 1))
    with pytest.raises(DataError, match=r"nan.json: not a JSON file \(NaN is not a number"):
        NoiseModel.load(nan)


def test_constructor_validates() -> None:
    with pytest.raises(ConfigError, match=r"noise model: transition\[0\]\[1\] is negative"):
        NoiseModel(
            transition=np.array([[1.5, -0.5], [0.0, 1.0]]),
            clean_counts=np.ones(2),
            observed_counts=np.ones(2, dtype=int),
        )


def test_the_average_of_two_noise_models_averages_their_joint_counts() -> None:
    observed = np.array([50, 30, 20])
    a = NoiseModel(
        transition=np.array([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.1, 0.0, 0.9]]),
        clean_counts=np.array([60.0, 20.0, 20.0]),
        observed_counts=observed,
    )
    b = NoiseModel(
        transition=np.eye(3), clean_counts=np.array([50.0, 30.0, 20.0]), observed_counts=observed
    )
    average = average_noise_models([a, b], info={"from": "test"})
    # Clean counts: the mean; class 0's row: (60 * [0.8, 0.2, 0] + 50 * [1, 0, 0]) / 2 / 55.
    np.testing.assert_allclose(average.clean_counts, [55.0, 25.0, 20.0])
    np.testing.assert_allclose(average.transition[0], [98 / 110, 12 / 110, 0.0])
    np.testing.assert_allclose(average.transition[1], [0.0, 1.0, 0.0])
    assert average.method == "average" and average.info == {"from": "test"}
    # Its prior's total variation from any prior is at most the mean of the two (convexity).
    truth = np.array([0.7, 0.2, 0.1])
    tv = lambda m: 0.5 * np.abs(m.prior - truth).sum()  # noqa: E731
    assert tv(average) <= (tv(a) + tv(b)) / 2 + 1e-12
    with pytest.raises(ValueError, match="different observed counts"):
        average_noise_models([a, NoiseModel(np.eye(3), np.ones(3), np.array([1, 1, 1]))])
    with pytest.raises(ValueError, match="at least one"):
        average_noise_models([])
