"""The IDX sources (fashion-mnist, mnist) on small generated files and on the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from autorobust.data.sources import FashionMnistSource, MnistSource
from autorobust.data.sources.idx import read_idx
from autorobust.errors import DataError

NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """IDX encoding of a uint8 array; ``shape`` overrides the header's sizes."""
    shape = array.shape if shape is None else shape
    header = struct.pack(">BBBB", 0, 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, data: bytes, *, compress: bool = True) -> Path:
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_folder(root: Path, *, compress: bool = True, n_train: int = 6, n_test: int = 4):
    """Four IDX files with 4x5 images whose pixels encode (index, row, col); returns the arrays."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 4, 5), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, size=(n_test, 4, 5), dtype=np.uint8),
        "test_labels": (9 - np.arange(n_test, dtype=np.uint8)) % 10,
    }
    for key, array in arrays.items():
        write(root / NAMES[key], idx_bytes(array), compress=compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_generated_idx_files(tmp_path: Path, compress: bool) -> None:
    arrays = make_idx_folder(tmp_path, compress=compress)
    data = FashionMnistSource(root=tmp_path).load()
    assert data.train.images.shape == (6, 4, 5, 1) and data.test.images.shape == (4, 4, 5, 1)
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert np.array_equal(data.train.images[..., 0], arrays["train_images"])
    assert np.array_equal(data.test.images[..., 0], arrays["test_images"])
    assert data.train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert data.test.labels.tolist() == [9, 8, 7, 6]
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert len(data.class_names) == 10
    suffix = ".gz" if compress else ""
    assert FashionMnistSource(root=tmp_path).required_files()[0].name == (
        "train-images-idx3-ubyte" + suffix
    )


def test_mnist_has_digit_names_and_its_own_default_root(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    data = MnistSource(root=tmp_path).load()
    assert data.class_names == tuple("0123456789")
    assert data.metadata == {"source": "mnist", "root": str(tmp_path)}
    assert MnistSource().folder == Path("/usr/share/datasets/mnist")
    assert FashionMnistSource().folder == REAL_FMNIST


def test_missing_file_names_it_and_the_debian_package(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    source = FashionMnistSource(root=tmp_path)
    assert source.missing_files() == [tmp_path / "t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte\.gz: file not found; install it with "
        r"`apt-get install dataset-fashion-mnist`",
    ):
        source.load()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: file not found; put"):
        MnistSource(root=tmp_path).load()


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        FashionMnistSource(root=tmp_path).load()


def test_a_gz_that_is_not_gzip_is_reported(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all" * 4)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: corrupt or truncated gzip"):
        FashionMnistSource(root=tmp_path).load()


def test_header_and_data_size_mismatch_is_reported(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    images = np.zeros((4, 4, 5), dtype=np.uint8)
    write(tmp_path / NAMES["train_images"], idx_bytes(images, shape=(6, 4, 5)))
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte\.gz: header says 6x4x5 = 120 bytes of data but the "
        r"file holds 80",
    ):
        FashionMnistSource(root=tmp_path).load()


def test_wrong_magic_is_reported(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    # a label file where the images belong
    write(tmp_path / NAMES["test_images"], idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(
        DataError,
        match=r"t10k-images-idx3-ubyte\.gz: not an IDX file of 3-D uint8 data \(magic "
        r"0x00000803 expected, got 0x00000801\)",
    ):
        FashionMnistSource(root=tmp_path).load()


def test_a_file_shorter_than_the_header_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "labels", b"\x00\x00", compress=False)
    with pytest.raises(DataError, match=r"labels: too short for an IDX header \(2 bytes\)"):
        read_idx(path, ndim=1)


def test_image_and_label_counts_must_match(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    write(tmp_path / NAMES["train_labels"], idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte\.gz: holds 6 images but train-labels-idx1-ubyte\.gz "
        r"holds 5 labels",
    ):
        FashionMnistSource(root=tmp_path).load()


def test_labels_out_of_range_are_reported(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    write(tmp_path / NAMES["test_labels"], idx_bytes(np.array([0, 3, 10, 1], dtype=np.uint8)))
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte\.gz: labels must lie in \[0, 10\), found 0\.\.\.10",
    ):
        FashionMnistSource(root=tmp_path).load()


@pytest.mark.skipif(
    not (REAL_FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed at /usr/share/datasets/fashion-mnist "
    "(apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_loads() -> None:
    data = FashionMnistSource().load()
    assert data.train.images.shape == (60000, 28, 28, 1)
    assert data.test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(data.train.labels).tolist() == [6000] * 10
    assert np.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.train.labels[:5].tolist() == [9, 0, 0, 3, 0]
