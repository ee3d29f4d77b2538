"""The train / meta / test / unlabeled splits of one experiment (docs/data.md, "Splits and shift").

:func:`make_splits` builds them from a source's own train and test splits in a fixed order:

1. the source's test split is kept untouched (balanced as shipped) and is only for reporting;
2. the **meta / validation set**, ``meta_per_class`` clean images of every class, is drawn from
   the source's train split *before* any shift (MW-Net's clean balanced meta set; model
   selection uses it, never the test set). When the source brings the user's own **trusted
   set** (``SourceData.meta``: an image folder's ``meta/<class>/``, a CSV's trusted rows, an
   ``.npz``'s ``meta_images``), those images are the meta set instead, whole, and nothing is
   drawn: the whole train split goes on to step 3;
3. the rest is subsampled to the imbalance profile, then its labels are corrupted by the noise
   model; clean labels, the noise mask and the indices into the source are kept;
4. a **relabel file** (``data.relabel_file``, :mod:`autorobust.data.relabel`), when given,
   replaces the pool's observed labels by a cleaned set: samples whose label it drops leave the
   pool, the others keep their (possibly new) label and an optional weight; the dropped samples
   stay available as **rejected** images without labels (``Splits.rejected``), for a method
   that learns from unlabeled images (``method: pseudo_label``);
5. the **unlabeled view** (CSNAS's search subset) is a class-balanced ``unlabeled_fraction`` of
   the (cleaned) training pool with its labels dropped: the same number of images of every class
   (by clean label), fraction * N / K, or all of a class that has fewer. On a long-tailed pool it
   therefore holds fewer than fraction * N images; the paper searches on a balanced subset, and a
   search subset with the training pool's long tail would favour cells that serve the head.

Randomness: ``np.random.SeedSequence(seed).spawn(4)`` gives four independent streams, one each
for the meta set, the imbalance subsample, the noise and the unlabeled view. With one shared
generator, changing e.g. the noise rate would change how many numbers the noise step draws and
thereby every later draw; with separate streams, the meta set and the training images are the
same whatever the noise setting, and the noisy labels are the same whatever the unlabeled
fraction, so runs that differ in one setting differ only in what that setting controls.

AutoBalance's alternative validation split (an 80/20 split of every class, then the same
imbalance on both parts) is not built here; see the project notes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from autorobust.data.base import ImageDataset, SourceData
from autorobust.data.relabel import DROPPED, RelabelFile
from autorobust.data.shift import (
    apply_label_noise,
    imbalance_indices,
    long_tail_counts,
    noise_transition_matrix,
    step_counts,
)
from autorobust.errors import ConfigError, DataError, ShiftError

__all__ = [
    "RejectedSamples",
    "Splits",
    "TrainingPool",
    "apply_relabel",
    "apply_relabel_file",
    "make_splits",
    "rejected_samples",
]

_IMBALANCE_KINDS = ("none", "long_tail", "step")
_NOISE_KINDS = ("none", "symmetric", "pair", "matrix")


@dataclass(frozen=True)
class TrainingPool:
    """The shifted training images with observed (possibly noisy) and clean labels.

    Attributes:
        images: uint8 (N, H, W, C).
        labels: int64 (N,), the observed labels a learner may use.
        clean_labels: int64 (N,), the true labels (for evaluation of reweighting only).
        noise_mask: bool (N,), ``labels != clean_labels``.
        source_index: int64 (N,), positions in the source's train split, sorted ascending.
        groups: optional int64 (N,) group attributes carried over from the source.
        weights: optional float64 (N,) in [0, 1], per-sample confidences from a relabel file;
            the trainer's loss is then the weighted mean over a batch. None: unweighted.
    """

    images: np.ndarray
    labels: np.ndarray
    clean_labels: np.ndarray
    noise_mask: np.ndarray
    source_index: np.ndarray
    groups: np.ndarray | None = None
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        for name in ("labels", "clean_labels", "source_index"):
            value = getattr(self, name)
            if value.dtype != np.int64 or value.shape != (n,):
                raise ValueError(f"{name} must be int64 ({n},), got {value.dtype} {value.shape}")
        if self.noise_mask.dtype != np.bool_ or self.noise_mask.shape != (n,):
            raise ValueError(
                f"noise_mask must be bool ({n},), got {self.noise_mask.dtype} "
                f"{self.noise_mask.shape}"
            )
        if self.groups is not None and self.groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {self.groups.shape}")
        if self.weights is not None and (
            self.weights.dtype != np.float64 or self.weights.shape != (n,)
        ):
            raise ValueError(
                f"weights must be float64 ({n},), got {self.weights.dtype} {self.weights.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def realised_noise_rate(self) -> float:
        """Fraction of wrong observed labels (0.0 for an empty pool)."""
        return float(self.noise_mask.mean()) if len(self) else 0.0

    def as_dataset(self) -> ImageDataset:
        """The pool as an :class:`ImageDataset` with the *observed* labels."""
        return ImageDataset(self.images, self.labels, self.groups)


@dataclass(frozen=True)
class RejectedSamples:
    """The pool's samples whose label a relabel file dropped: images a learner may use unlabeled.

    Attributes:
        images: uint8 (R, H, W, C).
        clean_labels: int64 (R,), the true labels, for evaluation only (e.g. the accuracy of a
            pseudo-label), like :attr:`TrainingPool.clean_labels`; a learner must not read them.
        observed_labels: int64 (R,), the labels the pool showed before the file dropped them.
        source_index: int64 (R,), positions in the source's train split, sorted ascending.
    """

    images: np.ndarray
    clean_labels: np.ndarray
    observed_labels: np.ndarray
    source_index: np.ndarray

    def __post_init__(self) -> None:
        r = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (R, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        for name in ("clean_labels", "observed_labels", "source_index"):
            value = getattr(self, name)
            if value.dtype != np.int64 or value.shape != (r,):
                raise ValueError(f"{name} must be int64 ({r},), got {value.dtype} {value.shape}")

    @classmethod
    def empty(cls, image_shape: tuple[int, ...]) -> RejectedSamples:
        """No rejected sample, for images of shape (H, W, C)."""
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros((0, *image_shape), dtype=np.uint8), none, none.copy(), none.copy())

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class Splits:
    """Everything an experiment trains, selects and reports on.

    Attributes:
        train: the shifted training pool (imbalanced, noisy labels, clean labels kept).
        meta: clean, class-balanced meta / validation set, uint8 images and int64 labels (or
            the source's trusted set as given, when it has one).
        meta_index: int64 (M,), positions of ``meta`` in the source's train split, sorted;
            disjoint from ``train.source_index``. Empty (0,) when ``meta`` is the source's
            trusted set, which is not part of its train split.
        test: the source's test split, untouched.
        unlabeled: uint8 (U, H, W, C) images of the unlabeled view; no labels.
        unlabeled_index: int64 (U,), positions of ``unlabeled`` in ``train``, sorted (for
            bookkeeping; a label-free method must not read labels through it).
        class_names: the K class names.
        relabel: what a relabel file did to the pool (file, SHA-256, sizes, the observed class
            counts before it), or None when no file was applied.
        rejected: the pool's samples whose label the relabel file dropped (-1), as unlabeled
            images (their clean labels kept for evaluation only); empty without a file, or
            when the file drops nothing. Not part of ``unlabeled`` (CSNAS's label-free view of
            the kept pool), which it does not change.
        meta_trusted: True when ``meta`` is the source's trusted set (``SourceData.meta``);
            False when it was drawn from the source's train split.
    """

    train: TrainingPool
    meta: ImageDataset
    meta_index: np.ndarray
    test: ImageDataset
    unlabeled: np.ndarray
    unlabeled_index: np.ndarray
    class_names: tuple[str, ...]
    relabel: dict[str, Any] | None = None
    rejected: RejectedSamples | None = None
    meta_trusted: bool = False

    def __post_init__(self) -> None:
        if self.rejected is None:  # a frozen dataclass: set once, here
            object.__setattr__(self, "rejected", RejectedSamples.empty(self.train.images.shape[1:]))

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.class_names)

    @property
    def train_class_counts(self) -> np.ndarray:
        """int64 (K,), training images per *observed* label: the n_c that losses such as
        logit adjustment see (the clean counts are unknown to a learner). After a relabel file,
        the counts of the labels actually trained on (kept samples, new labels)."""
        return np.bincount(self.train.labels, minlength=self.num_classes).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        """Sizes, class counts and realised noise rate as plain JSON-serialisable values."""
        k = self.num_classes
        clean_counts = np.bincount(self.train.clean_labels, minlength=k)
        nonzero = clean_counts[clean_counts > 0]
        summary: dict[str, Any] = {
            "num_classes": k,
            "class_names": list(self.class_names),
            "train_size": len(self.train),
            "meta_size": len(self.meta),
            "meta_source": "trusted" if self.meta_trusted else "drawn",
            "image_shape": list(self.train.images.shape[1:]),
            "test_size": len(self.test),
            "unlabeled_size": len(self.unlabeled),
            "train_class_counts": self.train_class_counts.tolist(),
            "train_clean_class_counts": clean_counts.tolist(),
            "meta_class_counts": np.bincount(self.meta.labels, minlength=k).tolist(),
            "test_class_counts": np.bincount(self.test.labels, minlength=k).tolist(),
            "imbalance_ratio": float(nonzero.max() / nonzero.min()) if nonzero.size else 1.0,
            "noise_rate": self.train.realised_noise_rate,
        }
        if self.relabel is not None:
            summary["relabel"] = dict(self.relabel)
        return summary


def _check_number(name: str, value: float, low: float, high: float, closed_high: bool) -> None:
    ok = math.isfinite(value) and low < value and (value <= high if closed_high else value < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ConfigError(f"{name} must lie in ({low:g}, {high:g}{bracket}, got {value}")


def _imbalance_counts(
    imbalance: str, available: np.ndarray, rho: float, mu: float, n_max: int | None
) -> np.ndarray | None:
    """Wanted per-class sizes of the training pool, or None to keep every remaining image."""
    if imbalance == "none" and n_max is None:
        return None
    if n_max is None:
        # The smallest remaining class bounds n_max: each profile asks at most n_max of a class.
        n_max = int(available.min())
    k = available.size
    if imbalance == "none":
        counts = long_tail_counts(n_max, k, 1.0)
    elif imbalance == "long_tail":
        counts = long_tail_counts(n_max, k, rho)
    else:
        counts = step_counts(n_max, k, rho, mu)
    short = np.flatnonzero(counts > available)
    if short.size:
        c = int(short[0])
        raise ShiftError(
            f"n_max={n_max} asks for {int(counts[c])} examples of class {c}, which has only "
            f"{int(available[c])} left after the meta set; lower n_max"
        )
    return counts


def _balanced_sample(
    labels: np.ndarray, num_classes: int, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Sorted positions of q = round(fraction * N / K) samples of every present class (at least 1,
    at most the class's size), K counting the present classes."""
    present = np.unique(labels)
    quota = max(1, math.floor(fraction * len(labels) / max(len(present), 1) + 0.5))
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            continue
        size = min(members.size, quota)
        chosen.append(rng.choice(members, size=size, replace=False))
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen).astype(np.int64))


