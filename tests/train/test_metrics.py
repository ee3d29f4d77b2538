from __future__ import annotations

import numpy as np
import pytest

from autorobust.train.metrics import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    shot_groups,
)


def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_metrics_by_hand():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    m = classification_metrics(y_true, y_pred, 3)
    # recalls: class 0 3/4, class 1 1/2, class 2 0/2
    assert m["per_class_accuracy"] == pytest.approx([0.75, 0.5, 0.0])
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert m["worst_class_accuracy"] == 0.0
    # precisions: class 0 3/6, class 1 1/2, class 2 0 -> F1 = 2pr/(p+r)
    f1_0 = 2 * 0.5 * 0.75 / 1.25
    f1_1 = 0.5
    assert m["macro_f1"] == pytest.approx((f1_0 + f1_1 + 0.0) / 3)
    assert m["num_samples"] == 8


def test_absent_class_is_ignored_by_balanced_and_worst_class():
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 0, 0]), 3)
    assert m["per_class_accuracy"] == [1.0, 0.0, None]
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["worst_class_accuracy"] == 0.0


def test_shot_groups_follow_the_100_and_20_thresholds():
    groups = shot_groups(np.array([500, 101, 100, 20, 19, 1]))
    assert groups["many"].tolist() == [0, 1]
    assert groups["medium"].tolist() == [2, 3]
    assert groups["few"].tolist() == [4, 5]
    m = classification_metrics(
        np.arange(6),
        np.array([0, 1, 0, 3, 4, 0]),
        6,
        train_class_counts=np.array([500, 101, 100, 20, 19, 1]),
    )
    assert m["many_shot_accuracy"] == 1.0
    assert m["medium_shot_accuracy"] == 0.5
    assert m["few_shot_accuracy"] == 0.5


def test_shot_group_without_classes_is_null():
    m = classification_metrics(
        np.array([0, 1]), np.array([0, 1]), 2, train_class_counts=np.array([500, 200])
    )
    assert m["few_shot_accuracy"] is None


def test_expected_calibration_error_by_hand():
    # 15 bins of width 1/15: confidence 0.9 -> bin 13 (correct), 0.95 -> bin 14 (wrong),
    # 0.6 twice -> bin 9 (both correct). ECE = sum_b |B_b|/N * |acc_b - conf_b|.
    p = np.array([[0.9, 0.1], [0.05, 0.95], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1])
    expected = 0.25 * abs(1 - 0.9) + 0.25 * abs(0 - 0.95) + 0.5 * abs(1 - 0.6)
    assert expected_calibration_error(p, y) == pytest.approx(expected)
