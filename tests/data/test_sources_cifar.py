"""The CIFAR sources on small generated pickle batches, and the restricted unpickler."""

from __future__ import annotations

import builtins
import codecs
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from autorobust.data.sources import Cifar10Source, Cifar100Source
from autorobust.data.sources.cifar import read_pickle
from autorobust.errors import ConfigError, DataError

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                 b"ship", b"truck"]  # fmt: skip


def images_to_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> CIFAR's (N, 3072) rows of R, G and B planes."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def dump(path: Path, obj: object, protocol: int) -> None:
    with path.open("wb") as stream:
        pickle.dump(obj, stream, protocol=protocol)


def make_cifar10(root: Path, *, per_batch: int = 2, n_test: int = 3) -> dict[str, np.ndarray]:
    """A fake cifar-10-batches-py folder; batches alternate pickle protocols 2, 4 and 5."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(5 * per_batch, 32, 32, 3), dtype=np.uint8)
    train_labels = np.arange(5 * per_batch) % 10
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        batch = {
            b"batch_label": f"training batch {i + 1} of 5".encode(),
            b"labels": train_labels[part].tolist(),
            b"data": images_to_rows(train[part]),
            b"filenames": [b"x.png"] * per_batch,
        }
        dump(root / f"data_batch_{i + 1}", batch, protocol=(2, 4, 5)[i % 3])
    test = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    test_labels = np.array([9, 0, 5])[:n_test]
    # a modern pickle with str keys and an ndarray of labels must work too
    dump(root / "test_batch", {"data": images_to_rows(test), "labels": test_labels}, protocol=5)
    dump(root / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_vis": 3072}, protocol=2)
    return {"train": train, "train_labels": train_labels, "test": test, "test_labels": test_labels}


def test_cifar10_reads_generated_batches(tmp_path: Path) -> None:
    arrays = make_cifar10(tmp_path)
    data = Cifar10Source(root=tmp_path).load()
    assert data.train.images.shape == (10, 32, 32, 3) and data.test.images.shape == (3, 32, 32, 3)
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert np.array_equal(data.train.images, arrays["train"])
    assert np.array_equal(data.test.images, arrays["test"])
    assert data.train.labels.tolist() == arrays["train_labels"].tolist()
    assert data.test.labels.tolist() == [9, 0, 5]
    assert data.class_names[:2] == ("airplane", "automobile") and len(data.class_names) == 10
    # pixel (0, 0) of image 0 is the first byte of each colour plane
    rows = images_to_rows(arrays["train"][:1])[0]
    assert data.train.images[0, 0, 0].tolist() == [rows[0], rows[1024], rows[2048]]


def test_cifar10_default_root_is_in_the_user_cache() -> None:
    source = Cifar10Source()
    assert source.folder == Path("~/.cache/autorobust/cifar-10-batches-py").expanduser()
    assert [p.name for p in source.required_files()] == [
        *(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
    ]


@pytest.mark.parametrize(("mode", "num_classes"), [("fine", 100), ("coarse", 20)])
def test_cifar100_reads_fine_or_coarse_labels(tmp_path: Path, mode: str, num_classes: int) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    for name, protocol in (("train", 2), ("test", 4)):
        batch = {
            b"data": images_to_rows(images),
            b"fine_labels": [0, 99, 50, 1],
            b"coarse_labels": [0, 19, 10, 1],
        }
        dump(tmp_path / name, batch, protocol)
    meta = {
        b"fine_label_names": [f"f{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
    }
    dump(tmp_path / "meta", meta, 2)
    data = Cifar100Source(root=tmp_path, label_mode=mode).load()  # type: ignore[arg-type]
    assert np.array_equal(data.train.images, images)
    assert data.num_classes == num_classes
    assert data.test.labels.tolist() == ([0, 99, 50, 1] if mode == "fine" else [0, 19, 10, 1])
    assert data.class_names[1] == ("f1" if mode == "fine" else "c1")


def test_cifar100_rejects_an_unknown_label_mode() -> None:
    with pytest.raises(ConfigError, match="cifar100: label_mode must be 'fine' or 'coarse'"):
        Cifar100Source(label_mode="medium")  # type: ignore[arg-type]


class SystemCall:
    """Unpickling this runs a shell command (the attack a restricted unpickler must stop)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class EvalCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        code = f"open({str(self.marker)!r}, 'w').write('pwned')"
        return (builtins.eval, (code,))


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_malicious_pickle_is_refused_without_running(tmp_path: Path, protocol: int) -> None:
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned.txt"
    payload = {b"data": SystemCall(marker), b"labels": [0]}
    dump(tmp_path / "test_batch", payload, protocol)
    with pytest.raises(
        DataError,
        match=r"test_batch: refusing to unpickle global (posix|nt|os)\.system "
        r"\(not an allowed numpy/builtin type\)",
    ):
        Cifar10Source(root=tmp_path).load()
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_builtins_eval_is_refused_without_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "batches.meta"
    dump(path, EvalCall(marker), protocol)
    # protocol 2 writes Python 2's module name __builtin__
    with pytest.raises(
        DataError, match=r"batches\.meta: refusing to unpickle global (builtins|__builtin__)\.eval"
    ):
        read_pickle(path)
    assert not marker.exists()


