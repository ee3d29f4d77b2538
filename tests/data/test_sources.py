"""Shared checks of the registered data sources, the digits source and ``describe_sources``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autorobust.data.base import SOURCES, DataSource, create_source
from autorobust.data.sources import DigitsSource, describe_sources
from autorobust.data.sources._common import stratified_holdout
from autorobust.errors import ConfigError, DataError, UnknownNameError

EXPECTED = ["cifar10", "cifar100", "digits", "fashion-mnist", "image-folder", "mnist", "npz"]


def test_every_source_is_registered_with_a_one_line_description() -> None:
    assert [name for name in SOURCES.names() if name in EXPECTED] == EXPECTED
    for name in EXPECTED:
        cls = SOURCES.get(name)
        assert issubclass(cls, DataSource)
        assert cls.name == name
        assert isinstance(cls.description, str) and cls.description
        assert "\n" not in cls.description


@pytest.mark.parametrize("name", EXPECTED)
def test_constructors_do_no_io(name: str, tmp_path: Path) -> None:
    # a root that does not exist must not fail before load()
    options = {"npz": {"path": tmp_path / "absent.npz"}, "digits": {}}.get(
        name, {"root": tmp_path / "absent"}
    )
    source = create_source(name, **options)
    assert isinstance(source.required_files(), list)
    if name == "digits":
        assert source.missing_files() == []
    else:
        assert source.missing_files()
        with pytest.raises(DataError, match="absent"):
            source.load()


def test_create_source_names_an_unknown_option_and_name() -> None:
    with pytest.raises(DataError, match=r"data source 'digits'.*colour"):
        create_source("digits", colour="red")
    with pytest.raises(UnknownNameError, match=r"valid: .*fashion-mnist"):
        create_source("svhn")


def test_describe_sources_lists_every_source_with_its_missing_files() -> None:
    rows = {
        name: (description, present, missing)
        for name, description, present, missing in describe_sources()
    }
    assert set(EXPECTED) <= set(rows)
    assert rows["digits"][1:] == (True, [])
    for _name, (description, present, missing) in rows.items():
        assert isinstance(description, str)
        assert present == (not missing)
        assert all(isinstance(path, Path) and not path.exists() for path in missing)
    fmnist = Path("/usr/share/datasets/fashion-mnist")
    if (fmnist / "train-images-idx3-ubyte.gz").exists():
        assert rows["fashion-mnist"][1:] == (True, [])


def test_digits_loads_a_scaled_stratified_split() -> None:
    data = DigitsSource().load()
    assert data.class_names == tuple("0123456789")
    assert data.image_shape == (8, 8, 1)
    assert len(data.train) + len(data.test) == 1797
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert data.train.images.max() == 255 and data.train.images.min() == 0
    # 16 grey levels 0..16 scaled to 0..255: every value is round(k * 255 / 16)
    levels = {round(k * 255 / 16) for k in range(17)}
    assert set(np.unique(data.train.images).tolist()) <= levels
    test_counts = np.bincount(data.test.labels, minlength=10)
    total_counts = test_counts + np.bincount(data.train.labels, minlength=10)
    assert np.array_equal(test_counts, np.round(total_counts * 0.3).astype(int))
    again = DigitsSource().load()
    assert np.array_equal(again.test.images, data.test.images)
    other = DigitsSource(test_fraction=0.5, split_seed=1).load()
    assert len(other.test) == int(np.round(total_counts * 0.5).sum())


def test_digits_split_depends_on_the_seed() -> None:
    a = DigitsSource(split_seed=0).load().test.images
    b = DigitsSource(split_seed=1).load().test.images
    assert a.shape == b.shape and not np.array_equal(a, b)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.3"])
def test_digits_rejects_a_bad_test_fraction(fraction: object) -> None:
    with pytest.raises(ConfigError, match="digits: test_fraction must be a number in"):
        DigitsSource(test_fraction=fraction)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_stratified_holdout_partitions_every_class(seed: int) -> None:
    labels = np.repeat(np.arange(4), [1, 2, 10, 33])
    train, test = stratified_holdout(labels, 0.25, seed)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert np.bincount(labels[test], minlength=4).tolist() == [0, 1, 2, 8]
    again = stratified_holdout(labels, 0.25, seed)
    assert np.array_equal(again[1], test)
