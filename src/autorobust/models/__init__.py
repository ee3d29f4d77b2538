"""Image classifiers behind one interface, a registry and the ``create_model`` factory."""

from __future__ import annotations

from autorobust.models.base import Classifier, functional_forward_intermediates
from autorobust.models.registry import MODELS, create_model, list_models, register_model

# Importing the model modules registers their models.
from autorobust.models.resnet import CifarResNet
from autorobust.models.small_cnn import SmallCNN

__all__ = [
    "MODELS",
    "CifarResNet",
    "Classifier",
    "SmallCNN",
    "create_model",
    "functional_forward_intermediates",
    "list_models",
    "register_model",
]
