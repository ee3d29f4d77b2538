"""``method: autobalance`` (one bilevel run) keeps the contract of every training method."""

from __future__ import annotations

from autorobust.testing import TrainingMethodTests


class TestBilevelRun(TrainingMethodTests):
    """The loss is learned from the second epoch on; its parameters, the upper optimiser and the
    upper-step log must resume exactly too."""

    config_name = "digits-lt20-autobalance"
    overrides = (
        "method=autobalance",
        "bilevel.warmup_epochs=1",
        "train.batch_size=64",
        "model.options.width=8",
    )


class TestBilevelRunAllWeightsCg(TrainingMethodTests):
    """Hypergradients through every weight, by conjugate gradients, scales and weights learned.
    The CNN's Hessian is indefinite: without damping every upper step would be skipped and the
    upper optimiser's state never exercised."""

    config_name = "digits-lt20-autobalance"
    overrides = (
        "method=autobalance",
        "bilevel.warmup_epochs=1",
        "bilevel.hyper_params=all",
        "bilevel.hypergradient=cg",
        "bilevel.damping=10",
        "bilevel.learn_scale=true",
        "bilevel.learn_weight=true",
        "train.batch_size=128",
        "model.options.width=4",
    )
