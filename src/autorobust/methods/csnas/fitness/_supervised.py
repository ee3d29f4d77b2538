"""The paper's supervised ablation: validation error after training with labels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from autorobust.data.augment import BatchAugment
from autorobust.data.tensors import images_to_tensor, to_unit_float
from autorobust.methods.csnas.fitness._base import FITNESSES
from autorobust.methods.csnas.fitness._trained import TrainedFitness, _batches
from autorobust.models.base import Classifier
from autorobust.train.metrics import classification_metrics
from autorobust.train.trainer import predict

__all__ = ["SupervisedFitness"]


@FITNESSES.register("supervised")
class SupervisedFitness(TrainedFitness):
    """The supervised ablation: cross-entropy on the unlabeled view's images with their labels.

    Uses the observed (possibly noisy) training labels of ``splits.unlabeled_index`` and the
    network's own head; the views' crop and flip augment the images. Value after each epoch: the
    validation error 1 - balanced accuracy on ``splits.meta``.
    """

    name = "supervised"
    uses_labels = True

    def _setup(self, network: Classifier, splits: Any) -> dict[str, Any]:
        images, normalize = self._unlabeled(splits)
        labels = torch.as_tensor(
            splits.train.labels[splits.unlabeled_index], dtype=torch.int64, device=self.device
        )
        return {
            "modules": [network],
            "network": network,
            "images": images,
            "labels": labels,
            "normalize": normalize,
            "augment": BatchAugment(
                crop_padding=self.settings.view_crop_padding, hflip=self.settings.view_hflip
            ),
            "val_images": images_to_tensor(splits.meta.images, self.device),
            "val_labels": splits.meta.labels,
            "num_classes": splits.num_classes,
        }

    def _epoch(
        self, state: dict[str, Any], optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> float:
        network, images, labels = state["network"], state["images"], state["labels"]
        normalize, augment = state["normalize"], state["augment"]
        for index in _batches(len(images), self.settings.batch_size, generator):
            index = index.to(self.device)
            x = normalize.standardize(augment(to_unit_float(images[index]), generator))
            loss = F.cross_entropy(network(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not torch.isfinite(loss):
                return float("nan")
        logits = predict(network, state["val_images"], normalize)
        metrics = classification_metrics(
            state["val_labels"], logits.argmax(1).numpy(), state["num_classes"]
        )
        return 1.0 - float(metrics["balanced_accuracy"])
