"""Simulated distribution shift: class imbalance profiles and label noise (docs/data.md).

A functional core in numpy: plain arguments in, arrays out, every random choice taken from an
explicit ``np.random.Generator``. Validating configuration files is the config module's job;
these functions check only what makes a shift impossible and raise :class:`ShiftError` with a
one-line message naming the parameter.

Imbalance (Cao et al., LDAM-DRW, ``imbalance_cifar.py``; used by MW-Net and AutoBalance):

* exponential ("long-tailed") profile  n_c = floor(n_max * rho^(-c/(K-1))),  c = 0..K-1;
* step profile: the *last* ceil(K*mu) classes are minority classes with floor(n_max/rho)
  images, the others keep n_max.

Label noise (MW-Net "unif" and "flip", or any row-stochastic transition matrix T) is applied
with exact counts rather than independent Bernoulli draws; see :func:`apply_label_noise`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from autorobust._validation import check_row_stochastic
from autorobust.errors import ShiftError

__all__ = [
    "NoisyLabels",
    "apply_label_noise",
    "check_transition_matrix",
    "imbalance_indices",
    "long_tail_counts",
    "noise_transition_matrix",
    "step_counts",
]

# Absolute slack for floor/ceil of products such as 3000 * 100**-0.5 = 299.99999999999994 that
# are integers in exact arithmetic; far below any genuine fractional part of a count.
_EPS = 1e-9


def _check_profile_args(n_max: int, num_classes: int, rho: float) -> None:
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ShiftError(f"n_max must be a positive integer, got {n_max!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ShiftError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ShiftError(f"num_classes must be >= 1, got {num_classes}")
    if not math.isfinite(rho) or rho < 1:
        raise ShiftError(f"imbalance ratio rho must be a finite number >= 1, got {rho}")


def _check_no_empty_class(counts: np.ndarray, n_max: int, rho: float, formula: str) -> None:
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        c = int(empty[0])
        raise ShiftError(
            f"class {c} would have 0 training examples: n_max={n_max}, rho={rho:g} gives "
            f"{formula.format(c=c)} = 0; raise n_max or lower rho"
        )


def long_tail_counts(n_max: int, num_classes: int, rho: float) -> np.ndarray:
    """Per-class sizes of the exponential long-tailed profile.

    n_c = floor(n_max * rho^(-c/(K-1))) for c = 0..K-1 (Cao et al. 2019; MW-Net and AutoBalance
    use the same profile), so class 0 is the head with n_max images and class K-1 the tail with
    floor(n_max/rho). rho = 1 gives n_max for every class; K = 1 gives [n_max].

    Args:
        n_max: size of the largest class, a positive integer.
        num_classes: K >= 1.
        rho: imbalance ratio n_max / n_min >= 1.

    Returns:
        int64 array (K,), non-increasing.

    Raises:
        ShiftError: rho < 1, num_classes < 1, n_max < 1, or a class would end with 0 images.
    """
    _check_profile_args(n_max, num_classes, rho)
    if num_classes == 1:
        return np.array([n_max], dtype=np.int64)
    exponents = -np.arange(num_classes, dtype=np.float64) / (num_classes - 1)
    counts = np.floor(n_max * np.power(float(rho), exponents) + _EPS).astype(np.int64)
    k = num_classes - 1
    _check_no_empty_class(counts, n_max, rho, f"floor(n_max * rho**(-{{c}}/{k}))")
    return counts


def step_counts(n_max: int, num_classes: int, rho: float, mu: float = 0.5) -> np.ndarray:
    """Per-class sizes of the step imbalance profile.

    The last ceil(K*mu) classes are minority classes with floor(n_max/rho) images; the other
    classes keep n_max. mu is the *fraction of minority classes*, as in Cao et al.'s step
    imbalance (their code: the first K/2 classes keep n_max, the last K/2 get n_max/rho).
    The wording "the first ceil(K*mu) classes keep n_max" would contradict that definition of
    mu; we follow the definition, which also matches the long-tailed profile in
    putting the head classes first.

    Args:
        n_max: size of a majority class, a positive integer.
        num_classes: K >= 2 (a step needs a majority and a minority class).
        rho: imbalance ratio >= 1.
        mu: fraction of minority classes, in (0, 1); must leave at least one majority class.

    Returns:
        int64 array (K,), non-increasing.

    Raises:
        ShiftError: an argument is out of range or the minority classes would be empty.
    """
    _check_profile_args(n_max, num_classes, rho)
    if not (0.0 < mu < 1.0):
        raise ShiftError(f"mu (fraction of minority classes) must lie in (0, 1), got {mu}")
    # Guard the ceiling against float error: 10 * 0.3 = 3.0000000000000004 must give 3.
    n_minority = math.ceil(num_classes * mu - _EPS)
    if n_minority >= num_classes:
        raise ShiftError(
            f"mu={mu} makes all {num_classes} classes minority classes "
            f"(ceil(K*mu) = {n_minority}); the step profile needs at least one majority class"
        )
    counts = np.full(num_classes, n_max, dtype=np.int64)
    counts[num_classes - n_minority :] = math.floor(n_max / rho + _EPS)
    _check_no_empty_class(counts, n_max, rho, "floor(n_max / rho)")
    return counts


def imbalance_indices(
    labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Indices of a subsample, without replacement, holding exactly ``counts[c]`` of class c.

    Args:
        labels: int array (N,) of class indices in [0, K).
        counts: int array (K,) of wanted sizes, 0 <= counts[c] <= number of class-c labels.
        rng: source of the random choice within each class.

    Returns:
        int64 array (sum(counts),) of positions into ``labels``, sorted ascending.

    Raises:
        ShiftError: a label outside [0, K), a negative count, or a class with fewer
            examples than requested.
    """
    labels = np.asarray(labels)
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ShiftError(f"counts must be a non-empty 1-D array (K,), got shape {counts.shape}")
    if labels.ndim != 1:
        raise ShiftError(f"labels must be a 1-D array (N,), got shape {labels.shape}")
    num_classes = counts.size
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ShiftError(
            f"labels must lie in [0, {num_classes}) to match counts of length {num_classes}, "
            f"found {int(labels.min())}..{int(labels.max())}"
        )
    if (counts < 0).any():
        c = int(np.flatnonzero(counts < 0)[0])
        raise ShiftError(f"counts[{c}] must be >= 0, got {int(counts[c])}")
    available = np.bincount(labels, minlength=num_classes)
    short = np.flatnonzero(counts > available)
    if short.size:
        c = int(short[0])
        raise ShiftError(
            f"counts[{c}]={int(counts[c])} exceeds the {int(available[c])} examples of class {c}"
        )
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(counts[c]), replace=False)
        for c in range(num_classes)
    ]
    return np.sort(np.concatenate(chosen).astype(np.int64))


