"""The relabel file: a cleaned label set that replaces the training pool's observed labels.

A sample-selection method (``autorobust.methods.sample_selection``) turns what a probe model
learned on the noisy pool into new labels and writes them here; ``data.relabel_file`` names the
file, and :func:`autorobust.data.splits.make_splits` applies it after the shift, so that the final
model trains only on the kept samples with their new labels. The format, an ``.npz`` archive read
with ``allow_pickle=False``:

- ``labels``: int64 (N,) in the pool's order: the label the sample is trained with, or -1 when
  its label is dropped (the sample leaves the labelled pool);
- ``source_index``: int64 (N,), the pool's ``source_index`` (positions in the source's train
  split): a file made for another config or seed has other positions and is refused;
- ``weights`` (optional): float (N,) in [0, 1], a per-sample confidence; the trainer's loss is then
  the weighted mean sum(w * loss) / sum(w) over a batch.

The file's SHA-256 enters the checkpoint fingerprint (``experiment.config_fingerprint``), so a
run cannot be resumed on labels that changed since it started.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autorobust._io import atomic_write, read_npz
from autorobust.errors import DataError

__all__ = [
    "DROPPED",
    "RelabelFile",
    "read_relabel_file",
    "relabel_file_sha256",
    "write_relabel_file",
]

DROPPED = -1
"""The label of a sample whose label is dropped."""

_REQUIRED = ("labels", "source_index")
_OPTIONAL = ("weights",)


@dataclass(frozen=True)
class RelabelFile:
    """A relabel file as read, checked on its own (not yet against a pool).

    Attributes:
        path: the file.
        labels: int64 (N,), a class or :data:`DROPPED` (-1).
        source_index: int64 (N,).
        weights: float64 (N,) in [0, 1], or None.
        sha256: hex digest of the file's bytes (the bytes these arrays were read from).
    """

    path: Path
    labels: np.ndarray
    source_index: np.ndarray
    weights: np.ndarray | None
    sha256: str


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: relabel file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a relabel file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def relabel_file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of the file's bytes; a missing or unreadable file is a one-line DataError."""
    return hashlib.sha256(_read_bytes(Path(path))).hexdigest()


def read_relabel_file(path: str | Path) -> RelabelFile:
    """Read and check a relabel file (module docstring) without unpickling anything.

    Raises:
        DataError: one line naming ``path`` and the problem: missing, not an ``.npz`` archive (a
            single ``.npy`` array, another kind of file, a corrupt archive, an object array), a
            missing or unknown array, an array of the wrong dtype or shape, arrays of different
            lengths, a label below -1, a weight outside [0, 1] or not finite.
    """
    path = Path(path)
    data = _read_bytes(path)

    def select(names: list[str]) -> list[str]:
        missing = [name for name in _REQUIRED if name not in names]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(names) or 'none'}"
            )
        unknown = sorted(set(names) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise DataError(
                f"{path}: unknown array {unknown[0]!r}; a relabel file holds labels, "
                "source_index and optionally weights"
            )
        return names

    arrays = read_npz(path, data, select=select)
    labels, source_index = arrays["labels"], arrays["source_index"]
    for name, value in (("labels", labels), ("source_index", source_index)):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise DataError(
                f"{path}: {name} must be a one-dimensional integer array, got {value.dtype} "
                f"{value.shape}"
            )
    n = len(labels)
    if len(source_index) != n:
        raise DataError(f"{path}: labels has {n} entries but source_index has {len(source_index)}")
    if n and labels.min() < DROPPED:
        raise DataError(
            f"{path}: labels must be -1 (dropped) or a class index, found {int(labels.min())}"
        )
    weights = arrays.get("weights")
    if weights is not None:
        if weights.ndim != 1 or weights.dtype.kind != "f":
            raise DataError(
                f"{path}: weights must be a one-dimensional float array, got {weights.dtype} "
                f"{weights.shape}"
            )
        if len(weights) != n:
            raise DataError(f"{path}: labels has {n} entries but weights has {len(weights)}")
        bad = ~(np.isfinite(weights) & (weights >= 0.0) & (weights <= 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: weights must lie in [0, 1]; entry {i} is {float(weights[i])!r}"
            )
        weights = weights.astype(np.float64)
    return RelabelFile(
        path=path,
        labels=labels.astype(np.int64),
        source_index=source_index.astype(np.int64),
        weights=weights,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def write_relabel_file(
    path: str | Path,
    *,
    labels: np.ndarray,
    source_index: np.ndarray,
    weights: np.ndarray | None = None,
) -> Path:
    """Write a relabel file atomically (nothing half-written is left on failure).

    Args:
        path: the ``.npz`` file to write.
        labels: int (N,), a class or -1 (dropped), in the pool's order.
        source_index: int (N,), the pool's ``source_index``.
        weights: float (N,) in [0, 1], or None for unweighted training.

    Returns:
        The path written.

    Raises:
        ValueError: arrays of the wrong shape or range (a programming error of the caller).
        WriteError: the file cannot be written.
    """
    labels = np.asarray(labels)
    source_index = np.asarray(source_index)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if source_index.shape != labels.shape or source_index.dtype.kind not in "iu":
        raise ValueError(
            f"source_index must be an integer array of shape {labels.shape}, got "
            f"{source_index.dtype} {source_index.shape}"
        )
    if labels.size and labels.min() < DROPPED:
        raise ValueError(f"labels must be >= -1, found {int(labels.min())}")
    arrays = {
        "labels": labels.astype(np.int64),
        "source_index": source_index.astype(np.int64),
    }
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != labels.shape:
            raise ValueError(f"weights must have shape {labels.shape}, got {weights.shape}")
        if not np.all(np.isfinite(weights) & (weights >= 0.0) & (weights <= 1.0)):
            raise ValueError("weights must lie in [0, 1]")
        arrays["weights"] = weights
    return atomic_write(path, lambda handle: np.savez(handle, allow_pickle=False, **arrays))
