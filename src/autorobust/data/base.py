"""The data-source interface: every source returns uint8 images (N, H, W, C) and int64 labels."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from autorobust._registry import Registry
from autorobust.errors import DataError

__all__ = [
    "SOURCES",
    "DataSource",
    "ImageDataset",
    "SourceData",
    "create_source",
    "register_source",
]


@dataclass(frozen=True)
class ImageDataset:
    """Images and labels held in memory.

    Attributes:
        images: uint8 array (N, H, W, C), C = 1 (grey) or 3 (RGB).
        labels: int64 array (N,), values in [0, num_classes).
        groups: optional int64 array (N,) of group attributes (e.g. a sensitive attribute).
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} "
                f"{self.labels.shape}"
            )
        if self.groups is not None and self.groups.shape != self.labels.shape:
            raise ValueError(f"groups must have shape {self.labels.shape}, got {self.groups.shape}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageDataset:
        """The samples at ``index`` (an int array or boolean mask), as a new dataset."""
        groups = None if self.groups is None else self.groups[index]
        return ImageDataset(self.images[index], self.labels[index], groups)


@dataclass(frozen=True)
class SourceData:
    """A source's own train and test splits and its class names.

    Attributes:
        train: the labelled training images (labels as given: possibly noisy).
        test: the test images.
        class_names: the K class names, in label order.
        metadata: source-specific facts (files, layout) as plain values.
        meta: the user's *trusted* images (labels checked by hand), uint8 (M, H, W, C) with int64
            labels, disjoint from ``train``; when given, :func:`autorobust.data.splits.make_splits`
            uses them as the meta / validation set instead of drawing one from ``train``. None:
            the source has no trusted set.
    """

    train: ImageDataset
    test: ImageDataset
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    meta: ImageDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        # images are (N, H, W, C): LabeledImages refuses any other shape
        return cast(tuple[int, int, int], tuple(self.train.images.shape[1:]))


class DataSource(ABC):
    """A registered loader. Constructors store their options and do no work; ``load`` reads files.

    Subclasses set ``name`` and ``description`` and implement ``required_files`` and ``load``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # True for a source of the user's own images (image folders, CSVs, .npz), whose labels nobody
    # has verified, as opposed to a benchmark whose noise is simulated on clean labels: without a
    # trusted set, its meta set is drawn from unverified labels (build_splits says so).
    user_data: ClassVar[bool] = False

    @abstractmethod
    def required_files(self) -> list[Path]:
        """Files ``load`` reads (empty for embedded data); used by ``autorobust datasets``."""

    @abstractmethod
    def load(self) -> SourceData:
        """Read and validate the files; raise :class:`DataError` naming the file and the problem."""

    def missing_files(self) -> list[Path]:
        """The required files that do not exist."""
        return [path for path in self.required_files() if not path.exists()]


SOURCES: Registry[type[DataSource]] = Registry("data source")


def register_source(name: str):
    """Class decorator registering a :class:`DataSource` subclass under ``name``."""

    def decorator(cls: type[DataSource]) -> type[DataSource]:
        cls.name = name
        return SOURCES.register(name)(cls)

    return decorator


def create_source(name: str, **options: Any) -> DataSource:
    """Instantiate the source registered as ``name`` with keyword ``options`` (e.g. ``root``)."""
    cls = SOURCES.get(name)
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name != "self"
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:  # name it instead of a Python signature error
        raise DataError(
            f"data source {name!r}: unknown option {unknown[0]!r}; accepted: "
            f"{', '.join(accepted) or '(none)'}"
        )
    return cls(**options)


def check_labels(labels: np.ndarray, num_classes: int, where: Path | str) -> np.ndarray:
    """Return ``labels`` as int64 after checking they lie in [0, num_classes); name ``where``."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{where}: labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{where}: labels must lie in [0, {num_classes}), found {int(labels.min())}..."
            f"{int(labels.max())}"
        )
    return labels.astype(np.int64)
