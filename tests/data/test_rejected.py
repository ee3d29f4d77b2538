"""``Splits.rejected``: the samples a relabel file drops, kept as unlabeled images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autorobust.data.base import ImageDataset, SourceData
from autorobust.data.relabel import read_relabel_file, write_relabel_file
from autorobust.data.splits import RejectedSamples, make_splits, rejected_samples

K = 4


def _dataset(per_class: list[int], seed: int, offset: int = 0) -> ImageDataset:
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(K), per_class))
    n = len(labels)
    images = np.zeros((n, 3, 2, 1), dtype=np.uint8)
    images[:, 0, 0, 0] = (np.arange(n) + offset) % 256  # each image tells its source position
    return ImageDataset(images, labels.astype(np.int64))


@pytest.fixture(scope="module")
def source() -> SourceData:
    return SourceData(
        train=_dataset([30, 25, 20, 15], seed=0),
        test=_dataset([5] * K, seed=1, offset=200),
        class_names=("a", "b", "c", "d"),
    )


def _splits(source: SourceData, relabel=None):
    return make_splits(
        source,
        meta_per_class=3,
        imbalance="long_tail",
        rho=4.0,
        noise="symmetric",
        noise_rate=0.4,
        unlabeled_fraction=0.5,
        relabel=relabel,
        seed=3,
    )


def test_without_a_file_nothing_is_rejected(source) -> None:
    splits = _splits(source)
    assert isinstance(splits.rejected, RejectedSamples)
    assert len(splits.rejected) == 0
    assert splits.rejected.images.shape == (0, 3, 2, 1)
    assert splits.rejected.images.dtype == np.uint8
    for name in ("clean_labels", "observed_labels", "source_index"):
        assert getattr(splits.rejected, name).dtype == np.int64
    # A Splits built or replaced without it gets the empty set too.
    assert len(dataclasses.replace(splits, rejected=None).rejected) == 0


def test_the_dropped_samples_are_the_rejected_ones(source, tmp_path) -> None:
    base = _splits(source)
    pool = base.train
    labels = np.where(pool.noise_mask, -1, pool.labels)  # drop the noisy labels ...
    labels[:5] = -1  # ... and the first five samples, clean or not
    path = tmp_path / "r.npz"
    write_relabel_file(path, labels=labels, source_index=pool.source_index)
    splits = _splits(source, read_relabel_file(path))
    dropped = np.flatnonzero(labels == -1)
    rejected = splits.rejected
    assert len(rejected) == len(dropped) == splits.summary()["relabel"]["dropped"]
    np.testing.assert_array_equal(rejected.source_index, pool.source_index[dropped])
    np.testing.assert_array_equal(rejected.images, pool.images[dropped])
    np.testing.assert_array_equal(rejected.clean_labels, pool.clean_labels[dropped])
    np.testing.assert_array_equal(rejected.observed_labels, pool.labels[dropped])
    # The images are those of the source at those positions (the first pixel counts them).
    np.testing.assert_array_equal(
        rejected.images[:, 0, 0, 0], source.train.images[rejected.source_index, 0, 0, 0]
    )
    # Kept and rejected partition the pool; the unlabeled view is still drawn from the kept.
    both = np.concatenate([splits.train.source_index, rejected.source_index])
    np.testing.assert_array_equal(np.sort(both), pool.source_index)
    np.testing.assert_array_equal(splits.unlabeled, splits.train.images[splits.unlabeled_index])
    assert len(splits.unlabeled_index) and splits.unlabeled_index.max() < len(splits.train)


def test_a_file_that_drops_nothing_rejects_nothing(source, tmp_path) -> None:
    pool = _splits(source).train
    path = tmp_path / "all.npz"
    write_relabel_file(path, labels=pool.labels, source_index=pool.source_index)
    relabel = read_relabel_file(path)
    assert len(_splits(source, relabel).rejected) == 0
    assert len(rejected_samples(pool, relabel)) == 0
    with pytest.raises(ValueError, match="labels for a pool of"):
        rejected_samples(pool, _short(relabel))


def _short(relabel):
    return dataclasses.replace(
        relabel, labels=relabel.labels[:-1], source_index=relabel.source_index[:-1]
    )


def test_rejected_samples_check_their_arrays() -> None:
    images = np.zeros((2, 2, 2, 1), dtype=np.uint8)
    ints = np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match="images must be uint8"):
        RejectedSamples(images.astype(np.float32), ints, ints, ints)
    with pytest.raises(ValueError, match=r"clean_labels must be int64 \(2,\)"):
        RejectedSamples(images, ints[:1], ints, ints)
