"""Registered data sources; importing this package registers every loader in ``SOURCES``.

========================  ==========================================================
name                      data
========================  ==========================================================
``digits``                scikit-learn's 8x8 digits, no files needed
``fashion-mnist``         Fashion-MNIST IDX files (Debian ``dataset-fashion-mnist``)
``mnist``                 MNIST IDX files
``cifar10``/``cifar100``  CIFAR python pickle batches (restricted unpickler)
``image-folder``          class folders, or images plus a CSV (ISIC layout)
``npz``                   MedMNIST-style ``.npz`` archive
========================  ==========================================================
"""

from __future__ import annotations

from pathlib import Path

from autorobust.data.base import SOURCES
from autorobust.data.sources.cifar import Cifar10Source, Cifar100Source
from autorobust.data.sources.digits import DigitsSource
from autorobust.data.sources.idx import FashionMnistSource, IdxSource, MnistSource
from autorobust.data.sources.image_folder import ImageFolderSource
from autorobust.data.sources.npz import NpzSource

__all__ = [
    "Cifar10Source",
    "Cifar100Source",
    "DigitsSource",
    "FashionMnistSource",
    "IdxSource",
    "ImageFolderSource",
    "MnistSource",
    "NpzSource",
    "describe_sources",
]


def describe_sources() -> list[tuple[str, str, bool, list[Path]]]:
    """One row per registered source, each built with its default options (no file is read).

    Returns:
        (name, one-line description, whether all its files are present, the missing files),
        sorted by name; a source that needs no files (``digits``) is always present.
    """
    rows = []
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        missing = cls().missing_files()
        rows.append((name, cls.description, not missing, missing))
    return rows
