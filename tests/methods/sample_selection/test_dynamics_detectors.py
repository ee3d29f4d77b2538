"""The detectors of training dynamics (aum, mean_loss, agreement) and the probe's dynamics."""

from __future__ import annotations

import numpy as np
import pytest

from autorobust.config import load_config
from autorobust.errors import ConfigError, DataError
from autorobust.experiment import build_splits, train_run
from autorobust.methods.sample_selection import (
    ProbeOutputs,
    SelectionConfig,
    create_detector,
    run_probe_outputs,
    select_labels,
)
from autorobust.methods.sample_selection.detectors import class_ranks
from autorobust.train.dynamics import DYNAMICS_NAME

# Three classes; class 0 has four samples, class 1 three, class 2 one.
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2])
MARGINS = np.array(
    [
        [1.0, 3.0, 5.0],  # mean 3, from epoch 1: 4
        [-2.0, -1.0, 0.0],  # -1, -0.5
        [0.0, 2.0, 1.0],  # 1, 1.5
        [4.0, 4.0, 4.0],  # 4, 4
        [2.0, 2.0, 2.0],  # 2
        [-3.0, -3.0, 0.0],  # -2
        [1.0, 0.0, 2.0],  # 1
        [0.5, 0.5, 0.5],  # 0.5
    ]
)
LOSSES = np.abs(MARGINS) + 0.25
# Posterior log p(y|x) of these logits (class 1 of sample i gets i/4 - 1): in class 0 the order
# is reversed against AUM's for samples 0 and 3.
LOGITS = np.array(
    [
        [0.0, 1.0, 0.0],
        [0.0, 2.0, 0.0],
        [1.0, 0.0, 0.0],
        [2.0, 0.0, 0.0],
        [0.0, 3.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 2.0, 0.0],
        [0.0, 0.0, 1.0],
    ]
)


def _probe(**arrays) -> ProbeOutputs:
    return ProbeOutputs(num_classes=3, labels=LABELS, meta_labels=np.array([0, 1, 2]), **arrays)


def test_aum_is_the_mean_margin_from_first_epoch() -> None:
    probe = _probe(margins=MARGINS)
    np.testing.assert_allclose(
        create_detector("aum").observed_scores(probe), [3, -1, 1, 4, 2, -2, 1, 0.5]
    )
    np.testing.assert_allclose(
        create_detector("aum", {"first_epoch": 1}).observed_scores(probe),
        [4, -0.5, 1.5, 4, 2, -1.5, 1, 0.5],
    )
    with pytest.raises(ConfigError, match="first_epoch 3 leaves none of the 3 recorded epochs"):
        create_detector("aum", {"first_epoch": 3}).observed_scores(probe)
    with pytest.raises(ConfigError, match="first_epoch must be an integer >= 0"):
        create_detector("aum", {"first_epoch": -1})
    assert create_detector("aum").meta_scores(probe) is None
    with pytest.raises(ConfigError, match="needs the probe's margins"):
        create_detector("aum").observed_scores(_probe())


def test_mean_loss_is_minus_the_mean_epoch_loss() -> None:
    probe = _probe(epoch_losses=LOSSES)
    np.testing.assert_allclose(
        create_detector("mean_loss").observed_scores(probe), -LOSSES.mean(axis=1)
    )
    np.testing.assert_allclose(
        create_detector("mean_loss", {"first_epoch": 2}).observed_scores(probe), -LOSSES[:, 2]
    )
    assert create_detector("mean_loss").meta_scores(probe) is None


def test_class_ranks_scale_each_class_to_unit_interval() -> None:
    scores = np.array([3.0, -1.0, 1.0, 4.0, 2.0, -2.0, 1.0, 0.5])
    # class 0: ranks of (3, -1, 1, 4) are 3, 1, 2, 4 -> (r - 1) / 3; class 1: (2, -2, 1) -> 3, 1, 2
    expected = [2 / 3, 0, 1 / 3, 1, 1, 0, 0.5, 1]
    np.testing.assert_allclose(class_ranks(scores, LABELS, 3), expected)
    np.testing.assert_allclose(class_ranks(np.array([1.0, 1.0]), np.array([0, 0]), 1), [0.5, 0.5])


