"""Checks of user input shared by several layers, written once (issue 20, item 3).

This module sits at the bottom of the layers (``.importlinter``): the config's pydantic
validators, the data pipeline, the losses and the methods all import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ROW_SUM_TOLERANCE", "check_row_stochastic"]

ROW_SUM_TOLERANCE = 1e-4
"""How far a row of a transition (row-stochastic) matrix may sum from 1: wide enough for
hand-written YAML rows such as ``[0.33333, 0.33333, 0.33334]`` (the forward-correction losses
accepted 1e-4 before the checks were one), far above any rounding error of a matrix computed in
float64. A matrix within it is returned as given; whoever needs rows that sum to 1 exactly (the
label-noise quotas, the forward-corrected likelihood) divides by the row sums."""


def check_row_stochastic(
    matrix: Any,
    *,
    name: str = "",
    num_classes: int | None = None,
    error: type[Exception] = ValueError,
) -> np.ndarray:
    """``matrix`` as a float64 (K, K) copy after checking that it is row-stochastic.

    T[i, j] is a probability (finite, >= 0) and every row sums to 1 within
    :data:`ROW_SUM_TOLERANCE`; the matrix is not renormalised.

    Args:
        matrix: array-like (K, K), e.g. nested lists from a YAML file.
        name: what the matrix is, to start the message with (``"noise matrix"``, ``"loss 'glc':
            transition"``); empty when the caller prefixes the field itself (pydantic).
        num_classes: K; ``None``: any square matrix.
        error: the exception class raised (a ``ValueError`` for pydantic validators).

    Raises:
        error: one line naming ``name`` and the first problem: not numbers, an empty or ragged
            list, the wrong shape, an entry that is not finite or negative (with its row and
            column), a row that does not sum to 1 (with its sum).
    """
    subject = f"{name} " if name else ""

    def entry(i: int, j: int) -> str:
        return f"{name}[{i}][{j}]" if name else f"entry [{i}][{j}]"

    size = "K" if num_classes is None else str(num_classes)
    if isinstance(matrix, (list, tuple)):
        if len(matrix) == 0:
            raise error(f"{subject}must be a {size} x {size} matrix, got an empty list")
        for row, entries in enumerate(matrix):
            if isinstance(entries, (list, tuple)) and len(entries) != len(matrix):
                raise error(
                    f"{subject}must be square: row {row} has {len(entries)} entries, "
                    f"not {len(matrix)}"
                )
    try:
        t = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise error(f"{subject}must be a {size} x {size} list of numbers") from None
    expected = t.shape[:1] * 2 if num_classes is None else (num_classes, num_classes)
    if t.ndim != 2 or t.shape != expected:
        raise error(f"{subject}must be {size} x {size} (one row per class), got shape {t.shape}")
    bad = ~np.isfinite(t)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise error(f"{entry(i, j)} is not finite ({t[i, j]})")
    if (t < 0).any():
        i, j = (int(v) for v in np.argwhere(t < 0)[0])
        raise error(f"{entry(i, j)} is negative ({t[i, j]:g})")
    sums = t.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if off.size:
        r = int(off[0])
        raise error(f"{subject}row {r} sums to {sums[r]:.6g}, expected 1")
    return t
