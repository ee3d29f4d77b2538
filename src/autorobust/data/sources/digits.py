"""scikit-learn's bundled 8x8 handwritten digits: a tiny data set that needs no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autorobust.data.base import DataSource, ImageDataset, SourceData, check_labels, register_source
from autorobust.data.sources._common import check_fraction, check_seed, stratified_holdout

__all__ = ["DigitsSource"]


@register_source("digits")
class DigitsSource(DataSource):
    """The 1,797 8x8 grey digits of ``sklearn.datasets.load_digits`` (UCI optical digits test set).

    The pixel values 0..16 (counts of set pixels in 4x4 blocks of a 32x32 bitmap) are scaled to
    uint8 0..255 as ``round(x * 255 / 16)``. The data set has no official test split, so a
    stratified ``test_fraction`` of every class is held out with ``default_rng(split_seed)``.

    Args:
        test_fraction: fraction of each class held out as the test split, in (0, 1).
        split_seed: seed of the hold-out.

    ``load`` returns images uint8 (N, 8, 8, 1), labels int64 in [0, 10), class names "0".."9".
    """

    description = "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); no files needed"

    def __init__(self, *, test_fraction: float = 0.3, split_seed: int = 0) -> None:
        self.test_fraction = check_fraction("digits", "test_fraction", test_fraction)
        self.split_seed = check_seed("digits", "split_seed", split_seed)

    def required_files(self) -> list[Path]:
        """None: the data ship inside scikit-learn."""
        return []

    def load(self) -> SourceData:
        """Scale the digits to uint8 and split them; see the class docstring for shapes."""
        from sklearn.datasets import load_digits  # heavy import, only when the data are needed

        bunch = load_digits()
        counts = np.asarray(bunch.images).astype(np.int64)
        # integer rounding of x * 255 / 16 keeps 16 -> 255 exactly and avoids float ties
        images = ((counts * 255 + 8) // 16).astype(np.uint8)[..., None]
        labels = check_labels(np.asarray(bunch.target), 10, "sklearn.datasets.load_digits")
        train_index, test_index = stratified_holdout(labels, self.test_fraction, self.split_seed)
        full = ImageDataset(images, labels)
        return SourceData(
            train=full.subset(train_index),
            test=full.subset(test_index),
            class_names=tuple(str(digit) for digit in range(10)),
            metadata={
                "source": "digits",
                "test_fraction": self.test_fraction,
                "split_seed": self.split_seed,
            },
        )
