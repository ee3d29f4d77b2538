"""The shared checks of autorobust._validation (issue 20, item 3: one validator per concept)."""

from __future__ import annotations

import numpy as np
import pytest

from autorobust._validation import ROW_SUM_TOLERANCE, check_row_stochastic
from autorobust.config import validate_config
from autorobust.data.shift import check_transition_matrix
from autorobust.errors import ConfigError, ShiftError
from autorobust.losses.forward_correction import check_transition_option


def test_one_tolerance_for_every_transition_matrix() -> None:
    # Hand-written thirds are accepted by the config, the shift and the losses alike.
    thirds = [[0.33333, 0.33333, 0.33333], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert abs(sum(thirds[0]) - 1.0) < ROW_SUM_TOLERANCE
    validate_config({"shift": {"noise": "matrix", "noise_matrix": thirds}})
    as_given = check_transition_matrix(np.array(thirds), 3)
    assert np.array_equal(as_given, np.array(thirds))  # not renormalised
    normalised = check_transition_option(thirds, 3, loss="glc")
    assert np.allclose(normalised.sum(axis=1), 1.0)
    off = [[0.999, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match=r"^row 0 sums to 0.999, expected 1$"):
        check_row_stochastic(off)
    with pytest.raises(ShiftError, match=r"^noise matrix row 0 sums to 0.999, expected 1$"):
        check_transition_matrix(np.array(off), 2)
    with pytest.raises(ConfigError, match=r"^loss 'glc': transition row 0 sums to 0.999"):
        check_transition_option(off, 2, loss="glc")


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([], r"^m must be a K x K matrix, got an empty list$"),
        ([[1.0], [0.0, 1.0]], r"^m must be square: row 0 has 1 entries, not 2$"),
        ([[1.0, "x"], [0.0, 1.0]], r"^m must be a K x K list of numbers$"),
        (np.zeros((2, 3)), r"^m must be K x K \(one row per class\), got shape \(2, 3\)$"),
        ([[1.0, float("inf")], [0.0, 1.0]], r"^m\[0\]\[1\] is not finite \(inf\)$"),
    ],
)
def test_each_problem_is_one_line_naming_the_matrix(matrix: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_row_stochastic(matrix, name="m")