class Rot13:
    def __reduce__(self):
        return (codecs.encode, ("abc", "rot13"))


def test_codecs_encode_is_limited_to_latin1(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    dump(path, Rot13(), 2)
    with pytest.raises(DataError, match=r"batch: corrupt or truncated pickle \(refusing"):
        read_pickle(path)


class _PersistentIds(pickle.Pickler):
    """Writes bytes as persistent ids, as torch does with its storages."""

    def persistent_id(self, obj: object) -> str | None:
        return "storage" if isinstance(obj, bytes) else None


def test_an_error_of_the_unpickler_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    with path.open("wb") as stream:
        _PersistentIds(stream, protocol=2).dump({"data": b"\x00" * 8})
    with pytest.raises(DataError) as info:
        read_pickle(path)
    # pickle's own text spans two lines; an error the CLI prints must be one
    assert str(info.value) == (
        f"{path}: corrupt or truncated pickle (A load persistent id instruction was encountered, "
        "but no persistent_load function was specified.)"
    )


def test_advice_to_unpickle_another_way_is_never_passed_on() -> None:
    from autorobust.data.sources.cifar import _detail

    error = pickle.UnpicklingError(
        "Unsupported operand 149.\nRe-running with weights_only=False will likely succeed. "
        "Load it with pickle.load() if you trust the file."
    )
    assert _detail(error) == "Unsupported operand 149."


def test_missing_batch_is_named(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3: file not found; extract the CIFAR"):
        Cifar10Source(root=tmp_path).load()


def test_truncated_pickle_is_reported(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    path = tmp_path / "data_batch_2"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"data_batch_2: corrupt or truncated pickle"):
        Cifar10Source(root=tmp_path).load()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({b"labels": [0, 1]}, r"missing key\(s\) data; found labels"),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, r"hold 3072 bytes"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"uint8 array"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"lie in \[0, 10\)"),
        ([1, 2, 3], r"expected a pickled dict, got list"),
    ],
)
def test_inconsistent_batches_are_reported(tmp_path: Path, batch: object, message: str) -> None:
    make_cifar10(tmp_path)
    dump(tmp_path / "data_batch_4", batch, 2)
    with pytest.raises(DataError, match=r"data_batch_4: .*" + message):
        Cifar10Source(root=tmp_path).load()


def test_meta_with_the_wrong_number_of_names_is_reported(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    dump(tmp_path / "batches.meta", {b"label_names": CIFAR10_NAMES[:9]}, 2)
    with pytest.raises(
        DataError, match=r"batches\.meta: label_names must list 10 class names, got 9"
    ):
        Cifar10Source(root=tmp_path).load()


def test_numpy_1_module_names_are_accepted(tmp_path: Path) -> None:
    # numpy 1 (and the Python 2 pickles CIFAR ships) name numpy.core instead of numpy._core
    rows = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": rows, b"labels": [3, 4]}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    path = tmp_path / "batch"
    path.write_bytes(raw)
    batch = read_pickle(path)
    assert np.array_equal(batch[b"data"], rows) and batch[b"labels"] == [3, 4]


def py2_batch(rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way Python 2 and numpy 1 wrote CIFAR: str objects, numpy.core names."""

    def string(value: bytes) -> bytes:  # Python 2 str: BINSTRING, read back as bytes
        return b"T" + struct.pack("<I", len(value)) + value

    n, width = rows.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + string(b"b")
        + b"\x87R(K\x01J"
        + struct.pack("<i", n)
        + b"J"
        + struct.pack("<i", width)
        + b"\x86cnumpy\ndtype\n"
        + string(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + string(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + string(rows.tobytes())
        + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return b"\x80\x02}" + string(b"data") + array + b"s" + string(b"labels") + label_list + b"s."


def test_python2_numpy1_batches_load(tmp_path: Path) -> None:
    arrays = make_cifar10(tmp_path)
    rows = images_to_rows(arrays["train"][:2])
    (tmp_path / "data_batch_1").write_bytes(py2_batch(rows, [7, 3]))
    data = Cifar10Source(root=tmp_path).load()
    assert np.array_equal(data.train.images[:2], arrays["train"][:2])
    assert data.train.labels[:2].tolist() == [7, 3]
