"""The relabel file (``data.relabel_file``): format, refusals, and how a pool is cleaned by it."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest

from autorobust.data.base import ImageDataset, SourceData
from autorobust.data.relabel import (
    RelabelFile,
    read_relabel_file,
    relabel_file_sha256,
    write_relabel_file,
)
from autorobust.data.splits import Splits, make_splits
from autorobust.errors import DataError

K = 4


def _dataset(per_class: list[int], seed: int, offset: int = 0) -> ImageDataset:
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(K), per_class))
    n = len(labels)
    images = np.zeros((n, 2, 2, 1), dtype=np.uint8)
    images[:, 0, 0, 0] = (np.arange(n) + offset) % 256
    return ImageDataset(images, labels.astype(np.int64), (np.arange(n) % 3).astype(np.int64))


@pytest.fixture(scope="module")
def source() -> SourceData:
    return SourceData(
        train=_dataset([30, 25, 20, 15], seed=0),
        test=_dataset([5] * K, seed=1, offset=200),
        class_names=("a", "b", "c", "d"),
    )


def _splits(source: SourceData, relabel: RelabelFile | None = None, seed: int = 3) -> Splits:
    return make_splits(
        source,
        meta_per_class=3,
        imbalance="long_tail",
        rho=4.0,
        noise="symmetric",
        noise_rate=0.4,
        unlabeled_fraction=0.5,
        relabel=relabel,
        seed=seed,
    )


def _write(path, labels, source_index, weights=None) -> RelabelFile:
    write_relabel_file(path, labels=labels, source_index=source_index, weights=weights)
    return read_relabel_file(path)


def test_round_trip_and_hash(tmp_path) -> None:
    path = tmp_path / "relabel.npz"
    labels = np.array([0, -1, 2, 1], dtype=np.int64)
    index = np.array([3, 5, 8, 9])
    weights = np.array([1.0, 0.0, 0.25, 0.5])
    relabel = _write(path, labels, index, weights)
    np.testing.assert_array_equal(relabel.labels, labels)
    np.testing.assert_array_equal(relabel.source_index, index)
    np.testing.assert_array_equal(relabel.weights, weights)
    assert relabel.labels.dtype == np.int64 and relabel.weights.dtype == np.float64
    assert relabel.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert relabel_file_sha256(path) == relabel.sha256
    unweighted = _write(tmp_path / "plain.npz", labels, index)
    assert unweighted.weights is None
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary behind


def _save(path, **arrays) -> None:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


GOOD = {"labels": np.array([0, 1, -1]), "source_index": np.array([1, 2, 3])}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"labels": GOOD["labels"]}, "missing array(s) source_index; found labels"),
        ({**GOOD, "weight": np.ones(3)}, "unknown array 'weight'"),
        ({**GOOD, "labels": np.array([0.0, 1.0, 1.0])}, "labels must be a one-dimensional integer"),
        ({**GOOD, "labels": np.zeros((3, 1), dtype=int)}, "labels must be a one-dimensional"),
        ({**GOOD, "source_index": np.array([1, 2])}, "labels has 3 entries but source_index has 2"),
        ({**GOOD, "labels": np.array([0, -2, 1])}, "labels must be -1 (dropped) or a class index"),
        ({**GOOD, "weights": np.array([1, 1, 0])}, "weights must be a one-dimensional float"),
        ({**GOOD, "weights": np.ones(2)}, "labels has 3 entries but weights has 2"),
        ({**GOOD, "weights": np.array([1.0, 1.5, 0.0])}, "weights must lie in [0, 1]; entry 1"),
        ({**GOOD, "weights": np.array([1.0, np.nan, 0.0])}, "entry 1 is nan"),
        ({**GOOD, "weights": np.array([-0.1, 1.0, 0.0])}, "entry 0 is -0.1"),
    ],
)
def test_malformed_files_are_refused_with_one_line(tmp_path, arrays, message) -> None:
    path = tmp_path / "relabel.npz"
    _save(path, **arrays)
    with pytest.raises(DataError) as info:
        read_relabel_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_files_of_another_kind_are_refused_without_unpickling(tmp_path) -> None:
    missing = tmp_path / "absent.npz"
    with pytest.raises(DataError, match="relabel file not found"):
        read_relabel_file(missing)
    with pytest.raises(DataError, match="relabel file not found"):
        relabel_file_sha256(missing)
    with pytest.raises(DataError, match="is a directory"):
        read_relabel_file(tmp_path)
    npy = tmp_path / "labels.npy"
    np.save(npy, np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match=r"expected an \.npz archive, got a single \.npy array"):
        read_relabel_file(npy)
    text = tmp_path / "labels.csv"
    text.write_text("0,1,2\n")
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        read_relabel_file(text)
    pickled = tmp_path / "pickled.npz"
    _save(pickled, labels=np.array([object(), 1], dtype=object), source_index=np.arange(2))
    with pytest.raises(DataError, match="labels: not a plain numeric array") as info:
        read_relabel_file(pickled)
    assert "allow_pickle" not in str(info.value)
    truncated = tmp_path / "truncated.npz"
    _save(truncated, **GOOD)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_relabel_file(truncated)
    crc = tmp_path / "crc.npz"
    with zipfile.ZipFile(crc, "w") as archive:  # a member whose bytes are not an .npy array
        archive.writestr("labels.npy", b"not an array")
        archive.writestr("source_index.npy", b"nor this")
    with pytest.raises(DataError, match=f"{crc}: labels: not an .npy array inside the archive"):
        read_relabel_file(crc)


def test_the_pool_keeps_only_the_kept_samples_with_their_new_labels(source, tmp_path) -> None:
    base = _splits(source)
    pool = base.train
    n = len(pool)
    rng = np.random.default_rng(0)
    labels = pool.clean_labels.copy()  # a perfect filter ...
    labels[::5] = -1  # ... that drops every fifth sample ...
    flipped = np.flatnonzero(labels >= 0)[:3]
    labels[flipped] = (labels[flipped] + 1) % K  # ... and gets three labels wrong
    weights = rng.uniform(0.2, 1.0, size=n)
    relabel = _write(tmp_path / "r.npz", labels, pool.source_index, weights)
    splits = _splits(source, relabel)
    kept = labels >= 0
    train = splits.train
    assert len(train) == kept.sum()
    np.testing.assert_array_equal(train.labels, labels[kept])
    np.testing.assert_array_equal(train.source_index, pool.source_index[kept])
    np.testing.assert_array_equal(train.images, pool.images[kept])
    np.testing.assert_array_equal(train.clean_labels, pool.clean_labels[kept])
    np.testing.assert_array_equal(train.groups, pool.groups[kept])
    np.testing.assert_array_equal(train.weights, weights[kept])
    # The noise flags and rate describe the cleaned set: exactly the three flipped labels.
    assert train.noise_mask.sum() == 3
    assert train.realised_noise_rate == pytest.approx(3 / kept.sum())
    np.testing.assert_array_equal(splits.train_class_counts, np.bincount(labels[kept], minlength=K))
    summary = splits.summary()
    assert summary["train_size"] == kept.sum()
    assert summary["train_class_counts"] == np.bincount(labels[kept], minlength=K).tolist()
    assert summary["noise_rate"] == pytest.approx(3 / kept.sum())
    block = summary["relabel"]
    assert block["file"] == str(tmp_path / "r.npz") and block["sha256"] == relabel.sha256
    assert (block["pool_size"], block["kept"], block["dropped"]) == (n, kept.sum(), n - kept.sum())
    assert block["relabelled"] == int((labels[kept] != pool.labels[kept]).sum())
    assert block["weighted"] and block["mean_weight"] == pytest.approx(weights[kept].mean())
    assert block["pool_class_counts"] == np.bincount(pool.labels, minlength=K).tolist()
    # The unlabeled view is drawn from the cleaned pool, so its positions index it.
    np.testing.assert_array_equal(splits.unlabeled, train.images[splits.unlabeled_index])
    # The meta and test splits do not change.
    np.testing.assert_array_equal(splits.meta_index, base.meta_index)
    assert "relabel" not in base.summary() and base.train.weights is None


def test_a_file_made_for_another_pool_is_refused(source, tmp_path) -> None:
    pool = _splits(source).train
    other = _splits(source, seed=4).train
    assert len(other) == len(pool) and not np.array_equal(other.source_index, pool.source_index)
    path = tmp_path / "other.npz"
    foreign = _write(path, other.labels, other.source_index)
    with pytest.raises(
        DataError, match=rf"^{path}: source_index differs .* another config or seed"
    ):
        _splits(source, foreign)
    short = _write(path, pool.labels[:-1], pool.source_index[:-1])
    with pytest.raises(
        DataError, match=rf"^{path}: has {len(pool) - 1} labels, but .* {len(pool)}"
    ):
        _splits(source, short)


def test_out_of_range_labels_and_emptied_classes_are_refused(source, tmp_path) -> None:
    pool = _splits(source).train
    path = tmp_path / "r.npz"
    labels = pool.labels.copy()
    labels[0] = K
    with pytest.raises(
        DataError, match=rf"^{path}: labels must be -1 \(dropped\) or a class in 0..3"
    ):
        _splits(source, _write(path, labels, pool.source_index))
    labels = np.where(pool.labels == 2, -1, pool.labels)
    with pytest.raises(DataError, match=rf"^{path}: keeps no sample of class 2 \('c'\)"):
        _splits(source, _write(path, labels, pool.source_index))
    # A class whose kept samples all weigh 0 is empty too.
    weights = np.where(pool.labels == 1, 0.0, 1.0)
    with pytest.raises(DataError, match="keeps no sample of class 1 \\('b'\\) with a weight > 0"):
        _splits(source, _write(path, pool.labels, pool.source_index, weights))
