from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autorobust.data.shift import (
    apply_label_noise,
    imbalance_indices,
    long_tail_counts,
    noise_transition_matrix,
    step_counts,
)
from autorobust.errors import ShiftError

seeds = st.integers(0, 2**32 - 1)
fast = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------- imbalance profiles


def test_long_tail_counts_cifar10_rho100() -> None:
    # Cao et al.'s CIFAR-10-LT (rho = 100) class sizes.
    expected = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    np.testing.assert_array_equal(long_tail_counts(5000, 10, 100), expected)
    assert long_tail_counts(5000, 10, 100).dtype == np.int64


def test_long_tail_counts_integer_products_are_not_floored_down() -> None:
    # 3000 * 100**-0.5 is 300 in exact arithmetic but may come out as 299.999... in floats.
    np.testing.assert_array_equal(long_tail_counts(3000, 5, 100), [3000, 948, 300, 94, 30])


def test_long_tail_counts_identity_and_single_class() -> None:
    np.testing.assert_array_equal(long_tail_counts(7, 4, 1.0), [7, 7, 7, 7])
    np.testing.assert_array_equal(long_tail_counts(7, 1, 50.0), [7])


def test_step_counts_last_classes_are_minority() -> None:
    np.testing.assert_array_equal(step_counts(100, 10, 10), [100] * 5 + [10] * 5)
    # ceil(10 * 0.3) = 3 minority classes, although 10 * 0.3 = 3.0000000000000004 in floats.
    np.testing.assert_array_equal(step_counts(100, 10, 10, mu=0.3), [100] * 7 + [10] * 3)
    np.testing.assert_array_equal(step_counts(100, 5, 3, mu=0.5), [100, 100, 33, 33, 33])
    np.testing.assert_array_equal(step_counts(9, 4, 1.0), [9, 9, 9, 9])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: long_tail_counts(100, 10, 0.5), r"rho must be .* >= 1, got 0.5"),
        (lambda: long_tail_counts(100, 0, 10), r"num_classes must be >= 1, got 0"),
        (lambda: long_tail_counts(0, 10, 10), r"n_max must be a positive integer, got 0"),
        (
            lambda: long_tail_counts(50, 10, 100),
            r"class 8 would have 0 training examples: n_max=50, rho=100",
        ),
        (
            lambda: step_counts(50, 10, 100),
            r"class 5 would have 0 training examples: n_max=50, rho=100",
        ),
        (lambda: step_counts(100, 10, 10, mu=0.0), r"mu .* must lie in \(0, 1\), got 0.0"),
        (lambda: step_counts(100, 10, 10, mu=1.0), r"mu .* must lie in \(0, 1\), got 1.0"),
        (lambda: step_counts(100, 10, 10, mu=0.95), r"mu=0.95 makes all 10 classes minority"),
    ],
)
def test_profile_errors(call, match: str) -> None:
    with pytest.raises(ShiftError, match=match):
        call()


@fast
@given(
    seed=seeds,
    num_classes=st.integers(1, 12),
    rho=st.floats(1.0, 50.0),
    head=st.integers(0, 40),
    extra=st.integers(0, 5),
)
def test_imbalance_gives_exact_long_tail_counts(
    seed: int, num_classes: int, rho: float, head: int, extra: int
) -> None:
    n_max = math.ceil(rho) + head  # keeps floor(n_max / rho) >= 1
    counts = long_tail_counts(n_max, num_classes, rho)
    # floor(n_max / rho), up to float rounding: rho = 1 + 2**-52 must not lose the last image.
    tail = n_max if num_classes == 1 else math.floor(n_max / rho + 1e-9)
    assert counts[0] == n_max and counts[-1] == tail
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(num_classes), n_max + extra))
    index = imbalance_indices(labels, counts, np.random.default_rng(seed))
    np.testing.assert_array_equal(np.bincount(labels[index], minlength=num_classes), counts)
    assert index.dtype == np.int64
    assert np.all(np.diff(index) > 0)  # sorted, no repeats
    again = imbalance_indices(labels, counts, np.random.default_rng(seed))
    np.testing.assert_array_equal(index, again)


def test_imbalance_indices_errors() -> None:
    labels = np.repeat(np.arange(4), 5)
    with pytest.raises(ShiftError, match=r"counts\[3\]=6 exceeds the 5 examples of class 3"):
        imbalance_indices(labels, np.array([5, 5, 5, 6]), np.random.default_rng(0))
    with pytest.raises(ShiftError, match=r"counts\[1\] must be >= 0, got -1"):
        imbalance_indices(labels, np.array([5, -1, 5, 5]), np.random.default_rng(0))
    with pytest.raises(ShiftError, match=r"labels must lie in \[0, 3\)"):
        imbalance_indices(labels, np.array([5, 5, 5]), np.random.default_rng(0))


