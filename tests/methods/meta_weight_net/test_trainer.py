"""``method: reweight`` keeps the contract of every training method, in each of its step kinds."""

from __future__ import annotations

from autorobust.testing import TrainingMethodTests

_SMALL = ("model.options.width=8", "reweight.plots=false", "train.batch_size=128")


class TestOriginalMetaWeightNet(TrainingMethodTests):
    """V = 1-100-1 on the loss, the exact (unrolled) meta step every training step."""

    config_name = "demo-reweight"
    overrides = _SMALL


class TestFeatureAndClassAwareJvp(TrainingMethodTests):
    """V reads the loss, block3's features and the label; the forward-mode meta-gradient."""

    config_name = "demo-reweight"
    overrides = (
        *_SMALL,
        "reweight.input=loss+features",
        "reweight.feature_layer=block3",
        "reweight.class_embedding=4",
        "reweight.meta_gradient=jvp",
    )


class TestCheapMetaStep(TrainingMethodTests):
    """The last-layer meta step every second training step."""

    config_name = "demo-reweight"
    overrides = (*_SMALL, "reweight.meta_interval=2", "reweight.meta_scope=head")