def test_agreement_is_the_smaller_of_the_two_class_ranks() -> None:
    probe = _probe(margins=MARGINS, logits=LOGITS)
    # AUM ranks (above) and posterior ranks: log p(y|x) in class 0 orders samples 1 < 0 < 2 < 3;
    # in class 1 samples 5 < 6 < 4 (the same order as AUM's there).
    aum = np.array([2 / 3, 0, 1 / 3, 1, 1, 0, 0.5, 1])
    z = LOGITS - LOGITS.max(1, keepdims=True)
    log_p = (z - np.log(np.exp(z).sum(1, keepdims=True)))[np.arange(8), LABELS]
    posterior = np.empty(8)
    for c in range(3):
        members = np.flatnonzero(np.equal(LABELS, c))
        for i in members:
            below = (log_p[members] < log_p[i]).sum() + 0.5 * (
                (log_p[members] == log_p[i]).sum() - 1
            )
            posterior[i] = below / (len(members) - 1) if len(members) > 1 else 1.0
    np.testing.assert_allclose(posterior, [1 / 3, 0, 2 / 3, 1, 1, 0, 0.5, 1])
    expected = np.minimum(aum, posterior)
    scores = create_detector("agreement").observed_scores(probe)
    np.testing.assert_allclose(scores, expected)
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert create_detector("agreement").meta_scores(probe) is None
    minmax = create_detector("agreement", {"scale": "minmax"}).observed_scores(probe)
    aum_values = MARGINS.mean(1)
    a0 = (aum_values[:4] - aum_values[:4].min()) / np.ptp(aum_values[:4])
    p0 = (log_p[:4] - log_p[:4].min()) / np.ptp(log_p[:4])
    np.testing.assert_allclose(minmax[:4], np.minimum(a0, p0))
    with pytest.raises(ConfigError, match="scale must be one of rank, minmax"):
        create_detector("agreement", {"scale": "z"})


def test_dynamics_detectors_go_with_gmm_not_meta_quantile() -> None:
    probe = _probe(margins=MARGINS, epoch_losses=LOSSES, logits=LOGITS)
    for detector in ("aum", "mean_loss", "agreement"):
        chosen = select_labels(
            probe, SelectionConfig(detector=detector, rule="gmm", relabel=False, min_keep=1)
        )
        assert chosen.kept.any()
        with pytest.raises(ConfigError, match="use rule 'otsu' or 'gmm'"):
            select_labels(probe, SelectionConfig(detector=detector, relabel=False))


def test_probe_outputs_validate_the_dynamics() -> None:
    with pytest.raises(ValueError, match=r"margins must have shape \(8, None\)"):
        _probe(margins=MARGINS[:4])
    with pytest.raises(
        ValueError, match=r"margins .* and epoch_losses .* must have the same shape"
    ):
        _probe(margins=MARGINS, epoch_losses=LOSSES[:, :2])
    with pytest.raises(DataError, match="epoch_losses holds 1 non-finite values"):
        unrecorded = LOSSES.copy()
        unrecorded[0, 0] = np.nan
        _probe(epoch_losses=unrecorded)


def test_a_probe_run_that_recorded_dynamics_hands_them_over(tmp_path) -> None:
    config = load_config(
        "demo",
        [
            "train.progress=false",
            "train.batch_size=128",
            "model.options.width=8",
            "device=cpu",
            "train.threads=1",
            "train.epochs=2",
            "train.record_dynamics=true",
            f"run_dir={tmp_path}",
        ],
    )
    train_run(config, evaluate_test=False)
    splits = build_splits(config)
    probe = run_probe_outputs(config, splits)
    recorded = np.load(tmp_path / DYNAMICS_NAME)
    assert probe.margins is not None and probe.epoch_losses is not None
    assert probe.margins.shape == (len(splits.train.labels), 2)
    np.testing.assert_array_equal(probe.margins, recorded["margins"])
    np.testing.assert_array_equal(probe.epoch_losses, recorded["losses"])
    (tmp_path / DYNAMICS_NAME).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match=rf"{DYNAMICS_NAME}: corrupt or truncated \.npz archive"):
        run_probe_outputs(config, splits)
