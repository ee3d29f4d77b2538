"""The npz source on small generated MedMNIST-style archives, valid and broken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autorobust.data.sources import NpzSource
from autorobust.errors import ConfigError, DataError


def arrays(channels: int | None = None, n_train: int = 6, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (5, 4) if channels is None else (5, 4, channels)
    return {
        "train_images": rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 3).reshape(-1, 1),
        "test_images": rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        "test_labels": np.arange(n_test) % 3,
    }


def save(path: Path, **data: np.ndarray) -> Path:
    np.savez(path, **data)
    return path


def test_grey_medmnist_archive_loads(tmp_path: Path) -> None:
    data_in = arrays()
    val = {"val_images": data_in["test_images"], "val_labels": data_in["test_labels"]}
    path = save(tmp_path / "pneumonia.npz", **data_in, **val)
    data = NpzSource(path=path).load()
    assert data.train.images.shape == (6, 5, 4, 1) and data.test.images.shape == (3, 5, 4, 1)
    assert np.array_equal(data.train.images[..., 0], data_in["train_images"])
    assert data.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.train.labels.dtype == np.int64
    assert data.class_names == ("0", "1", "2")
    assert data.metadata["ignored_keys"] == ("val_images", "val_labels")


def test_rgb_images_integer_dtypes_and_class_options(tmp_path: Path) -> None:
    data_in = arrays(channels=3)
    data_in["train_images"] = data_in["train_images"].astype(np.int32)
    path = save(tmp_path / "blood.npz", **data_in)
    data = NpzSource(path=path, class_names=["a", "b", "c", "d"]).load()
    assert data.train.images.dtype == np.uint8 and data.train.images.shape == (6, 5, 4, 3)
    assert np.array_equal(data.train.images, data_in["train_images"])
    assert data.num_classes == 4
    assert NpzSource(path=path, num_classes=7).load().class_names[-1] == "6"


def test_default_path_and_required_files() -> None:
    source = NpzSource()
    assert source.required_files() == [Path("~/.cache/autorobust/dataset.npz").expanduser()]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.npz: file not found"):
        NpzSource(path=tmp_path / "absent.npz").load()


def test_a_file_that_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"definitely not a zip archive" * 10)
    with pytest.raises(DataError) as info:
        NpzSource(path=path).load()
    # numpy took it for a pickle and advised loading it with allow_pickle: never passed on
    assert str(info.value) == f"{path}: not an .npz archive (a zip file of .npy arrays)"
    single = tmp_path / "single.npz"
    with single.open("wb") as stream:
        np.save(stream, np.zeros(3))
    with pytest.raises(DataError, match=r"single\.npz: expected an \.npz archive, got a single"):
        NpzSource(path=single).load()


def test_a_truncated_npz(tmp_path: Path) -> None:
    path = save(tmp_path / "cut.npz", **arrays())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.npz: corrupt or truncated \.npz archive"):
        NpzSource(path=path).load()


def test_missing_arrays_are_listed(tmp_path: Path) -> None:
    data_in = arrays()
    del data_in["test_labels"], data_in["train_images"]
    path = save(tmp_path / "partial.npz", **data_in)
    with pytest.raises(
        DataError,
        match=r"partial\.npz: missing array\(s\) train_images, test_labels; found "
        r"train_labels, test_images",
    ):
        NpzSource(path=path).load()


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    data_in = arrays()
    data_in["test_labels"] = np.array([1, "a", None], dtype=object)
    path = save(tmp_path / "objects.npz", **data_in)
    with pytest.raises(DataError) as info:
        NpzSource(path=path).load()
    assert str(info.value) == (
        f"{path}: test_labels: not a plain numeric array (object arrays and malformed .npy "
        "entries are refused)"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_labels": np.arange(2)}, r"test_images holds 3 images but test_labels holds 2"),
        ({"train_labels": np.array([0, 1, 2, 3, 4, -1])}, r"train_labels: labels must lie in"),
        ({"train_images": np.zeros((6, 5, 4), np.float32)}, r"train_images must hold integers"),
        ({"train_images": np.full((6, 5, 4), 256, np.int16)}, r"values 0\.\.255, found 256"),
        ({"test_images": np.zeros((3, 5, 4, 2), np.uint8)}, r"test_images must be \(N, H, W\)"),
        ({"test_images": np.zeros((3, 4, 4), np.uint8)}, r"test_images are \(4, 4, 1\)"),
        ({"train_labels": np.zeros((6, 2), np.int64)}, r"multi-label data are not supported"),
        ({"test_labels": np.zeros(3, np.float64)}, r"test_labels must be integer class indices"),
    ],
)
def test_inconsistent_arrays_are_reported(
    tmp_path: Path, change: dict[str, np.ndarray], message: str
) -> None:
    path = save(tmp_path / "bad.npz", **{**arrays(), **change})
    with pytest.raises(DataError, match=r"bad\.npz: .*" + message):
        NpzSource(path=path).load()


def test_labels_beyond_num_classes_are_reported(tmp_path: Path) -> None:
    path = save(tmp_path / "few.npz", **arrays())
    with pytest.raises(
        DataError, match=r"few\.npz: train_labels: labels must lie in \[0, 2\), found 0\.\.\.2"
    ):
        NpzSource(path=path, num_classes=2).load()


def test_bad_options_are_named() -> None:
    with pytest.raises(ConfigError, match="npz: num_classes=3 but class_names has 2 names"):
        NpzSource(num_classes=3, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="npz: num_classes must be an integer >= 1, got 0"):
        NpzSource(num_classes=0)
