"""Detector -> rule -> relabelling on a hand-made probe, and the relabel file it writes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autorobust.data.relabel import read_relabel_file
from autorobust.errors import ConfigError
from autorobust.methods.sample_selection import (
    ProbeOutputs,
    SelectionConfig,
    run_selection,
    select_labels,
    selection_summary,
)
from autorobust.methods.sample_selection.relabelling import confident_predictions, relabel_mask

# Six pool samples, K = 2. Observed labels and the (simulated) clean labels:
OBSERVED = np.array([0, 0, 0, 1, 1, 1])
CLEAN = np.array([0, 0, 1, 1, 1, 0])
LOGITS = np.array([[3.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 3.0], [0.0, 1.0], [1.5, 0.0]])
META_LABELS = np.array([0, 0, 1, 1])
META_LOGITS = np.array([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _probe(**extra) -> ProbeOutputs:
    return ProbeOutputs(
        num_classes=2,
        labels=OBSERVED,
        meta_labels=META_LABELS,
        logits=LOGITS,
        meta_logits=META_LOGITS,
        **extra,
    )


# The median (q = 0.5) of the meta scores log p(y|x): class 0 -> mean(ls(2), ls(3)) = -0.0878;
# class 1 -> mean(ls(1), ls(3)) = -0.181. Pool scores: ls(3), ls(2), ls(-4), ls(3), ls(1), ls(-1.5)
# = -0.049, -0.127, -4.02, -0.049, -0.313, -1.70. Kept: samples 0 and 3. Rejected: 1 and 4 (the
# probe predicts their own label: nothing to relabel), 2 (predicted 1 with confidence
# sigmoid(4) = 0.982, and log 0.982 = -0.018 passes class 1's threshold: relabelled) and 5
# (predicted 0 at 0.818 < 0.9: dropped).
MEDIAN = {"rule_options": {"q": 0.5}, "min_keep": 1}


def test_hand_checked_selection_and_summary() -> None:
    selection = select_labels(_probe(), SelectionConfig(**MEDIAN))
    np.testing.assert_allclose(
        selection.thresholds,
        [(_log_sigmoid(2) + _log_sigmoid(3)) / 2, (_log_sigmoid(1) + _log_sigmoid(3)) / 2],
    )
    np.testing.assert_array_equal(selection.kept, [True, False, False, True, False, False])
    np.testing.assert_array_equal(selection.labels, [0, -1, 1, 1, -1, -1])
    np.testing.assert_allclose(selection.weights, [1, 0, 1 / (1 + math.exp(-4)), 1, 0, 0])
    np.testing.assert_array_equal(selection.relabelled, [False, False, True, False, False, False])
    np.testing.assert_array_equal(selection.class_counts, [1, 2])
    assert selection.weighted
    summary = selection_summary(selection, CLEAN)
    assert (summary["kept"], summary["relabelled"], summary["dropped"]) == (2, 1, 3)
    assert summary["trained_class_counts"] == [1, 2]
    # Both kept labels are right; 2 of the 4 right labels (samples 0, 1, 3, 4) are kept.
    assert summary["precision"] == 1.0 and summary["recall"] == 0.5
    assert summary["relabel_accuracy"] == 1.0
    assert summary["noise_rate_before"] == pytest.approx(2 / 6)
    assert summary["noise_rate_after"] == 0.0
    c0, c1 = summary["per_class"]
    assert c0 == {
        "class": 0,
        "observed": 3,
        "kept": 1,
        "relabelled_from": 1,
        "relabelled_to": 0,
        "retained": 0,
        "dropped": 1,
        "trained": 1,
        "threshold": pytest.approx(selection.thresholds[0]),
        "topped_up": False,
        "precision": 1.0,
        "recall": 0.5,
    }
    assert (c1["kept"], c1["relabelled_to"], c1["dropped"], c1["trained"]) == (1, 1, 2, 2)
    assert (c1["precision"], c1["recall"]) == (1.0, 0.5)
    assert "precision" not in selection_summary(selection)["per_class"][0]
    assert summary["detector"] == "posterior" and summary["rule"] == "meta_quantile"
    assert summary["options"] == {"detector": {}, "rule": {"q": 0.5}}


def test_relabelling_options() -> None:
    strict = select_labels(_probe(), SelectionConfig(**MEDIAN, relabel_confidence=0.99))
    np.testing.assert_array_equal(strict.labels, [0, -1, -1, 1, -1, -1])
    assert not strict.weighted  # a hard selection: the file will have no weights
    hard = select_labels(_probe(), SelectionConfig(**MEDIAN, relabel_weight="one"))
    np.testing.assert_array_equal(hard.weights, [1, 0, 1, 1, 0, 0])
    off = select_labels(_probe(), SelectionConfig(**MEDIAN, relabel=False))
    np.testing.assert_array_equal(off.labels, [0, -1, -1, 1, -1, -1])
    keep = select_labels(_probe(), SelectionConfig(**MEDIAN, rejected="keep", rejected_weight=0.2))
    np.testing.assert_array_equal(keep.labels, [0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(keep.weights, [1, 0.2, 1 / (1 + math.exp(-4)), 1, 0.2, 0.2])
    np.testing.assert_array_equal(keep.retained, [False, True, False, False, True, True])
    assert selection_summary(keep, CLEAN)["noise_rate_after"] == pytest.approx(1 / 6)
    # The nearest clean prototype of sample 2 is class 0: RoLT's agreement vetoes the relabel.
    features = np.array([[1, 0], [1, 0], [1, 0.1], [0, 1], [0, 1], [1, 0]], dtype=float)
    meta_features = np.array([[1, 0], [1, 0.2], [0, 1], [0.2, 1]], dtype=float)
    probe = _probe(features=features, meta_features=meta_features)
    agreed = select_labels(probe, SelectionConfig(**MEDIAN, relabel_needs_prototype=True))
    np.testing.assert_array_equal(agreed.labels, [0, -1, -1, 1, -1, -1])
    features[2] = [0.1, 1]
    probe = _probe(features=features, meta_features=meta_features)
    agreed = select_labels(probe, SelectionConfig(**MEDIAN, relabel_needs_prototype=True))
    np.testing.assert_array_equal(agreed.labels, [0, -1, 1, 1, -1, -1])


def test_relabelling_can_take_another_models_predictions() -> None:
    # E.g. a model trained on the kept samples: here it is unsure of sample 2 (0.62 < 0.9).
    prediction_logits = LOGITS.copy()
    prediction_logits[2] = [0.0, 0.5]
    probe = _probe(prediction_logits=prediction_logits)
    np.testing.assert_array_equal(
        select_labels(probe, SelectionConfig(**MEDIAN)).labels, [0, -1, -1, 1, -1, -1]
    )
    # Without the probe's own logits, detection needs another detector; relabelling still works.
    weights_only = ProbeOutputs(
        num_classes=2,
        labels=OBSERVED,
        meta_labels=META_LABELS,
        weights=np.array([0.9, 0.1, 0.2, 0.9, 0.8, 0.1]),
        prediction_logits=LOGITS,
    )
    selection = select_labels(
        weights_only, SelectionConfig(detector="weights", rule="otsu", min_keep=1)
    )
    # Otsu keeps 0.9 of class 0 and 0.9, 0.8 of class 1; sample 2 (no candidate score from the
    # weights) is relabelled on its confidence alone; 5 is not confident enough.
    np.testing.assert_array_equal(selection.labels, [0, -1, 1, 1, 1, -1])


def test_relabel_mask_conditions() -> None:
    predicted, confidence = confident_predictions(np.array([[0.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_array_equal(predicted, [1, 0])
    np.testing.assert_allclose(confidence, [1 / (1 + math.exp(-4)), 0.5])
    common = dict(
        labels=np.array([0, 0, 0, 0]),
        predicted=np.array([1, 1, 1, 0]),
        confidence=np.array([0.95, 0.95, 0.5, 0.99]),
        min_confidence=0.9,
        thresholds=np.array([0.0, -1.0]),
    )
    rejected = np.array([True, False, True, True])
    # 0: relabelled; 1: kept by the rule; 2: not confident; 3: predicts its own label.
    np.testing.assert_array_equal(
        relabel_mask(rejected=rejected, candidate_scores=None, **common),
        [True, False, False, False],
    )
    below = np.array([-2.0, 0.0, 0.0, 0.0])  # below class 1's threshold -1
    np.testing.assert_array_equal(
        relabel_mask(rejected=rejected, candidate_scores=below, **common), [False] * 4
    )
    np.testing.assert_array_equal(
        relabel_mask(
            rejected=rejected,
            candidate_scores=None,
            prototype_labels=np.array([0, 1, 1, 0]),
            **common,
        ),
        [False] * 4,
    )


def test_settings_the_probe_cannot_serve_are_refused() -> None:
    no_logits = ProbeOutputs(
        num_classes=2,
        labels=OBSERVED,
        meta_labels=META_LABELS,
        weights=np.array([0.1, 0.9, 0.8, 0.05, 0.95, 0.9]),
    )
    with pytest.raises(ConfigError, match="'meta_quantile' calibrates on the meta images' scores"):
        select_labels(no_logits, SelectionConfig(detector="weights"))
    with pytest.raises(ConfigError, match="relabelling takes the probe's predicted class"):
        select_labels(no_logits, SelectionConfig(detector="weights", rule="otsu"))
    selection = select_labels(
        no_logits, SelectionConfig(detector="weights", rule="otsu", relabel=False, min_keep=1)
    )
    np.testing.assert_array_equal(selection.labels, [-1, 0, 0, -1, 1, 1])
    with pytest.raises(ConfigError, match="relabel_needs_prototype: needs the probe's features"):
        select_labels(_probe(), SelectionConfig(relabel_needs_prototype=True))
    with pytest.raises(ConfigError, match=r"selection\.rule_options: selection rule 'otsu' has no"):
        select_labels(_probe(), SelectionConfig(rule="otsu", rule_options={"q": 0.1}))


def test_run_selection_writes_the_relabel_file(tmp_path) -> None:
    path = tmp_path / "sub" / "relabel.npz"
    index = np.array([2, 3, 5, 7, 11, 13])
    summary = run_selection(
        _probe(), SelectionConfig(**MEDIAN), source_index=index, path=path, clean_labels=CLEAN
    )
    assert summary["file"] == str(path) and summary["precision"] == 1.0
    written = read_relabel_file(path)
    np.testing.assert_array_equal(written.labels, [0, -1, 1, 1, -1, -1])
    np.testing.assert_array_equal(written.source_index, index)
    np.testing.assert_allclose(written.weights, [1, 0, 1 / (1 + math.exp(-4)), 1, 0, 0])
    hard = run_selection(
        _probe(), SelectionConfig(**MEDIAN, relabel=False), source_index=index, path=path
    )
    assert read_relabel_file(path).weights is None and not hard["weighted"]
    with pytest.raises(ValueError, match="source_index has 5 entries"):
        run_selection(_probe(), source_index=index[:5], path=path)