# ---------------------------------------------------------------- transition matrices


def test_symmetric_matrix() -> None:
    t = noise_transition_matrix("symmetric", 0.4, 5)
    np.testing.assert_allclose(np.diag(t), 0.6)
    np.testing.assert_allclose(t[0, 1:], 0.1)
    np.testing.assert_allclose(t.sum(axis=1), 1.0)


def test_symmetric_including_true_class_reproduces_mwnet_code() -> None:
    t = noise_transition_matrix("symmetric", 0.4, 5, include_true_class=True)
    np.testing.assert_allclose(t, 0.6 * np.eye(5) + 0.08)
    # MW-Net's realised flip rate is p (K - 1) / K.
    np.testing.assert_allclose(1 - np.diag(t), 0.4 * 4 / 5)


def test_pair_matrix() -> None:
    t = noise_transition_matrix("pair", 0.3, 4)
    expected = 0.7 * np.eye(4) + 0.3 * np.roll(np.eye(4), 1, axis=1)
    np.testing.assert_allclose(t, expected)
    assert t[3, 0] == pytest.approx(0.3)


def test_user_matrix_is_validated_and_copied() -> None:
    m = np.array([[0.9, 0.1], [0.2, 0.8]])
    t = noise_transition_matrix("matrix", 0.0, 2, matrix=m)
    np.testing.assert_array_equal(t, m)
    assert t is not m


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(kind="symmetric", rate=1.2), r"noise rate must lie in \[0, 1\), got 1.2"),
        (dict(kind="symmetric", rate=-0.1), r"noise rate must lie in \[0, 1\), got -0.1"),
        (dict(kind="pair", rate=0.5), r"pair-flip noise rate must be < 0.5 .* got 0.5"),
        (dict(kind="symmetric", rate=0.2, num_classes=1), r"needs num_classes >= 2, got 1"),
        (dict(kind="matrix", rate=0.0), r"noise matrix is required"),
        (dict(kind="gaussian", rate=0.1), r"noise kind must be one of .* got 'gaussian'"),
        (
            dict(kind="matrix", rate=0.0, matrix=np.array([[1.0, 0.0], [0.5, 0.4]])),
            r"noise matrix row 1 sums to 0.9, expected 1",
        ),
        (
            dict(kind="matrix", rate=0.0, matrix=np.array([[1.2, -0.2], [0.0, 1.0]])),
            r"noise matrix\[0\]\[1\] is negative \(-0.2\)",
        ),
        (
            dict(kind="matrix", rate=0.0, matrix=np.eye(3)),
            r"noise matrix must be 2 x 2 \(one row per class\), got shape \(3, 3\)",
        ),
    ],
)
def test_noise_matrix_errors(kwargs: dict, match: str) -> None:
    kwargs.setdefault("num_classes", 2)
    with pytest.raises(ShiftError, match=match):
        noise_transition_matrix(**kwargs)


# ---------------------------------------------------------------- applying noise


def _class_sizes(draw_sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(draw_sizes)), draw_sizes)


noise_cases = st.fixed_dictionaries(
    {
        "seed": seeds,
        "sizes": st.lists(st.integers(0, 40), min_size=2, max_size=10),
        "rate": st.floats(0.0, 0.99),
        "kind": st.sampled_from(["symmetric", "pair", "symmetric_all", "matrix"]),
    }
)


def _matrix_for(case: dict) -> np.ndarray:
    k, rate, kind = len(case["sizes"]), case["rate"], case["kind"]
    if kind == "pair":
        return noise_transition_matrix("pair", min(rate, 0.49), k)
    if kind == "symmetric_all":
        return noise_transition_matrix("symmetric", rate, k, include_true_class=True)
    if kind == "matrix":
        m = np.random.default_rng(case["seed"]).dirichlet(np.ones(k), size=k)
        return noise_transition_matrix("matrix", 0.0, k, matrix=m)
    return noise_transition_matrix("symmetric", rate, k)