def make_splits(
    source: SourceData,
    *,
    meta_per_class: int,
    imbalance: Literal["none", "long_tail", "step"] = "none",
    rho: float = 1.0,
    mu: float = 0.5,
    n_max: int | None = None,
    noise: Literal["none", "symmetric", "pair", "matrix"] = "none",
    noise_rate: float = 0.0,
    noise_matrix: np.ndarray | None = None,
    include_true_class: bool = False,
    unlabeled_fraction: float = 0.1,
    relabel: RelabelFile | None = None,
    seed: int,
) -> Splits:
    """Build the experiment's splits from ``source`` in the fixed order of the module docstring.

    Args:
        source: the source's train and test splits (uint8 (N, H, W, C) images, int64 labels).
        meta_per_class: clean images per class in the meta / validation set, >= 1 (MW-Net: 10
            per class for imbalance, 100 per class for noise on CIFAR-10). Unused when the
            source has a trusted set (``source.meta``), which is the meta set as given.
        imbalance: "none" (keep all remaining images, or exactly ``n_max`` per class when
            ``n_max`` is given), "long_tail" (exponential profile) or "step".
        rho: imbalance ratio n_max / n_min >= 1; must be 1 with imbalance "none".
        mu: fraction of minority classes for the step profile, in (0, 1).
        n_max: size of the largest class after the shift; default the smallest class size left
            after the meta set is drawn, so that every class can supply its share.
        noise: "none", "symmetric", "pair" or "matrix" (see
            :func:`autorobust.data.shift.noise_transition_matrix`).
        noise_rate: p in [0, 1); must be 0 with noise "none"; unused with "matrix".
        noise_matrix: (K, K) row-stochastic matrix for noise "matrix".
        include_true_class: symmetric noise drawn from all K classes (MW-Net's code).
        unlabeled_fraction: the unlabeled view holds round(fraction * N / K) images of every
            class (by clean label) of the shifted training pool of N images, or all of a smaller
            class; at least one image per present class.
        relabel: a relabel file (:func:`autorobust.data.relabel.read_relabel_file`) to apply to
            the shifted pool (see :func:`apply_relabel`); None: keep the observed labels.
        seed: non-negative integer seeding all four random streams.

    Returns:
        :class:`Splits`.

    Raises:
        ConfigError: an argument is out of range or contradicts another.
        ShiftError: the shift is impossible for this source (a class too small, an empty class).
        DataError: the relabel file does not fit this pool (see :func:`apply_relabel`).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        isinstance(meta_per_class, bool)
        or not isinstance(meta_per_class, (int, np.integer))
        or meta_per_class < 1
    ):
        raise ConfigError(
            f"meta_per_class must be an integer >= 1 (model selection needs a meta set), "
            f"got {meta_per_class!r}"
        )
    if imbalance not in _IMBALANCE_KINDS:
        raise ConfigError(
            f"imbalance must be one of {', '.join(_IMBALANCE_KINDS)}; got {imbalance!r}"
        )
    if noise not in _NOISE_KINDS:
        raise ConfigError(f"noise must be one of {', '.join(_NOISE_KINDS)}; got {noise!r}")
    if imbalance == "none" and rho != 1.0:
        raise ConfigError(f"rho={rho} has no effect with imbalance 'none'; set rho to 1")
    if noise == "none" and noise_rate != 0.0:
        raise ConfigError(f"noise_rate={noise_rate} has no effect with noise 'none'; set it to 0")
    if noise != "matrix" and noise_matrix is not None:
        raise ConfigError(f"noise_matrix is only used with noise 'matrix', got noise {noise!r}")
    if n_max is not None and (
        isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1
    ):
        raise ConfigError(f"n_max must be a positive integer or None, got {n_max!r}")
    _check_number("unlabeled_fraction", unlabeled_fraction, 0.0, 1.0, closed_high=True)

    k = source.num_classes
    labels = source.train.labels
    meta_rng, imbalance_rng, noise_rng, unlabeled_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )

    # (2) The meta set comes from the clean pool before any shift, so it stays balanced and
    # its images can never appear in the training pool; or it is the user's trusted set, which
    # is not part of the train split at all (the meta stream is then not used).
    if source.meta is not None:
        meta = source.meta
        info = source.metadata  # names the files in messages
        where = info.get("meta_csv") or info.get("path") or info.get("root") or "data source"
        if meta.images.shape[1:] != source.train.images.shape[1:]:
            raise DataError(
                f"{where}: the trusted images are {meta.images.shape[1:]} but the training "
                f"images are {source.train.images.shape[1:]}"
            )
        trusted_counts = np.bincount(meta.labels, minlength=k)
        if (trusted_counts == 0).any():
            c = int(np.flatnonzero(trusted_counts == 0)[0])
            raise DataError(
                f"{where}: the trusted set has no image of class {c} ({source.class_names[c]!r}); "
                "the meta set selects the epoch by balanced accuracy and needs every class"
            )
        meta_index = np.zeros(0, dtype=np.int64)
        rest = np.arange(len(labels), dtype=np.int64)
    else:
        per_class = np.bincount(labels, minlength=k)
        too_small = np.flatnonzero(per_class <= meta_per_class)
        if too_small.size:
            c = int(too_small[0])
            raise ShiftError(
                f"meta_per_class={meta_per_class} leaves no training images of class {c} "
                f"({source.class_names[c]!r} has {int(per_class[c])} in the source train split)"
            )
        meta_index = np.sort(
            np.concatenate(
                [
                    meta_rng.choice(np.flatnonzero(labels == c), size=meta_per_class, replace=False)
                    for c in range(k)
                ]
            ).astype(np.int64)
        )
        meta = source.train.subset(meta_index)
        rest = np.setdiff1d(np.arange(len(labels), dtype=np.int64), meta_index, assume_unique=True)

    # (3) Imbalance, then noise, on the rest only.
    counts = _imbalance_counts(imbalance, np.bincount(labels[rest], minlength=k), rho, mu, n_max)
    if counts is None:
        train_index = rest
    else:
        train_index = rest[imbalance_indices(labels[rest], counts, imbalance_rng)]
    clean = labels[train_index].astype(np.int64)
    if noise == "none":
        observed, noise_mask = clean.copy(), np.zeros(clean.shape, dtype=bool)
    else:
        transition = noise_transition_matrix(
            noise,
            noise_rate,
            k,
            matrix=noise_matrix,
            include_true_class=include_true_class,
        )
        noisy = apply_label_noise(clean, transition, noise_rng)
        observed, noise_mask = noisy.observed, noisy.noise_mask
    groups = None if source.train.groups is None else source.train.groups[train_index]
    train = TrainingPool(
        images=source.train.images[train_index],
        labels=observed,
        clean_labels=clean,
        noise_mask=noise_mask,
        source_index=train_index,
        groups=groups,
    )
    if relabel is not None:
        # The relabelled pool and the unlabeled view drawn from it (step 5 of the module
        # docstring), as for a design's selection applied in memory: one function for both.
        shifted = Splits(
            train=train,
            meta=meta,
            meta_index=meta_index,
            test=source.test,
            unlabeled=train.images[:0],
            unlabeled_index=np.zeros(0, dtype=np.int64),
            class_names=tuple(source.class_names),
            meta_trusted=source.meta is not None,
        )
        return apply_relabel_file(
            shifted, relabel, unlabeled_fraction=unlabeled_fraction, seed=int(seed)
        )
    # (5) Stratified by the clean label so the view has the shifted class distribution exactly,
    # whatever the noise; the labels themselves are dropped.
    unlabeled_index = _balanced_sample(train.clean_labels, k, unlabeled_fraction, unlabeled_rng)
    return Splits(
        train=train,
        meta=meta,
        meta_index=meta_index,
        test=source.test,
        unlabeled=train.images[unlabeled_index],
        unlabeled_index=unlabeled_index,
        class_names=tuple(source.class_names),
        meta_trusted=source.meta is not None,
    )


def apply_relabel_file(
    splits: Splits, relabel: RelabelFile, *, unlabeled_fraction: float, seed: int
) -> Splits:
    """``splits`` whose training pool has the relabel file applied (:func:`apply_relabel`).

    The one place a relabel file is applied: :func:`make_splits` (``data.relabel_file``) and a
    design's ``selection`` applied in memory (``autorobust.design.pipeline``) both call it, so a
    run trains on the same data either way. Besides the kept pool it sets ``relabel`` (the
    summary) and ``rejected`` (the samples the file dropped), and draws the unlabeled view
    (step 5 of the module docstring) afresh from the relabelled pool, with the same random stream
    as :func:`make_splits` (``seed``'s fourth), so that ``unlabeled_index`` holds positions in
    the pool the run trains on; the view ``splits`` held (positions in the pool before
    relabelling) is discarded. Meta, test and class names are kept.

    Args:
        splits: splits as :func:`make_splits` builds them without a relabel file.
        relabel: the file, read by :func:`autorobust.data.relabel.read_relabel_file`.
        unlabeled_fraction: as for :func:`make_splits` (``data.unlabeled_fraction``).
        seed: the seed ``splits`` were built with.

    Raises:
        DataError: the file does not fit this pool (see :func:`apply_relabel`).
    """
    pool = splits.train
    train, summary = apply_relabel(pool, relabel, splits.class_names)
    rejected = rejected_samples(pool, relabel)
    unlabeled_rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(4)[3])
    # (5) Stratified by the clean label so the view has the shifted class distribution exactly,
    # whatever the noise; the labels themselves are dropped.
    unlabeled_index = _balanced_sample(
        train.clean_labels, len(splits.class_names), unlabeled_fraction, unlabeled_rng
    )
    return dataclasses.replace(
        splits,
        train=train,
        unlabeled=train.images[unlabeled_index],
        unlabeled_index=unlabeled_index,
        relabel=summary,
        rejected=rejected,
    )


def apply_relabel(
    pool: TrainingPool, relabel: RelabelFile, class_names: tuple[str, ...]
) -> tuple[TrainingPool, dict[str, Any]]:
    """The pool with a relabel file applied: only the kept samples, with their new labels.

    A kept sample has a label in 0..K-1 in the file; its images, clean label, source index, groups
    and weight (if the file has weights) are carried over, and its noise flag is recomputed
    against the new label, so ``noise_mask`` and the realised noise rate describe the cleaned set.

    Args:
        pool: the shifted training pool (N samples).
        relabel: the file, as read by :func:`autorobust.data.relabel.read_relabel_file`.
        class_names: the K class names (for messages).

    Returns:
        (the cleaned pool, a JSON-serialisable summary for ``data.json``: file, sha256,
        pool_size, kept, dropped, relabelled (kept with a label other than the observed one),
        weighted, mean_weight (of kept samples, or None) and pool_class_counts (observed, before
        the file)).

    Raises:
        DataError: one line naming the file: it was made for another pool (length or
            ``source_index`` differ: another config or seed), a label is not a class of this
            source, or a class keeps no sample (with a weight > 0).
    """
    path, k = relabel.path, len(class_names)
    n = len(pool)
    if len(relabel.labels) != n:
        raise DataError(
            f"{path}: has {len(relabel.labels)} labels, but this config's training pool has {n} "
            "samples (made for another config or seed?)"
        )
    if not np.array_equal(relabel.source_index, pool.source_index):
        first = int(np.flatnonzero(relabel.source_index != pool.source_index)[0])
        raise DataError(
            f"{path}: source_index differs from this config's training pool (first at position "
            f"{first}): made for another config or seed"
        )
    labels = relabel.labels
    if n and labels.max() >= k:
        raise DataError(
            f"{path}: labels must be -1 (dropped) or a class in 0..{k - 1}, found "
            f"{int(labels.max())}"
        )
    kept = np.flatnonzero(labels != DROPPED)
    weights = None if relabel.weights is None else relabel.weights[kept]
    new_labels = labels[kept]
    # A class whose every kept sample has weight 0 is as empty as one with no sample: a prior-based
    # loss would still count it, yet nothing of it is learned.
    counted = new_labels if weights is None else new_labels[weights > 0]
    present = np.bincount(counted, minlength=k)
    if (present == 0).any():
        c = int(np.flatnonzero(present == 0)[0])
        raise DataError(
            f"{path}: keeps no sample of class {c} ({class_names[c]!r}) with a weight > 0; "
            "every class needs at least one"
        )
    cleaned = TrainingPool(
        images=pool.images[kept],
        labels=new_labels,
        clean_labels=pool.clean_labels[kept],
        noise_mask=new_labels != pool.clean_labels[kept],
        source_index=pool.source_index[kept],
        groups=None if pool.groups is None else pool.groups[kept],
        weights=weights,
    )
    summary = {
        "file": str(path),
        "sha256": relabel.sha256,
        "pool_size": n,
        "kept": int(kept.size),
        "dropped": int(n - kept.size),
        "relabelled": int((new_labels != pool.labels[kept]).sum()),
        "weighted": weights is not None,
        "mean_weight": None if weights is None or not weights.size else float(weights.mean()),
        "pool_class_counts": np.bincount(pool.labels, minlength=k).tolist(),
    }
    return cleaned, summary


def rejected_samples(pool: TrainingPool, relabel: RelabelFile) -> RejectedSamples:
    """The samples of ``pool`` whose label ``relabel`` drops (-1), in pool order.

    Call it after :func:`apply_relabel`, which checks that the file belongs to the pool.

    Args:
        pool: the shifted training pool (N samples) the file was made for.
        relabel: the file (N labels).

    Returns:
        :class:`RejectedSamples` of the R dropped samples (R may be 0).

    Raises:
        ValueError: the file has another length than the pool (a caller's error: apply_relabel
            refuses such a file first).
    """
    if len(relabel.labels) != len(pool):
        raise ValueError(f"{len(relabel.labels)} labels for a pool of {len(pool)} samples")
    dropped = np.flatnonzero(relabel.labels == DROPPED)
    return RejectedSamples(
        images=pool.images[dropped],
        clean_labels=pool.clean_labels[dropped],
        observed_labels=pool.labels[dropped],
        source_index=pool.source_index[dropped],
    )