def _check_rate(rate: float) -> None:
    if not (0.0 <= rate < 1.0):
        raise ShiftError(f"noise rate must lie in [0, 1), got {rate}")


def check_transition_matrix(matrix: np.ndarray, num_classes: int) -> np.ndarray:
    """Validate a label-noise transition matrix and return it as float64.

    T[c, j] is the probability that a clean label c is observed as j.

    Args:
        matrix: array-like (K, K), non-negative and finite, every row summing to 1 within
            :data:`autorobust._validation.ROW_SUM_TOLERANCE`.
        num_classes: K.

    Returns:
        float64 array (K, K), a copy.

    Raises:
        ShiftError: wrong shape, a negative or non-finite entry, or a row that does not sum to 1
            (one line naming the entry or row; :func:`autorobust._validation.check_row_stochastic`).
    """
    return check_row_stochastic(
        matrix, name="noise matrix", num_classes=num_classes, error=ShiftError
    )


def noise_transition_matrix(
    kind: Literal["symmetric", "pair", "matrix"],
    rate: float,
    num_classes: int,
    *,
    matrix: np.ndarray | None = None,
    include_true_class: bool = False,
) -> np.ndarray:
    """The (K, K) label-noise transition matrix T, T[c, j] = P(observed j | clean c).

    * ``"symmetric"`` (MW-Net "unif"): 1-p on the diagonal and p/(K-1) elsewhere, so a
      fraction p of the labels is wrong. ``include_true_class=True`` reproduces MW-Net's code,
      which draws the replacement from all K classes: T = (1-p) I + p/K, a real flip rate of
      p(K-1)/K.
    * ``"pair"`` (MW-Net "flip"): 1-p on the diagonal and p at (c, (c+1) mod K).
    * ``"matrix"``: the user's ``matrix``, validated by :func:`check_transition_matrix`;
      ``rate`` is not used.

    Args:
        kind: "symmetric", "pair" or "matrix".
        rate: noise rate p in [0, 1); for "pair" p < 0.5 so the majority label stays correct.
        num_classes: K >= 1; K >= 2 when p > 0.
        matrix: the (K, K) matrix for kind "matrix".
        include_true_class: only for "symmetric", see above.

    Returns:
        float64 array (K, K) whose rows sum to 1.

    Raises:
        ShiftError: an invalid kind, rate, class count or matrix.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ShiftError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ShiftError(f"num_classes must be >= 1, got {num_classes}")
    if kind == "matrix":
        if matrix is None:
            raise ShiftError("noise matrix is required when the noise kind is 'matrix'")
        return check_transition_matrix(matrix, num_classes)
    if kind not in ("symmetric", "pair"):
        raise ShiftError(f"noise kind must be one of symmetric, pair, matrix; got {kind!r}")
    if matrix is not None:
        raise ShiftError(f"noise matrix is only used with noise kind 'matrix', got kind {kind!r}")
    _check_rate(rate)
    k = num_classes
    if k < 2:
        if rate > 0:
            raise ShiftError(f"label noise needs num_classes >= 2, got {k} with rate {rate}")
        return np.ones((1, 1))
    if kind == "symmetric":
        if include_true_class:
            return (1.0 - rate) * np.eye(k) + rate / k
        t = np.full((k, k), rate / (k - 1))
        np.fill_diagonal(t, 1.0 - rate)
        return t
    if rate >= 0.5:
        raise ShiftError(
            f"pair-flip noise rate must be < 0.5 so most labels stay correct, got {rate}"
        )
    t = (1.0 - rate) * np.eye(k)
    t[np.arange(k), (np.arange(k) + 1) % k] += rate
    return t


@dataclass(frozen=True)
class NoisyLabels:
    """Labels after simulated noise, with the clean labels kept.

    Attributes:
        observed: int64 (N,), the labels a learner sees.
        clean: int64 (N,), the true labels.
        noise_mask: bool (N,), ``observed != clean``.
    """

    observed: np.ndarray
    clean: np.ndarray
    noise_mask: np.ndarray

    @property
    def realised_rate(self) -> float:
        """Fraction of labels that are wrong (0.0 for an empty set)."""
        return float(self.noise_mask.mean()) if self.noise_mask.size else 0.0


def _apportion(n: int, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split n into parts ~ n * probs by the largest-remainder (Hamilton) method.

    Every part is floor or ceil of its quota n * probs[j]; ties between equal remainders are
    broken uniformly at random by ``rng``.
    """
    quotas = n * probs
    parts = np.floor(quotas + _EPS)
    remainders = quotas - parts  # may be -_EPS for exact integers: they rank last
    missing = n - int(parts.sum())  # the floors are exact integers in float64
    if missing > 0:
        order = np.lexsort((rng.random(probs.size), -remainders))
        parts[order[:missing]] += 1
    return parts.astype(np.int64)


