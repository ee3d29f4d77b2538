from __future__ import annotations

import json

import numpy as np
import pytest

from autorobust.data.base import ImageDataset, SourceData
from autorobust.data.shift import long_tail_counts
from autorobust.data.splits import Splits, make_splits
from autorobust.errors import ConfigError, ShiftError

K = 5


def _dataset(per_class: list[int], seed: int, offset: int = 0) -> ImageDataset:
    labels = np.random.default_rng(seed).permutation(
        np.repeat(np.arange(len(per_class)), per_class)
    )
    n = len(labels)
    images = np.zeros((n, 3, 3, 1), dtype=np.uint8)
    # Every image encodes its own index, so a split's images can be traced back to the source.
    index = np.arange(n) + offset
    images[:, 0, 0, 0] = index % 256
    images[:, 0, 1, 0] = index // 256
    groups = (np.arange(n) % 2).astype(np.int64)
    return ImageDataset(images, labels.astype(np.int64), groups)


@pytest.fixture(scope="module")
def source() -> SourceData:
    return SourceData(
        train=_dataset([60, 55, 50, 45, 40], seed=0),
        test=_dataset([8] * K, seed=1, offset=1000),
        class_names=tuple(f"c{i}" for i in range(K)),
    )


def _decode(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 1, 0].astype(np.int64)


def _noisy_long_tail(source: SourceData, **overrides) -> Splits:
    kwargs = dict(
        meta_per_class=4,
        imbalance="long_tail",
        rho=10.0,
        noise="symmetric",
        noise_rate=0.4,
        unlabeled_fraction=0.25,
        seed=7,
    )
    kwargs.update(overrides)
    return make_splits(source, **kwargs)


def test_sizes_counts_and_disjointness(source: SourceData) -> None:
    splits = _noisy_long_tail(source)
    # n_max defaults to the smallest class left after the meta set: 40 - 4 = 36.
    expected = long_tail_counts(36, K, 10.0)
    np.testing.assert_array_equal(expected, [36, 20, 11, 6, 3])
    np.testing.assert_array_equal(np.bincount(splits.train.clean_labels, minlength=K), expected)
    assert len(splits.train) == expected.sum()
    assert len(splits.meta) == 4 * K
    assert splits.meta_index.shape == (4 * K,)
    assert np.intersect1d(splits.meta_index, splits.train.source_index).size == 0
    # The images really are the source's images at those positions.
    np.testing.assert_array_equal(_decode(splits.train.images), splits.train.source_index)
    np.testing.assert_array_equal(_decode(splits.meta.images), splits.meta_index)
    np.testing.assert_array_equal(
        splits.train.clean_labels, source.train.labels[splits.train.source_index]
    )
    np.testing.assert_array_equal(
        splits.train.groups, source.train.groups[splits.train.source_index]
    )
    assert splits.num_classes == K and splits.class_names == source.class_names


def test_meta_set_is_clean_and_balanced(source: SourceData) -> None:
    splits = _noisy_long_tail(source)
    np.testing.assert_array_equal(np.bincount(splits.meta.labels, minlength=K), [4] * K)
    np.testing.assert_array_equal(splits.meta.labels, source.train.labels[splits.meta_index])
    np.testing.assert_array_equal(splits.meta.groups, source.train.groups[splits.meta_index])


def test_test_split_is_untouched(source: SourceData) -> None:
    splits = _noisy_long_tail(source)
    assert splits.test is source.test


def test_noise_is_applied_to_train_only_with_exact_counts(source: SourceData) -> None:
    splits = _noisy_long_tail(source)
    pool = splits.train
    np.testing.assert_array_equal(pool.noise_mask, pool.labels != pool.clean_labels)
    flips = np.bincount(pool.clean_labels[pool.noise_mask], minlength=K)
    n_c = np.bincount(pool.clean_labels, minlength=K)
    assert np.all(np.abs(flips - 0.4 * n_c) < 1)
    np.testing.assert_array_equal(splits.train_class_counts, np.bincount(pool.labels, minlength=K))
    assert splits.train_class_counts.dtype == np.int64
    assert pool.realised_noise_rate == pytest.approx(flips.sum() / n_c.sum())


def test_meta_and_training_images_do_not_depend_on_noise_settings(source: SourceData) -> None:
    base = _noisy_long_tail(source)
    for overrides in (
        dict(noise="none", noise_rate=0.0),
        dict(noise="pair", noise_rate=0.2),
        dict(noise="symmetric", noise_rate=0.1, include_true_class=True),
        dict(unlabeled_fraction=1.0),
    ):
        other = _noisy_long_tail(source, **overrides)
        np.testing.assert_array_equal(other.meta_index, base.meta_index)
        np.testing.assert_array_equal(other.train.source_index, base.train.source_index)
    # And the noisy labels do not depend on the unlabeled fraction.
    other = _noisy_long_tail(source, unlabeled_fraction=0.5)
    np.testing.assert_array_equal(other.train.labels, base.train.labels)


def test_unlabeled_view_is_class_balanced_by_clean_label(source: SourceData) -> None:
    splits = _noisy_long_tail(source)
    index = splits.unlabeled_index
    assert np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(splits.unlabeled, splits.train.images[index])
    # 0.25 * 76 images / 5 classes = 3.8 -> 4 of each of [36, 20, 11, 6, 3], or all of a class.
    np.testing.assert_array_equal(
        np.bincount(splits.train.clean_labels[index], minlength=K), [4, 4, 4, 4, 3]
    )
    assert splits.unlabeled.dtype == np.uint8 and splits.unlabeled.ndim == 4
    small = _noisy_long_tail(source, unlabeled_fraction=0.01)
    np.testing.assert_array_equal(
        np.bincount(small.train.clean_labels[small.unlabeled_index], minlength=K), [1] * K
    )
    # The whole pool's worth, 76 / 5 = 15 per class: balanced as far as the tail allows.
    full = _noisy_long_tail(source, unlabeled_fraction=1.0)
    np.testing.assert_array_equal(
        np.bincount(full.train.clean_labels[full.unlabeled_index], minlength=K), [15, 15, 11, 6, 3]
    )


