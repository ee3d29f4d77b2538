"""The data of AutoBalance's two levels: which images train the model and which the loss.

The paper splits the (imbalanced, possibly noisy) training pool into a lower-level train part and
an upper-level validation part; ``bilevel.upper_data: meta`` uses the clean meta set instead.
"""

from __future__ import annotations

import numpy as np

from autorobust.config import ExperimentConfig
from autorobust.data.base import ImageDataset
from autorobust.data.splits import Splits
from autorobust.errors import ConfigError

__all__ = ["split_for_bilevel", "split_pool"]


def split_pool(
    labels: np.ndarray,
    num_classes: int,
    *,
    val_fraction: float,
    mode: str = "balanced",
    max_class_fraction: float = 0.5,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training pool into (train, val) positions, both sorted int64 arrays.

    ``stratified``: round(val_fraction · n_c) of every class (the authors' 80/20 per class, so both
    parts keep the imbalance). ``balanced``: the same number m of every class, m chosen so that
    the total is about ``val_fraction`` · N, with no class giving more than
    ``max_class_fraction`` of its images (small classes give what they can; the validation part is
    as balanced as the data allow). Every class with >= 2 images keeps >= 1 in each part.
    """
    if mode not in ("balanced", "stratified"):
        raise ConfigError(f"bilevel.val_split must be 'balanced' or 'stratified', got {mode!r}")
    counts = np.bincount(labels, minlength=num_classes)
    caps = np.where(counts >= 2, np.maximum(1, np.floor(max_class_fraction * counts)), 0)
    if mode == "stratified":
        take = np.minimum(caps, np.maximum(1, np.floor(val_fraction * counts + 0.5)))
    else:
        target = val_fraction * len(labels)
        # The largest m with Σ_c min(m, cap_c) <= target (water filling).
        m = 0
        while m < caps.max() and np.minimum(m + 1, caps).sum() <= target:
            m += 1
        take = np.minimum(max(m, 1), caps)
    take = take.astype(np.int64)
    val = [
        rng.choice(np.flatnonzero(labels == c), size=int(take[c]), replace=False)
        for c in range(num_classes)
        if take[c] > 0
    ]
    val_index = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_index = np.setdiff1d(np.arange(len(labels)), val_index)
    return train_index.astype(np.int64), val_index.astype(np.int64)


def split_for_bilevel(
    config: ExperimentConfig, splits: Splits
) -> tuple[ImageDataset, ImageDataset]:
    """(lower-level train data, upper-level validation data) of the bilevel phase.

    ``upper_data: pool`` splits the training pool (:func:`split_pool`,
    seeded by ``config.seed``); ``meta`` trains on the whole pool and validates on the meta set.
    """
    b = config.bilevel
    pool = splits.train.as_dataset()
    if b.upper_data == "meta":
        return pool, splits.meta
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 5]))
    train_index, val_index = split_pool(
        pool.labels,
        splits.num_classes,
        val_fraction=b.val_fraction,
        mode=b.val_split,
        max_class_fraction=b.max_class_val_fraction,
        rng=rng,
    )
    return pool.subset(train_index), pool.subset(val_index)