def apply_label_noise(
    labels: np.ndarray, transition: np.ndarray, rng: np.random.Generator
) -> NoisyLabels:
    """Corrupt ``labels`` following the transition matrix, with exact per-class counts.

    For each clean class c with n_c samples, n_c is split over row T[c] by the largest-remainder
    method (every part is floor or ceil of n_c * T[c, j], ties broken by ``rng``), and those
    target labels are assigned to a random permutation of the class's samples. Hence for any
    seed the number of class-c labels turned into j is within 1 of n_c * T[c, j], and the
    realised flip rate of every class is within 1/n_c of the requested one. Independent
    Bernoulli draws would give the requested rate only in expectation: a tail class of 5 images
    at p = 0.4 would keep all 5 labels clean with probability 0.08 and lose all of them with
    probability 0.01, so results would depend on the seed in ways the user never asked for.

    Args:
        labels: int array (N,) of clean labels in [0, K).
        transition: float (K, K) row-stochastic matrix, e.g. from :func:`noise_transition_matrix`.
        rng: source of the tie-breaks and the permutations.

    Returns:
        :class:`NoisyLabels` with int64 ``observed`` and ``clean`` and bool ``noise_mask``.

    Raises:
        ShiftError: an invalid matrix or a label outside [0, K).
    """
    clean = np.asarray(labels)
    if clean.ndim != 1:
        raise ShiftError(f"labels must be a 1-D array (N,), got shape {clean.shape}")
    clean = clean.astype(np.int64)
    t = np.asarray(transition, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ShiftError(f"noise matrix must be square (K, K), got shape {t.shape}")
    num_classes = t.shape[0]
    t = check_transition_matrix(t, num_classes)
    t = t / t.sum(axis=1, keepdims=True)  # rows within the tolerance of 1: quotas sum to n_c
    if clean.size and (clean.min() < 0 or clean.max() >= num_classes):
        raise ShiftError(
            f"labels must lie in [0, {num_classes}) for a {num_classes}x{num_classes} noise "
            f"matrix, found {int(clean.min())}..{int(clean.max())}"
        )
    observed = clean.copy()
    for c in range(num_classes):
        members = np.flatnonzero(clean == c)
        if members.size == 0:
            continue
        parts = _apportion(members.size, t[c], rng)
        targets = np.repeat(np.arange(num_classes, dtype=np.int64), parts)
        observed[rng.permutation(members)] = targets
    return NoisyLabels(observed=observed, clean=clean, noise_mask=observed != clean)
