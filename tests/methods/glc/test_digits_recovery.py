"""The noise model recovers a known transition matrix on the bundled digits.

Setting: digits, no imbalance, 30% symmetric noise (the realised matrix T of the pool is the
truth), 50 clean meta images per class; the probe is the demo's small CNN trained with
cross-entropy for 20 epochs on the noisy pool (about 2 s of CPU).

Tolerances, measured over seeds 0–9 of exactly this setting (this test is seed 0): GLC's max row
L1 error 0.27–0.52 (mean over rows 0.17–0.28); the confusion estimate at its defaults (the
probe's meta-set confusion undone after shrinking it by 10 pseudo-counts) 0.09–0.26 (mean
0.07–0.11; without the correction 0.08–0.26 and 0.04–0.10); prior total variation GLC 0.03–0.17,
confusion 0.01–0.03. Assuming no noise (T̂ = I) is 0.6 off in every row. The bounds below sit
above the worst seed and well below the identity's error, so a broken estimator (rows not averaged
per true class, T̂ transposed, counts not solved) fails them. GLC's larger error is its known
bias: the probe's softmax on a clean image is not exactly p̃(ỹ | x) (a probe that is still
learning is too flat, one that fits the noisy labels too sharp: 0.60 mean row error after 5
epochs, 0.20 after 20).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autorobust.config import load_config
from autorobust.data.tensors import images_to_tensor
from autorobust.experiment import build_model, build_splits
from autorobust.losses import create_loss
from autorobust.methods.glc.noise_model import (
    estimate_noise_model,
    noise_model_errors,
    true_transition,
)
from autorobust.train.trainer import Trainer, predict


@pytest.fixture(scope="module")
def probe():
    config = load_config(
        "demo",
        [
            "shift.imbalance=none",
            "shift.rho=1",
            "shift.noise=symmetric",
            "shift.noise_rate=0.3",
            "data.meta_per_class=50",
            "train.epochs=20",
            "train.progress=false",
            "device=cpu",
            "seed=0",
        ],
    )
    splits = build_splits(config)
    trainer = Trainer(
        model=build_model(config, splits),
        loss=create_loss("cross_entropy", class_counts=None),
        settings=config.train,
        device=torch.device("cpu"),
        seed=config.seed,
    )
    model = trainer.fit(splits.train, splits.meta).model

    def logits(images: np.ndarray) -> torch.Tensor:
        return predict(model, images_to_tensor(images, torch.device("cpu")), trainer.normalize)

    pool = splits.train
    truth = (
        true_transition(pool.clean_labels, pool.labels, splits.num_classes),
        np.bincount(pool.clean_labels, minlength=splits.num_classes),
    )
    return splits, logits(splits.meta.images), logits(pool.images), truth


def test_glc_recovers_the_transition(probe) -> None:
    splits, meta_logits, _, (transition, counts) = probe
    assert np.abs(np.eye(10) - transition).sum(axis=1).min() > 0.25  # there is noise to find
    model = estimate_noise_model(
        observed_labels=splits.train.labels,
        num_classes=10,
        method="glc",
        meta_logits=meta_logits.numpy(),
        meta_labels=splits.meta.labels,
    )
    errors = noise_model_errors(model, transition, counts)
    assert errors["transition_row_l1_max"] < 0.55
    assert errors["transition_row_l1_mean"] < 0.30
    assert errors["prior_total_variation"] < 0.2


def test_confusion_estimate_recovers_the_transition(probe) -> None:
    splits, meta_logits, pool_logits, (transition, counts) = probe
    model = estimate_noise_model(
        observed_labels=splits.train.labels,
        num_classes=10,
        method="confusion",
        pool_logits=pool_logits.numpy(),
        meta_logits=meta_logits.numpy(),
        meta_labels=splits.meta.labels,
    )
    errors = noise_model_errors(model, transition, counts)
    assert model.method == "confusion_corrected"
    assert errors["transition_row_l1_max"] < 0.3
    assert errors["transition_row_l1_mean"] < 0.15
    assert errors["prior_total_variation"] < 0.05
