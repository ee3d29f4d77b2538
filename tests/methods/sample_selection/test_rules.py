"""Per-class selection rules on hand-checkable scores, and the never-empty guarantee."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autorobust.errors import ConfigError, DataError
from autorobust.methods.sample_selection import RULES, create_rule, select_per_class
from autorobust.methods.sample_selection.rules import otsu_threshold


def test_registry_and_options() -> None:
    assert RULES.names() == ["gmm", "meta_quantile", "otsu"]
    assert create_rule("meta_quantile").q == 0.1  # the documented default
    with pytest.raises(ConfigError, match=r"q must be a number in \[0, 1\), got 1.5"):
        create_rule("meta_quantile", {"q": 1.5})
    with pytest.raises(ConfigError, match="selection rule 'otsu' has no option 'q'"):
        create_rule("otsu", {"q": 0.2})


def test_meta_quantile_keeps_scores_above_the_clean_quantile_of_each_class() -> None:
    scores = np.array([0.1, 0.5, 0.9, 0.1, 0.5, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    meta_scores = np.array([0.2, 0.4, 0.6, 0.0, 0.05, 0.1])
    meta_labels = np.array([0, 0, 0, 1, 1, 1])
    median = create_rule("meta_quantile", {"q": 0.5})
    chosen = select_per_class(
        median, scores, labels, 2, meta_scores=meta_scores, meta_labels=meta_labels, min_keep=1
    )
    # Class 0: median 0.4 keeps 0.5 and 0.9; class 1: median 0.05 keeps all three.
    np.testing.assert_array_equal(chosen.keep, [False, True, True, True, True, True])
    np.testing.assert_allclose(chosen.thresholds, [0.4, 0.05])
    np.testing.assert_array_equal(chosen.topped_up, [False, False])
    # q = 0.25 interpolates linearly: class 0 -> 0.3.
    quarter = create_rule("meta_quantile", {"q": 0.25})
    chosen = select_per_class(
        quarter, scores, labels, 2, meta_scores=meta_scores, meta_labels=meta_labels
    )
    assert chosen.thresholds[0] == pytest.approx(0.3)


def test_otsu_splits_at_the_largest_between_group_variance() -> None:
    assert otsu_threshold(np.array([0.0, 0.1, 0.2, 0.8, 0.9, 1.0])) == pytest.approx(0.8)
    # w0 w1 (mu0 - mu1)^2: split {0,0,0,0 | 1}: 0.8*0.2*1 = 0.16 beats {0,0,0,0,1 | ...}: none.
    assert otsu_threshold(np.array([1.0, 0.0, 0.0, 0.0, 0.0])) == 1.0
    # {0 | 1, 1.2}: (1/3)(2/3)(1.1)^2 = 0.269 > {0, 1 | 1.2}: (2/3)(1/3)(0.7)^2 = 0.109.
    assert otsu_threshold(np.array([0.0, 1.0, 1.2])) == 1.0
    assert otsu_threshold(np.array([0.3, 0.3])) == 0.3  # one distinct value: keep everything
    rule = create_rule("otsu")
    keep, threshold = rule.select_class(np.array([0.9, 0.1, 0.85, 0.15]), None)
    np.testing.assert_array_equal(keep, [True, False, True, False])
    assert threshold == 0.85


def test_gmm_keeps_the_high_component() -> None:
    rng = np.random.default_rng(0)
    low = rng.normal(0.1, 0.02, size=30)
    high = rng.normal(0.8, 0.02, size=20)
    scores = np.concatenate([low, high])
    keep, threshold = create_rule("gmm").select_class(scores, None)
    np.testing.assert_array_equal(keep, np.arange(50) >= 30)
    assert threshold == pytest.approx(high.min())
    # Constant scores: nothing to split, the class is kept whole.
    keep, threshold = create_rule("gmm").select_class(np.full(4, 0.5), None)
    assert keep.all() and threshold == 0.5


def test_a_class_the_rule_empties_keeps_its_top_scoring_samples() -> None:
    scores = np.array([0.3, 0.1, 0.2, 0.4, 0.9, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1])
    meta_scores = np.array([0.95, 0.99, 0.5, 0.6])
    meta_labels = np.array([0, 0, 1, 1])
    chosen = select_per_class(
        create_rule("meta_quantile"),
        scores,
        labels,
        2,
        meta_scores=meta_scores,
        meta_labels=meta_labels,
        min_keep=2,
    )
    # Class 0 would keep nothing (every score < 0.954): its two best, 0.4 and 0.3, are kept.
    np.testing.assert_array_equal(chosen.keep, [True, False, False, True, True, True])
    np.testing.assert_array_equal(chosen.topped_up, [True, False])
    assert chosen.thresholds[0] == pytest.approx(0.954)  # the rule's, not lowered by the top-up


def test_refusals() -> None:
    rule = create_rule("meta_quantile")
    scores, labels = np.array([0.1, 0.2]), np.array([0, 1])
    with pytest.raises(ConfigError, match="'meta_quantile' calibrates on the meta images' scores"):
        select_per_class(rule, scores, labels, 2)
    with pytest.raises(DataError, match="class 1 has no meta image"):
        select_per_class(
            rule, scores, labels, 2, meta_scores=np.array([0.0]), meta_labels=np.array([0])
        )
    with pytest.raises(DataError, match="1 of the detector's scores are not finite"):
        select_per_class(create_rule("otsu"), np.array([np.nan, 0.2]), labels, 2)
    with pytest.raises(ConfigError, match="min_keep must be an integer >= 1"):
        select_per_class(create_rule("otsu"), scores, labels, 2, min_keep=0)


@st.composite
def _problems(draw):
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 40))
    labels = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    # Few distinct values, so that ties and constant classes occur.
    values = st.sampled_from([-3.0, -1.0, 0.0, 0.0, 0.5, 2.0]) | st.floats(-5, 5)
    scores = np.array(draw(st.lists(values, min_size=n, max_size=n)))
    meta_labels = np.repeat(np.arange(k), draw(st.integers(1, 4)))
    meta_scores = np.array(
        draw(st.lists(st.floats(-5, 10), min_size=meta_labels.size, max_size=meta_labels.size))
    )
    rule = draw(
        st.sampled_from(["otsu", "gmm"]) | st.floats(0.0, 0.99).map(lambda q: ("meta_quantile", q))
    )
    min_keep = draw(st.integers(1, 6))
    return k, labels, scores, meta_labels, meta_scores, rule, min_keep


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_problems())
def test_no_class_is_ever_emptied(problem) -> None:
    k, labels, scores, meta_labels, meta_scores, rule_spec, min_keep = problem
    if isinstance(rule_spec, tuple):
        rule = create_rule(rule_spec[0], {"q": rule_spec[1]})
    else:
        rule = create_rule(rule_spec)
    chosen = select_per_class(
        rule,
        scores,
        labels,
        k,
        meta_scores=meta_scores,
        meta_labels=meta_labels,
        min_keep=min_keep,
    )
    for c in range(k):
        n_c = int((labels == c).sum())
        kept = int(chosen.keep[labels == c].sum())
        assert kept >= min(min_keep, n_c)
        if n_c:
            assert kept >= 1
        if chosen.topped_up[c]:
            # The top-up adds the best of the class: its min_keep top-scoring samples are kept.
            members = np.flatnonzero(labels == c)
            top = members[np.argsort(-scores[members], kind="stable")[: min(min_keep, n_c)]]
            assert chosen.keep[top].all()
