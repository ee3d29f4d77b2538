"""Arrays in one ``.npz`` archive with the MedMNIST key layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autorobust._io import read_npz
from autorobust.data.base import DataSource, ImageDataset, SourceData, check_labels, register_source
from autorobust.data.sources._common import check_positive_int, resolve_path
from autorobust.errors import ConfigError, DataError

__all__ = ["NpzSource"]

_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_META_KEYS = ("meta_images", "meta_labels")  # optional: the user's trusted set


@register_source("npz")
class NpzSource(DataSource):
    """A MedMNIST-style archive: ``{train,test}_images`` and ``{train,test}_labels`` arrays.

    The archive is opened with ``allow_pickle=False``, so object arrays are refused and no code in
    the file can run. ``val_images`` / ``val_labels``, when present, are ignored: validation data
    are drawn from the training split by the shift pipeline like for every other source (their
    presence is recorded in ``metadata["ignored_keys"]``).

    **Trusted set**: an optional pair ``meta_images`` / ``meta_labels`` (same rules as the other
    arrays) holds images whose labels were checked by hand; they become the meta / validation
    set (``SourceData.meta``) instead of a random draw from the training labels.

    Rules:
        * images (N, H, W) get a channel axis; (N, H, W, 1) and (N, H, W, 3) are kept;
        * images must have an integer dtype with values in 0..255 (they are cast to uint8); float
          images are refused because [0, 1] and [0, 255] scales cannot be told apart safely;
        * labels (N,) or (N, 1) of an integer dtype; (N, k > 1) (multi-label) is refused;
        * the number of classes is ``num_classes``, else ``len(class_names)``, else the largest
          label in either split plus one.

    Args:
        path: the ``.npz`` file; default ``~/.cache/autorobust/dataset.npz``.
        num_classes: number of classes, when the labels do not show all of them.
        class_names: the classes in label order; default "0", "1", ...

    ``load`` returns images uint8 (N, H, W, C) and labels int64 in [0, num_classes).
    """

    user_data = True
    description = "MedMNIST-style .npz archive (train/test images and labels)"
    default_path = "~/.cache/autorobust/dataset.npz"

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if num_classes is not None:
            num_classes = check_positive_int("npz", "num_classes", num_classes)
        if class_names is not None:
            if isinstance(class_names, str) or len(class_names) == 0:
                raise ConfigError(
                    f"npz: class_names must be a non-empty list of names, got {class_names!r}"
                )
            if num_classes is not None and num_classes != len(class_names):
                raise ConfigError(
                    f"npz: num_classes={num_classes} but class_names has {len(class_names)} names"
                )
        self.path = path
        self.num_classes = num_classes
        self.class_names = None if class_names is None else tuple(str(n) for n in class_names)

    @property
    def file(self) -> Path:
        """The archive that is read (``path`` or the default), with ``~`` expanded."""
        return resolve_path(self.path, self.default_path)

    def required_files(self) -> list[Path]:
        """The ``.npz`` archive."""
        return [self.file]

    def _read(self) -> tuple[dict[str, np.ndarray], list[str]]:
        path = self.file
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        names: list[str] = []

        def select(found: list[str]) -> list[str]:
            names.extend(found)
            missing = [key for key in _KEYS if key not in found]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; found "
                    f"{', '.join(found) or 'none'}"
                )
            present = [key for key in _META_KEYS if key in found]
            if len(present) == 1:
                other = _META_KEYS[1 - _META_KEYS.index(present[0])]
                raise DataError(
                    f"{path}: has {present[0]} but no {other}; a trusted set needs both"
                )
            return [*_KEYS, *present]

        arrays = read_npz(path, select=select)
        ignored = [name for name in names if name not in (*_KEYS, *_META_KEYS)]
        return arrays, ignored

    def _images(self, images: np.ndarray, key: str) -> np.ndarray:
        path = self.file
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                f"{path}: {key} must be (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {images.shape}"
            )
        if images.dtype == np.uint8:
            return images
        if not np.issubdtype(images.dtype, np.integer):
            raise DataError(
                f"{path}: {key} must hold integers 0..255 (uint8), got {images.dtype}; "
                "scale float images to 0..255 and cast them to uint8"
            )
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(
                f"{path}: {key} must hold values 0..255, found {images.min()}..{images.max()}"
            )
        return images.astype(np.uint8)

    def _labels(self, labels: np.ndarray, key: str) -> np.ndarray:
        path = self.file
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise DataError(
                f"{path}: {key} must be (N,) or (N, 1) class indices, got {labels.shape} "
                "(multi-label data are not supported)"
            )
        if not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
            raise DataError(f"{path}: {key} must be integer class indices, got {labels.dtype}")
        return labels

    def load(self) -> SourceData:
        """Read and validate the archive; raise :class:`DataError` naming the file and array."""
        path = self.file
        arrays, ignored = self._read()
        splits = {}
        for split in ("train", "test", "meta"):
            if f"{split}_images" not in arrays:  # no trusted set
                continue
            images = self._images(arrays[f"{split}_images"], f"{split}_images")
            labels = self._labels(arrays[f"{split}_labels"], f"{split}_labels")
            if len(images) != len(labels):
                raise DataError(
                    f"{path}: {split}_images holds {len(images)} images but {split}_labels "
                    f"holds {len(labels)} labels"
                )
            splits[split] = (images, labels)
        if len(splits["train"][1]) == 0:
            raise DataError(f"{path}: train_images holds no images")
        for split in splits:
            if splits["train"][0].shape[1:] != splits[split][0].shape[1:]:
                raise DataError(
                    f"{path}: {split}_images are {splits[split][0].shape[1:]} per image but "
                    f"train_images are {splits['train'][0].shape[1:]}"
                )
        num_classes = self.num_classes
        if num_classes is None and self.class_names is not None:
            num_classes = len(self.class_names)
        if num_classes is None:
            largest = [int(labels.max()) for _, labels in splits.values() if labels.size]
            num_classes = max(largest, default=0) + 1
        class_names = self.class_names or tuple(str(i) for i in range(num_classes))
        datasets = {
            split: ImageDataset(
                images, check_labels(labels, num_classes, f"{path}: {split}_labels")
            )
            for split, (images, labels) in splits.items()
        }
        return SourceData(
            train=datasets["train"],
            test=datasets["test"],
            class_names=class_names,
            metadata={"source": "npz", "path": str(path), "ignored_keys": tuple(ignored)},
            meta=datasets.get("meta"),
        )
