"""Helpers shared by the source loaders: option checks, paths and a seeded stratified hold-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autorobust.errors import ConfigError

__all__ = [
    "check_fraction",
    "check_positive_int",
    "check_seed",
    "resolve_path",
    "stratified_holdout",
]


def resolve_path(value: str | Path | None, default: str | Path) -> Path:
    """``value`` (or ``default`` when None) as a :class:`Path` with ``~`` expanded."""
    return Path(default if value is None else value).expanduser()


def check_fraction(source: str, name: str, value: float) -> float:
    """Return ``value`` as float after checking it lies in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"{source}: {name} must be a number in (0, 1), got {value!r}")
    return float(value)


def check_positive_int(source: str, name: str, value: int) -> int:
    """Return ``value`` after checking it is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{source}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_seed(source: str, name: str, value: int) -> int:
    """Return ``value`` after checking it is a non-negative int (a seed for ``default_rng``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{source}: {name} must be an integer >= 0, got {value!r}")
    return int(value)


def stratified_holdout(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, holding out ``test_fraction`` of every class.

    Classes are visited in increasing label order with one ``np.random.default_rng(seed)``, so the
    split depends only on the labels and the seed. Each class with at least two samples puts
    ``round(n_c * test_fraction)`` of them in test, clipped to [1, n_c - 1] so that both splits see
    the class; a class with a single sample stays in train.

    Args:
        labels: int array (N,).
        test_fraction: fraction in (0, 1).
        seed: seed of the generator.

    Returns:
        (train_index, test_index): sorted int64 arrays that partition ``arange(N)``.
    """
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    for value in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == value))
        n_test = (
            0 if len(index) < 2 else min(max(round(len(index) * test_fraction), 1), len(index) - 1)
        )
        test_parts.append(index[:n_test])
        train_parts.append(index[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    train = np.sort(np.concatenate([empty, *train_parts])).astype(np.int64)
    test = np.sort(np.concatenate([empty, *test_parts])).astype(np.int64)
    return train, test