@fast
@given(case=noise_cases)
def test_noise_counts_are_exact_for_any_seed(case: dict) -> None:
    k = len(case["sizes"])
    clean = np.random.default_rng(case["seed"]).permutation(_class_sizes(case["sizes"]))
    t = _matrix_for(case)
    noisy = apply_label_noise(clean, t, np.random.default_rng(case["seed"]))

    np.testing.assert_array_equal(noisy.clean, clean)
    assert noisy.observed.dtype == np.int64 and noisy.clean.dtype == np.int64
    np.testing.assert_array_equal(noisy.noise_mask, noisy.observed != clean)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (clean, noisy.observed), 1)
    n_c = np.asarray(case["sizes"])
    # Every (clean c -> observed j) count is within 1 of n_c T[c, j] ...
    assert np.all(np.abs(confusion - n_c[:, None] * t) < 1)
    # ... so every class's flip count is within 1 of its expected number.
    flips = n_c - np.diag(confusion)
    assert np.all(np.abs(flips - n_c * (1 - np.diag(t))) < 1)
    assert noisy.realised_rate == pytest.approx(flips.sum() / max(n_c.sum(), 1))


@fast
@given(seed=seeds, k=st.integers(2, 10), n=st.integers(1, 30), rate=st.floats(0.01, 0.99))
def test_symmetric_noise_spreads_flips_over_the_other_classes(
    seed: int, k: int, n: int, rate: float
) -> None:
    clean = np.repeat(np.arange(k), n)
    noisy = apply_label_noise(
        clean, noise_transition_matrix("symmetric", rate, k), np.random.default_rng(seed)
    )
    flips = np.bincount(clean[noisy.noise_mask], minlength=k)
    assert np.all(np.abs(flips - rate * n) < 1)
    # Targets of the flips are spread over the other classes, each within 1 of p n / (K - 1).
    for c in range(k):
        targets = np.bincount(noisy.observed[clean == c], minlength=k)
        off = np.delete(targets, c)
        assert np.all(np.abs(off - rate * n / (k - 1)) < 1)


@fast
@given(seed=seeds, k=st.integers(2, 10), n=st.integers(1, 30), rate=st.floats(0.0, 0.49))
def test_pair_noise_only_maps_to_next_class(seed: int, k: int, n: int, rate: float) -> None:
    clean = np.repeat(np.arange(k), n)
    noisy = apply_label_noise(
        clean, noise_transition_matrix("pair", rate, k), np.random.default_rng(seed)
    )
    flipped = noisy.noise_mask
    np.testing.assert_array_equal(noisy.observed[flipped], (clean[flipped] + 1) % k)
    assert np.all(np.abs(np.bincount(clean[flipped], minlength=k) - rate * n) < 1)


@fast
@given(case=noise_cases)
def test_noise_is_deterministic_under_a_seed(case: dict) -> None:
    clean = _class_sizes(case["sizes"])
    t = _matrix_for(case)
    a = apply_label_noise(clean, t, np.random.default_rng(case["seed"]))
    b = apply_label_noise(clean, t, np.random.default_rng(case["seed"]))
    np.testing.assert_array_equal(a.observed, b.observed)


def test_tail_class_of_five_gets_exactly_two_flips_at_forty_percent() -> None:
    clean = np.repeat(np.arange(10), 5)
    t = noise_transition_matrix("symmetric", 0.4, 10)
    for seed in range(20):
        noisy = apply_label_noise(clean, t, np.random.default_rng(seed))
        np.testing.assert_array_equal(np.bincount(clean[noisy.noise_mask], minlength=10), [2] * 10)
        assert noisy.realised_rate == pytest.approx(0.4)


def test_zero_rate_and_empty_labels() -> None:
    clean = np.array([0, 1, 2, 1])
    noisy = apply_label_noise(
        clean, noise_transition_matrix("symmetric", 0.0, 3), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(noisy.observed, clean)
    assert noisy.realised_rate == 0.0
    empty = apply_label_noise(np.zeros(0, dtype=np.int64), np.eye(3), np.random.default_rng(0))
    assert empty.observed.shape == (0,) and empty.realised_rate == 0.0


def test_apply_label_noise_errors() -> None:
    with pytest.raises(ShiftError, match=r"labels must lie in \[0, 2\) .* found 0..2"):
        apply_label_noise(np.array([0, 1, 2]), np.eye(2), np.random.default_rng(0))
    with pytest.raises(ShiftError, match=r"must be square \(K, K\), got shape \(2, 3\)"):
        apply_label_noise(np.array([0, 1]), np.ones((2, 3)) / 3, np.random.default_rng(0))
    with pytest.raises(ShiftError, match=r"row 0 sums to 2"):
        apply_label_noise(
            np.array([0, 1]), np.array([[1.0, 1.0], [0, 1]]), np.random.default_rng(0)
        )
