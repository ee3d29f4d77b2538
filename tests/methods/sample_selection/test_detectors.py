"""Each detector on arrays small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autorobust.errors import ConfigError, DataError, UnknownNameError
from autorobust.methods.sample_selection import DETECTORS, ProbeOutputs, create_detector
from autorobust.methods.sample_selection.detectors import (
    class_prototypes,
    log_softmax,
    prototype_labels,
)


def _probe(**arrays) -> ProbeOutputs:
    arrays.setdefault("labels", np.array([0, 1]))
    arrays.setdefault("meta_labels", np.array([0, 1]))
    return ProbeOutputs(num_classes=2, **arrays)


LOGITS = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2) and (3/4, 1/4)
META_LOGITS = np.array([[2.0, 0.0], [0.0, 0.0]])


def test_registry_names() -> None:
    assert DETECTORS.names() == [
        "agreement",
        "aum",
        "mean_loss",
        "posterior",
        "prototype",
        "small_loss",
        "weights",
    ]
    with pytest.raises(UnknownNameError, match=r"selection\.detector: unknown detector 'loss'"):
        create_detector("loss")
    with pytest.raises(ConfigError, match="detector 'posterior' has no option 'margin'"):
        create_detector("posterior", {"margin": True})
    with pytest.raises(ConfigError, match="margin must be true or false"):
        create_detector("prototype", {"margin": "yes"})


def test_posterior_is_the_log_probability_of_the_label() -> None:
    probe = _probe(logits=LOGITS, meta_logits=META_LOGITS)
    detector = create_detector("posterior")
    np.testing.assert_allclose(detector.observed_scores(probe), [math.log(0.5), math.log(0.25)])
    np.testing.assert_allclose(
        detector.candidate_scores(probe, np.array([1, 0])), [math.log(0.5), math.log(0.75)]
    )
    np.testing.assert_allclose(
        detector.meta_scores(probe), [2.0 - math.log(math.exp(2.0) + 1.0), math.log(0.5)]
    )
    assert detector.meta_scores(_probe(logits=LOGITS)) is None
    with pytest.raises(ConfigError, match="detector 'posterior' needs the probe's logits"):
        detector.observed_scores(_probe(losses=np.zeros(2)))


def test_log_softmax_is_stable() -> None:
    np.testing.assert_allclose(log_softmax(np.array([[1000.0, 0.0]])), [[0.0, -1000.0]])


def test_small_loss_is_the_negative_loss() -> None:
    detector = create_detector("small_loss")
    given = _probe(losses=np.array([0.1, 2.0]), meta_losses=np.array([0.3, 0.0]), logits=LOGITS)
    np.testing.assert_allclose(detector.observed_scores(given), [-0.1, -2.0])
    np.testing.assert_allclose(detector.meta_scores(given), [-0.3, 0.0])
    # A given loss exists for the observed labels only, and is never mixed with another loss.
    assert detector.candidate_scores(given, np.array([1, 0])) is None
    assert detector.meta_scores(_probe(losses=np.ones(2), meta_logits=META_LOGITS)) is None
    # Without losses: the cross-entropy of the logits, i.e. the posterior's score.
    from_logits = _probe(logits=LOGITS, meta_logits=META_LOGITS)
    posterior = create_detector("posterior")
    np.testing.assert_allclose(
        detector.observed_scores(from_logits), posterior.observed_scores(from_logits)
    )
    np.testing.assert_allclose(
        detector.candidate_scores(from_logits, np.array([1, 0])), [math.log(0.5), math.log(0.75)]
    )
    np.testing.assert_allclose(
        detector.meta_scores(from_logits), posterior.meta_scores(from_logits)
    )
    with pytest.raises(ConfigError, match="'small_loss' needs the probe's losses"):
        detector.observed_scores(_probe())


# Meta features: class 0 at angles 0 and 53.13 degrees (cos 0.6 between them), class 1 alone.
META_FEATURES = np.array([[2.0, 0.0], [0.6, 0.8], [0.0, 5.0]])
META_LABELS = np.array([0, 0, 1])


def test_prototypes_are_normalised_means_of_normalised_meta_features() -> None:
    prototypes = class_prototypes(META_FEATURES, META_LABELS, 2)
    np.testing.assert_allclose(prototypes, [[2 / math.sqrt(5), 1 / math.sqrt(5)], [0.0, 1.0]])
    with pytest.raises(DataError, match="the meta set has no image of class 2"):
        class_prototypes(META_FEATURES, META_LABELS, 3)


def test_prototype_scores_cosine_to_the_labels_prototype() -> None:
    features = np.array([[1.0, 1.0], [3.0, 0.0], [0.0, 0.0]])  # the last: a dead feature vector
    probe = ProbeOutputs(
        num_classes=2,
        labels=np.array([0, 1, 1]),
        meta_labels=META_LABELS,
        features=features,
        meta_features=META_FEATURES,
    )
    p0 = np.array([2.0, 1.0]) / math.sqrt(5)
    plain = create_detector("prototype")
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(plain.observed_scores(probe), [s * p0.sum(), 0.0, 0.0])
    np.testing.assert_allclose(plain.candidate_scores(probe, np.array([1, 0, 0])), [s, p0[0], 0.0])
    margin = create_detector("prototype", {"margin": True})
    np.testing.assert_allclose(margin.observed_scores(probe), [s * p0.sum() - s, 0.0 - p0[0], 0.0])
    # Meta images are scored against leave-one-out prototypes: each of class 0 against the other
    # (cos 0.6, where the full prototype would give 2/sqrt(5) = 0.894); the single image of class
    # 1 keeps its full prototype.
    np.testing.assert_allclose(plain.meta_scores(probe), [0.6, 0.6, 1.0])
    np.testing.assert_allclose(margin.meta_scores(probe), [0.6 - 0.0, 0.6 - 0.8, 1.0 - p0[1]])
    np.testing.assert_array_equal(prototype_labels(probe), [0, 0, 0])
    with pytest.raises(ConfigError, match="needs the probe's features, meta_features"):
        plain.observed_scores(_probe(logits=LOGITS))


def test_weights_are_mwnets_weights() -> None:
    detector = create_detector("weights")
    probe = _probe(weights=np.array([0.9, 0.05]))
    np.testing.assert_allclose(detector.observed_scores(probe), [0.9, 0.05])
    assert detector.meta_scores(probe) is None
    assert detector.candidate_scores(probe, np.array([1, 0])) is None
    with pytest.raises(ConfigError, match="detector 'weights' needs the probe's weights"):
        detector.observed_scores(_probe(logits=LOGITS))


def test_probe_outputs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"logits must have shape \(2, 2\)"):
        _probe(logits=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="labels must lie in"):
        _probe(labels=np.array([0, 2]))
    with pytest.raises(DataError, match="probe outputs: logits holds 1 non-finite values"):
        _probe(logits=np.array([[0.0, np.nan], [0.0, 0.0]]))
