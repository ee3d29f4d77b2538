"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches, read with a safe unpickler."""

from __future__ import annotations

import codecs
import pickle
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from autorobust.data.base import DataSource, ImageDataset, SourceData, check_labels, register_source
from autorobust.data.sources._common import resolve_path
from autorobust.errors import ConfigError, DataError

__all__ = ["Cifar10Source", "Cifar100Source", "read_pickle"]

_IMAGE_SIZE = 32
# Words of a message that would point a user at unrestricted unpickling.
_UNSAFE_ADVICE = re.compile(r"allow_pickle|weights_only|pickle\.load|trust", re.IGNORECASE)
_ROW = 3 * _IMAGE_SIZE * _IMAGE_SIZE


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to what pickle needs for ``bytes`` under protocols < 3."""
    if encoding not in {"latin1", "latin-1"} or errors != "strict" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickle of plain numpy arrays, dtypes and scalars refers to.

    numpy 2 pickles name ``numpy._core``, numpy 1 pickles name ``numpy.core``; both are mapped to
    the installed objects so that no module is imported by a name the file supplies.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # py3 pickles of bytes with protocol 2 (the numpy buffer) go through _codecs.encode
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy._core", "numpy.core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        # protocol 5 pickles of contiguous arrays are rebuilt with _frombuffer (private, so
        # numpy's stubs do not declare it)
        frombuffer = numeric._frombuffer  # type: ignore[attr-defined]
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array types; any other global raises DataError."""

    def __init__(self, file: Any, path: Path) -> None:
        # CIFAR's files are Python 2 pickles: str objects must stay bytes (the image buffer)
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refusing to unpickle global {module}.{name} "
                "(not an allowed numpy/builtin type)"
            ) from None


def _detail(exc: BaseException) -> str:
    """The message of an unpickling error on one line; any sentence that points at loading the
    file another (unrestricted) way is dropped: this loader never suggests that."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(str(exc).split()))
    kept = [s for s in sentences if not _UNSAFE_ADVICE.search(s)]
    return " ".join(kept) or type(exc).__name__


def read_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only numpy arrays, dtypes, scalars and builtin containers.

    Python 2 strings are returned as ``bytes``. No other class or function named in the file is
    resolved, so a crafted file cannot run code.

    Raises:
        DataError: naming the file, when it is missing, unreadable, truncated or corrupt, or names
            a global outside the allowed numpy types.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            return _RestrictedUnpickler(stream, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or truncated pickle ({_detail(exc)})") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: corrupt pickle ({type(exc).__name__}: {_detail(exc)})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _as_str_keys(obj: Any, path: Path) -> dict[str, Any]:
    """The unpickled dict with ``bytes`` keys decoded, so that b"data" and "data" both work."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {
        key.decode("latin1") if isinstance(key, bytes) else str(key): value
        for key, value in obj.items()
    }


def _require(batch: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    missing = [key for key in keys if key not in batch]
    if missing:
        found = ", ".join(sorted(batch)) or "none"
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}; found {found}")