def test_determinism_and_seed_dependence(source: SourceData) -> None:
    a, b = _noisy_long_tail(source), _noisy_long_tail(source)
    for x, y in (
        (a.meta_index, b.meta_index),
        (a.train.source_index, b.train.source_index),
        (a.train.labels, b.train.labels),
        (a.unlabeled_index, b.unlabeled_index),
    ):
        np.testing.assert_array_equal(x, y)
    c = _noisy_long_tail(source, seed=8)
    assert not np.array_equal(a.meta_index, c.meta_index)


def test_no_shift_keeps_every_remaining_image(source: SourceData) -> None:
    splits = make_splits(source, meta_per_class=5, seed=0)
    assert len(splits.train) == len(source.train) - 5 * K
    np.testing.assert_array_equal(
        np.sort(np.concatenate([splits.meta_index, splits.train.source_index])),
        np.arange(len(source.train)),
    )
    assert not splits.train.noise_mask.any()
    balanced = make_splits(source, meta_per_class=5, n_max=20, seed=0)
    np.testing.assert_array_equal(balanced.train_class_counts, [20] * K)


def test_step_and_pair_and_matrix(source: SourceData) -> None:
    splits = make_splits(
        source,
        meta_per_class=2,
        imbalance="step",
        rho=5.0,
        mu=0.4,
        n_max=30,
        noise="pair",
        noise_rate=0.3,
        seed=3,
    )
    np.testing.assert_array_equal(
        np.bincount(splits.train.clean_labels, minlength=K), [30, 30, 30, 6, 6]
    )
    pool = splits.train
    np.testing.assert_array_equal(
        pool.labels[pool.noise_mask], (pool.clean_labels[pool.noise_mask] + 1) % K
    )
    swap = np.eye(K)[[1, 0, 2, 3, 4]]  # classes 0 and 1 always swapped
    swapped = make_splits(source, meta_per_class=2, noise="matrix", noise_matrix=swap, seed=3)
    clean = swapped.train.clean_labels
    np.testing.assert_array_equal(swapped.train.labels[clean == 0], 1)
    np.testing.assert_array_equal(swapped.train.labels[clean == 2], 2)


def test_summary_is_json_ready(source: SourceData) -> None:
    splits = _noisy_long_tail(source)
    summary = json.loads(json.dumps(splits.summary()))
    assert summary["train_size"] == 76
    assert summary["meta_size"] == 20
    assert summary["test_size"] == 40
    assert summary["unlabeled_size"] == 19  # 4 + 4 + 4 + 4 + 3
    assert summary["train_clean_class_counts"] == [36, 20, 11, 6, 3]
    assert summary["meta_class_counts"] == [4] * K
    assert summary["imbalance_ratio"] == pytest.approx(12.0)
    assert summary["noise_rate"] == pytest.approx(splits.train.realised_noise_rate)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (dict(meta_per_class=0), ConfigError, r"meta_per_class must be an integer >= 1 .*, got 0"),
        (
            dict(meta_per_class=40),
            ShiftError,
            r"meta_per_class=40 leaves no training images of class 4",
        ),
        (dict(imbalance="zipf"), ConfigError, r"imbalance must be one of .* got 'zipf'"),
        (dict(noise="gauss"), ConfigError, r"noise must be one of .* got 'gauss'"),
        (dict(imbalance="none", rho=10.0), ConfigError, r"rho=10.0 has no effect"),
        (dict(noise="none", noise_rate=0.4), ConfigError, r"noise_rate=0.4 has no effect"),
        (
            dict(noise_matrix=np.eye(K)),
            ConfigError,
            r"noise_matrix is only used with noise 'matrix'",
        ),
        (
            dict(unlabeled_fraction=0.0),
            ConfigError,
            r"unlabeled_fraction must lie in \(0, 1\], got 0.0",
        ),
        (dict(unlabeled_fraction=1.5), ConfigError, r"unlabeled_fraction must lie in \(0, 1\]"),
        (dict(seed=-1), ConfigError, r"seed must be a non-negative integer, got -1"),
        (dict(n_max=0), ConfigError, r"n_max must be a positive integer or None, got 0"),
        (dict(rho=0.5), ShiftError, r"rho must be a finite number >= 1, got 0.5"),
        (dict(rho=100.0), ShiftError, r"class 4 would have 0 training examples: n_max=36"),
        (
            dict(n_max=60),
            ShiftError,
            r"n_max=60 asks for 60 examples of class 0, which has only 56",
        ),
        (
            dict(n_max=40, rho=1.01),
            ShiftError,
            r"asks for 39 examples of class 4, which has only 36",
        ),
        (dict(noise_rate=1.0), ShiftError, r"noise rate must lie in \[0, 1\), got 1.0"),
        (dict(noise="pair", noise_rate=0.5), ShiftError, r"pair-flip noise rate must be < 0.5"),
    ],
)
def test_errors_name_the_field(
    source: SourceData, overrides: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        _noisy_long_tail(source, **overrides)
