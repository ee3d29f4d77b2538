"""MNIST and Fashion-MNIST from their IDX files (gzip-compressed or not)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from autorobust.data.base import DataSource, ImageDataset, SourceData, check_labels, register_source
from autorobust.data.sources._common import resolve_path
from autorobust.errors import DataError

__all__ = ["FashionMnistSource", "IdxSource", "MnistSource", "read_idx"]

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions
_UINT8_TYPE = 0x08
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error):
        raise DataError(f"{path}: corrupt or truncated gzip") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_idx(path: str | Path, *, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (``.gz`` is gunzipped).

    The header is the magic ``0x000008`` followed by ``ndim`` as one byte, then ``ndim`` big-endian
    uint32 sizes; the data are the ``prod(sizes)`` bytes that follow, in C order.

    Returns:
        uint8 array with the header's shape (e.g. (N, 28, 28) images or (N,) labels).

    Raises:
        DataError: naming the file, for a missing or unreadable file, a corrupt gzip, a wrong magic
            number, or a header whose sizes do not match the amount of data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    header_size = 4 + 4 * ndim
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    expected = (_UINT8_TYPE << 8) | ndim
    if magic != expected:
        raise DataError(
            f"{path}: not an IDX file of {ndim}-D uint8 data (magic 0x{expected:08X} expected, "
            f"got 0x{magic:08X})"
        )
    if len(raw) < header_size:
        raise DataError(f"{path}: too short for a {ndim}-D IDX header ({len(raw)} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    n_expected = int(np.prod(shape, dtype=np.int64))
    n_found = len(raw) - header_size
    if n_found != n_expected:
        dims = "x".join(str(size) for size in shape)
        raise DataError(
            f"{path}: header says {dims} = {n_expected} bytes of data but the file holds {n_found}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


class IdxSource(DataSource):
    """Base of the IDX sources: four files in one folder, grey images and 10 classes.

    Each file is read as ``<name>.gz`` or, when that is absent, as the uncompressed ``<name>``.
    ``load`` returns images uint8 (N, H, W, 1) ((N, 28, 28, 1) for the official files) and labels
    int64 in [0, 10).

    Args:
        root: folder holding the files; None means the subclass's ``default_root``.
    """

    default_root: ClassVar[Path]
    class_names: ClassVar[tuple[str, ...]]
    install_hint: ClassVar[str]

    def __init__(self, *, root: str | Path | None = None) -> None:
        self.root = root

    @property
    def folder(self) -> Path:
        """The folder that is read (``root`` or the default), with ``~`` expanded."""
        return resolve_path(self.root, self.default_root)

    def _path(self, key: str) -> Path:
        compressed = self.folder / f"{_FILES[key]}.gz"
        plain = self.folder / _FILES[key]
        return plain if not compressed.exists() and plain.exists() else compressed

    def required_files(self) -> list[Path]:
        """The four IDX files (the ``.gz`` name unless only the uncompressed file exists)."""
        return [self._path(key) for key in _FILES]

    def _split(self, images_key: str, labels_key: str) -> ImageDataset:
        images_path, labels_path = self._path(images_key), self._path(labels_key)
        images = read_idx(images_path, ndim=3)
        labels = read_idx(labels_path, ndim=1)
        if len(images) != len(labels):
            raise DataError(
                f"{images_path}: holds {len(images)} images but {labels_path.name} holds "
                f"{len(labels)} labels"
            )
        labels = check_labels(labels, len(self.class_names), labels_path)
        return ImageDataset(images[..., None], labels)

    def load(self) -> SourceData:
        """Read and validate the four files; raise :class:`DataError` naming a faulty file."""
        missing = self.missing_files()
        if missing:
            raise DataError(f"{missing[0]}: file not found; {self.install_hint}")
        train = self._split("train_images", "train_labels")
        test = self._split("test_images", "test_labels")
        if train.images.shape[1:] != test.images.shape[1:]:
            raise DataError(
                f"{self._path('test_images')}: images are {test.images.shape[1:3]} but the "
                f"training images are {train.images.shape[1:3]}"
            )
        return SourceData(
            train=train,
            test=test,
            class_names=self.class_names,
            metadata={"source": self.name, "root": str(self.folder)},
        )


@register_source("fashion-mnist")
class FashionMnistSource(IdxSource):
    """Fashion-MNIST: 60,000 + 10,000 28x28 grey images of 10 kinds of clothing.

    Default root ``/usr/share/datasets/fashion-mnist``, where the Debian package
    ``dataset-fashion-mnist`` installs the four ``.gz`` files.
    """

    description = "Fashion-MNIST, 28x28 grey clothing, 10 classes (Debian dataset-fashion-mnist)"
    default_root = Path("/usr/share/datasets/fashion-mnist")
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    install_hint = "install it with `apt-get install dataset-fashion-mnist` or pass root="


@register_source("mnist")
class MnistSource(IdxSource):
    """MNIST: 60,000 + 10,000 28x28 grey handwritten digits.

    Default root ``/usr/share/datasets/mnist``; put the four IDX files there or pass ``root``.
    """

    description = "MNIST, 28x28 grey handwritten digits, 10 classes (four IDX files)"
    default_root = Path("/usr/share/datasets/mnist")
    class_names = tuple(str(digit) for digit in range(10))
    install_hint = "put the four MNIST IDX files (.gz or uncompressed) there or pass root="
