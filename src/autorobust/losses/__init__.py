"""Classification losses for imbalanced and noisy labels, a registry and ``create_loss``."""

from __future__ import annotations

# Importing the loss modules registers their losses.
from autorobust.losses.balanced_softmax import BalancedSoftmaxLoss
from autorobust.losses.base import ClassificationLoss, class_balanced_weights
from autorobust.losses.class_balanced import ClassBalancedLoss
from autorobust.losses.cross_entropy import CrossEntropyLoss
from autorobust.losses.focal import FocalLoss
from autorobust.losses.generalized_ce import GeneralizedCrossEntropyLoss
from autorobust.losses.ldam import LDAMLoss
from autorobust.losses.logit_adjustment import LogitAdjustedLoss
from autorobust.losses.registry import (
    LOSSES,
    create_loss,
    list_losses,
    loss_hyperparameter_names,
    register_loss,
)

__all__ = [
    "LOSSES",
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "ClassificationLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "GeneralizedCrossEntropyLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "class_balanced_weights",
    "create_loss",
    "list_losses",
    "loss_hyperparameter_names",
    "register_loss",
]
