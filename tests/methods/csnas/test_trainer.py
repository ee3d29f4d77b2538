"""``method: darts`` (the final training of a searched cell) keeps the contract of every method."""

from __future__ import annotations

from autorobust.testing import TrainingMethodTests


class TestDartsRecipe(TrainingMethodTests):
    """Auxiliary head, drop-path (random) and clipping on a small DARTS_V2 network."""

    config_name = "csnas-digits"
    epochs = 2
    overrides = (
        "method=darts",
        "model.name=darts",
        "model.options.layers=3",
        "model.options.channels=4",
        "model.options.auxiliary=true",
        "train.batch_size=128",
    )