def _read_names(path: Path, key: str, expected: int) -> tuple[str, ...]:
    meta = _as_str_keys(read_pickle(path), path)
    _require(meta, (key,), path)
    names = meta[key]
    if not isinstance(names, (list, tuple)) or len(names) != expected:
        size = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise DataError(f"{path}: {key} must list {expected} class names, got {size}")
    return tuple(
        name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)
        for name in names
    )


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as images uint8 (N, 32, 32, 3) and labels int64 (N,)."""
    batch = _as_str_keys(read_pickle(path), path)
    _require(batch, ("data", label_key), path)
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: data must be a uint8 array (N, {_ROW}), got {got}")
    if data.shape[1] != _ROW:
        raise DataError(
            f"{path}: data rows must hold {_ROW} bytes (3x32x32), got shape {data.shape}"
        )
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError):
        raise DataError(f"{path}: {label_key} is not a list of integers") from None
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise DataError(
            f"{path}: {label_key} must be a list of integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} {label_key}")
    labels = check_labels(labels, num_classes, path)
    # rows hold the red, green and blue 32x32 planes in turn
    images = data.reshape(-1, 3, _IMAGE_SIZE, _IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


class _CifarSource(DataSource):
    """Shared loading of the CIFAR batch files; subclasses name the files and the label key."""

    default_root: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_file: ClassVar[str]
    meta_file: ClassVar[str]

    def __init__(self, *, root: str | Path | None = None) -> None:
        self.root = root

    @property
    def folder(self) -> Path:
        """The folder that is read (``root`` or the default), with ``~`` expanded."""
        return resolve_path(self.root, self.default_root)

    def required_files(self) -> list[Path]:
        """The training batches, the test batch and the meta file."""
        names = (*self.train_files, self.test_file, self.meta_file)
        return [self.folder / name for name in names]

    def _label_key(self) -> tuple[str, str, int]:
        """(key of the labels in a batch, key of the names in the meta file, number of classes)."""
        raise NotImplementedError

    def load(self) -> SourceData:
        """Read and validate every file; raise :class:`DataError` naming a faulty file."""
        missing = self.missing_files()
        if missing:
            raise DataError(
                f"{missing[0]}: file not found; extract the CIFAR python archive so that "
                f"{self.folder} holds {', '.join(p.name for p in self.required_files())}"
            )
        label_key, names_key, num_classes = self._label_key()
        class_names = _read_names(self.folder / self.meta_file, names_key, num_classes)
        parts = [
            _read_batch(self.folder / name, label_key, num_classes) for name in self.train_files
        ]
        train = ImageDataset(
            np.concatenate([images for images, _ in parts]),
            np.concatenate([labels for _, labels in parts]),
        )
        test = ImageDataset(*_read_batch(self.folder / self.test_file, label_key, num_classes))
        return SourceData(
            train=train,
            test=test,
            class_names=class_names,
            metadata={"source": self.name, "root": str(self.folder), "label_key": label_key},
        )


@register_source("cifar10")
class Cifar10Source(_CifarSource):
    """CIFAR-10: 50,000 + 10,000 32x32 RGB images of 10 classes.

    Reads ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta`` from ``root``
    (the extracted ``cifar-10-batches-py`` folder; default
    ``~/.cache/autorobust/cifar-10-batches-py``) with a restricted unpickler that only rebuilds
    numpy arrays. ``load`` returns images uint8 (N, 32, 32, 3) and labels int64 in [0, 10).

    Args:
        root: folder holding the batch files; None means the default above.
    """

    description = "CIFAR-10, 32x32 RGB, 10 classes (python pickle batches)"
    default_root = "~/.cache/autorobust/cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    meta_file = "batches.meta"

    def _label_key(self) -> tuple[str, str, int]:
        return "labels", "label_names", 10


@register_source("cifar100")
class Cifar100Source(_CifarSource):
    """CIFAR-100: 50,000 + 10,000 32x32 RGB images of 100 fine classes in 20 coarse superclasses.

    Reads ``train``, ``test`` and ``meta`` from ``root`` (the extracted ``cifar-100-python``
    folder; default ``~/.cache/autorobust/cifar-100-python``) with a restricted unpickler.
    ``load`` returns images uint8 (N, 32, 32, 3) and labels int64 in [0, 100) (fine) or [0, 20)
    (coarse).

    Args:
        root: folder holding the files; None means the default above.
        label_mode: "fine" (100 classes, ``fine_labels``) or "coarse" (20 superclasses).
    """

    description = "CIFAR-100, 32x32 RGB, 100 fine / 20 coarse classes (python pickle files)"
    default_root = "~/.cache/autorobust/cifar-100-python"
    train_files = ("train",)
    test_file = "test"
    meta_file = "meta"

    def __init__(
        self, *, root: str | Path | None = None, label_mode: Literal["fine", "coarse"] = "fine"
    ) -> None:
        if label_mode not in ("fine", "coarse"):
            raise ConfigError(
                f"cifar100: label_mode must be 'fine' or 'coarse', got {label_mode!r}"
            )
        super().__init__(root=root)
        self.label_mode = label_mode

    def _label_key(self) -> tuple[str, str, int]:
        num_classes = 100 if self.label_mode == "fine" else 20
        return f"{self.label_mode}_labels", f"{self.label_mode}_label_names", num_classes
