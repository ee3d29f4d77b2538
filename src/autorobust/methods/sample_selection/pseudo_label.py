"""``method: pseudo_label``: the samples a selection rejected, used without labels (issue 13).

A relabel file drops the labels it does not trust (label -1): those samples leave the labelled
pool, but their images still show the classes. This trainer learns from them as FixMatch does
(Sohn et al., NeurIPS 2020), adapted to the long tail. Every step, besides the labelled batch of
B images, it draws u = max(1, round(mu * B)) rejected images (``Splits.rejected``) and

1. predicts them on a *weak* view (crop and flip, as far as ``train.augment`` allows) without
   gradient, in eval mode: the predictor the run is evaluated with, and no batch-norm statistics
   are touched;
2. takes as pseudo-label y^ the argmax of the raw logits z and keeps the images whose balanced
   confidence max softmax(z) reaches ``threshold``. With logit adjustment the raw logits are the
   balanced posterior (the adjustment tau log pi is added in the loss only), so the threshold
   does not favour the head classes the way the plain posterior would;
3. adds lambda_t (1 / u) sum_i 1[conf_i >= threshold] l(z_strong_i, y^_i), where l is the run's own
   per-sample training loss (logit adjustment at the counts of the labels trained on applies to
   pseudo-labels as to labels) and z_strong the logits of a *strong* view (the weak view, then
   colour jitter and cutout). lambda_t = ``weight``, or a linear ramp from 0 to it over the
   first ``rampup_epochs`` epochs.

With ``prior: labels_and_pseudo_labels`` the loss is rebuilt at the start of every epoch with the
class counts of everything it trains on: n_c labels plus (lambda_t / mu) m_c, where m_c is the
number of images pseudo-labelled c in the previous epoch (each weighs lambda_t / mu of a
labelled sample in the loss, and an epoch draws mu N of them). Pseudo-labels concentrate on the
classes the model is already sure of; with the labels' counts alone, logit adjustment does not
correct for those extra samples, and the next pseudo-labels drift further towards those classes.

The strong views of the confident images are forwarded in one batch with the labelled images (as
FixMatch does, so that batch normalisation sees both); the images below the threshold contribute
nothing to the loss and are not forwarded. A step in which no image passes (or lambda_t = 0) is
exactly the ERM step, and with no rejected samples the whole run is ERM, bit for bit.

Randomness: the rejected batch and both views are drawn from a generator seeded by (seed, step),
so a resumed run draws what an uninterrupted one would; the labelled stream (shuffling and its
augmentation) is the ERM trainer's, untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from autorobust.data.augment import BatchAugment
from autorobust.data.tensors import images_to_tensor, to_unit_float
from autorobust.errors import ConfigError
from autorobust.losses import ClassificationLoss, create_loss
from autorobust.methods.sample_selection.config import PseudoLabelConfig
from autorobust.train.registry import register_trainer
from autorobust.train.trainer import LabeledImages, Trainer

__all__ = [
    "PseudoLabelTrainer",
    "build_pseudo_label_trainer",
    "pseudo_label_loss",
    "pseudo_labels",
]

# Separates this trainer's per-step stream from other (seed, step) streams (MW-Net's meta batch).
_STREAM = 0x5E1F
# Columns of the per-epoch counts: rejected images drawn, pseudo-labelled, pseudo-label right.
_DRAWN, _LABELLED, _CORRECT = 0, 1, 2


def pseudo_labels(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """FixMatch's pseudo-labels from raw logits (B, K): (labels int64 (B,), mask bool (B,),
    confidence float (B,)).

    The label is the argmax of the logits, the confidence the largest softmax probability, and
    the mask ``confidence >= threshold``. Pass the *raw* logits of a logit-adjusted model: they
    are its balanced posterior.
    """
    confidence, labels = torch.softmax(logits.detach().float(), dim=1).max(dim=1)
    return labels, confidence >= threshold, confidence


def pseudo_label_loss(
    per_sample: Callable[[Tensor, Tensor], Tensor],
    strong_logits: Tensor,
    labels: Tensor,
    drawn: int,
) -> Tensor:
    """(1 / u) sum_i l(z_i, y^_i) over the M pseudo-labelled images of the u = ``drawn`` drawn.

    Args:
        per_sample: the training loss per sample, logits (M, K) and labels (M,) -> (M,).
        strong_logits: float (M, K), logits of the strong views of the confident images.
        labels: int64 (M,), their pseudo-labels.
        drawn: u >= 1, the number of rejected images drawn (FixMatch averages over all of them,
            so that fewer confident images weigh less).

    Returns:
        A scalar; 0 (still differentiable) when M = 0.
    """
    if drawn < 1:
        raise ValueError(f"drawn must be >= 1, got {drawn}")
    return per_sample(strong_logits, labels).sum() / drawn


class PseudoLabelTrainer(Trainer):
    """ERM on the labelled pool plus FixMatch pseudo-labels on the rejected samples (see the
    module docstring).

    Args:
        rejected_images: uint8 (R, H, W, C), the images whose labels the relabel file dropped;
            R = 0 trains exactly as ERM.
        rejected_clean_labels: int64 (R,), their true labels, only to report the pseudo-labels'
            accuracy (never trained on); None when unknown.
        pseudo_label: the ``pseudo_label`` config section.
        label_counts: int64 (K,), the class counts of the labels (with ``prior:
            labels_and_pseudo_labels``).
        loss_factory: class counts (K,) -> the run's loss built with them (with ``prior:
            labels_and_pseudo_labels``).
        **trainer_kwargs: the keyword arguments of :class:`Trainer`.
    """

    sample_weights: ClassVar[bool | None] = True  # the labelled part goes through batch_loss

    def __init__(
        self,
        *,
        rejected_images: np.ndarray,
        rejected_clean_labels: np.ndarray | None,
        pseudo_label: PseudoLabelConfig,
        label_counts: np.ndarray | None = None,
        loss_factory: Callable[[np.ndarray], ClassificationLoss] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        super().__init__(**trainer_kwargs)
        if pseudo_label.prior == "labels_and_pseudo_labels" and (
            label_counts is None or loss_factory is None
        ):
            raise ValueError("prior 'labels_and_pseudo_labels' needs label_counts and loss_factory")
        self.label_counts = None if label_counts is None else np.asarray(label_counts, np.int64)
        self.loss_factory = loss_factory
        if rejected_images.dtype != np.uint8 or rejected_images.ndim != 4:
            raise ValueError(
                f"rejected_images must be uint8 (R, H, W, C), got {rejected_images.dtype} "
                f"{rejected_images.shape}"
            )
        if rejected_clean_labels is not None and rejected_clean_labels.shape != (
            len(rejected_images),
        ):
            raise ValueError(
                f"rejected_clean_labels must have shape ({len(rejected_images)},), got "
                f"{rejected_clean_labels.shape}"
            )
        self.rejected_images = rejected_images
        self.rejected_clean_labels = rejected_clean_labels
        self.config = pseudo_label
        augment = self.settings.augment
        side = min(rejected_images.shape[1:3]) if rejected_images.size else 0
        self.weak = BatchAugment(crop_padding=augment.crop_padding, hflip=augment.hflip)
        self.strong = BatchAugment(
            crop_padding=augment.crop_padding,
            hflip=augment.hflip,
            jitter=pseudo_label.strong_jitter,
            cutout=round(pseudo_label.strong_cutout * side),
        )
        self.counts: Tensor | None = None
        self.class_counts: Tensor | None = None

    # -- hooks ---------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        self._steps_per_epoch = math.ceil(len(self.train_labels) / self.settings.batch_size)
        self._num_classes = int(
            getattr(self.model, "num_classes", int(self.train_labels.max()) + 1)
        )
        self.rejected = images_to_tensor(self.rejected_images, self.device)
        self.rejected_truth = (
            None
            if self.rejected_clean_labels is None
            else torch.as_tensor(self.rejected_clean_labels, dtype=torch.int64, device=self.device)
        )
        epochs = self.settings.epochs
        self.counts = torch.zeros((epochs, 3), dtype=torch.int64, device=self.device)
        self.class_counts = torch.zeros(
            (epochs, self._num_classes), dtype=torch.int64, device=self.device
        )

    def weight_at(self, step: int) -> float:
        """lambda_t at global step ``step``: ``weight``, ramped linearly over ``rampup_epochs``."""
        ramp = self.config.rampup_epochs * self._steps_per_epoch
        if ramp == 0:
            return self.config.weight
        return self.config.weight * min(1.0, step / ramp)

    def _draw(self, batch: int, step: int) -> tuple[Tensor, torch.Generator]:
        """Positions of u rejected images (without replacement when u <= R) and the generator of
        their views, both a function of (seed, step)."""
        state = np.random.SeedSequence([self.seed, step, _STREAM]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        r = len(self.rejected)
        u = max(1, round(self.config.mu * batch))
        if u <= r:
            pick = torch.randperm(r, generator=generator)[:u]
        else:
            pick = torch.randint(r, (u,), generator=generator)
        return pick.to(self.device), generator

    def training_step(self, x: Tensor, y: Tensor, index: Tensor, step: int) -> Tensor:
        """ERM on (x, y) plus lambda_t times the pseudo-label loss (module docstring); returns the
        detached total loss."""
        if len(self.rejected) == 0:
            return super().training_step(x, y, index, step)
        if (
            self.config.prior == "labels_and_pseudo_labels"
            and step % self._steps_per_epoch == 0
            and step > 0
        ):
            self._rebuild_loss(step)
        pick, generator = self._draw(len(y), step)
        images = to_unit_float(self.rejected[pick])
        weak = self.normalize.standardize(self.weak(images, generator))
        # Drawn for every image, so that the draws do not depend on how many pass.
        strong = self.normalize.standardize(self.strong(images, generator))
        self.model.eval()
        try:
            with torch.no_grad():
                labels, mask, _ = pseudo_labels(self.model(weak), self.config.threshold)
        finally:
            self.model.train()
        self._record(step, pick, labels, mask)
        weight = self.weight_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        if weight > 0 and bool(mask.any()):
            logits = self.model(torch.cat([x, strong[mask]]))
            loss = self.batch_loss(logits[: len(y)], y, index) + weight * pseudo_label_loss(
                self.loss.per_sample, logits[len(y) :], labels[mask], len(pick)
            )
        else:
            loss = self.batch_loss(self.model(x), y, index)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def prior_counts(self, step: int) -> np.ndarray:
        """int64 (K,): the class counts of the loss in the epoch of ``step`` under ``prior:
        labels_and_pseudo_labels``: n_c + round((lambda_t / mu) m_c), m_c the images
        pseudo-labelled c in the previous epoch (none in the first)."""
        if self.label_counts is None:  # __init__ requires them for this prior
            raise ValueError("prior_counts needs the trainer's label_counts")
        epoch = step // self._steps_per_epoch
        if epoch == 0:
            return self.label_counts.copy()
        pseudo = self._counters()[1][epoch - 1].cpu().numpy().astype(np.float64)
        share = self.weight_at(step) / self.config.mu
        return self.label_counts + np.rint(share * pseudo).astype(np.int64)

    def _rebuild_loss(self, step: int) -> None:
        if self.loss_factory is None:  # __init__ requires it for this prior
            raise ValueError("rebuilding the loss needs the trainer's loss_factory")
        self.loss = self.loss_factory(self.prior_counts(step)).to(self.device)
        self.loss.on_epoch_start(step // self._steps_per_epoch, self.settings.epochs)

    def _record(self, step: int, pick: Tensor, labels: Tensor, mask: Tensor) -> None:
        epoch = step // self._steps_per_epoch
        counts, class_counts = self._counters()
        row = counts[epoch]
        row[_DRAWN] += len(pick)
        row[_LABELLED] += mask.sum()
        if self.rejected_truth is not None:
            row[_CORRECT] += (mask & (labels == self.rejected_truth[pick])).sum()
        class_counts[epoch] += torch.bincount(labels[mask], minlength=self._num_classes)

    def _counters(self) -> tuple[Tensor, Tensor]:
        """The per-epoch counts int64 (E, 3) and pseudo-label class counts int64 (E, K), made by
        :meth:`on_fit_start` (or restored by :meth:`load_extra_state`)."""
        if self.counts is None or self.class_counts is None:
            raise RuntimeError("PseudoLabelTrainer: no pseudo-label counts before fit() starts")
        return self.counts, self.class_counts

    def extra_state(self) -> dict[str, Any]:
        counts, class_counts = self._counters()
        return {"counts": counts.cpu(), "class_counts": class_counts.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.counts = state["counts"].to(self.device)
        self.class_counts = state["class_counts"].to(self.device)

    # -- results -------------------------------------------------------------------------------

    def extra_metrics(self, train: LabeledImages) -> dict[str, Any]:
        """The pseudo-labels of every epoch.

        Keys: ``rejected`` (R), the settings (``threshold``, ``mu``, ``weight``,
        ``rampup_epochs``) and ``per_epoch``: per epoch, ``drawn`` (rejected images drawn),
        ``pseudo_labelled_fraction`` (of the drawn images, the fraction whose balanced confidence
        reached the threshold), ``pseudo_label_accuracy`` (of those, the fraction whose
        pseudo-label is the clean label; None when clean labels are unknown or none passed) and
        ``pseudo_label_class_counts`` (K,). ``pseudo_labelled_fraction`` and
        ``pseudo_label_accuracy`` at the top are the last epoch's.
        """
        result: dict[str, Any] = {
            "rejected": len(self.rejected_images),
            "threshold": self.config.threshold,
            "mu": self.config.mu,
            "weight": self.config.weight,
            "rampup_epochs": self.config.rampup_epochs,
            "per_epoch": [],
        }
        if self.counts is None or self.class_counts is None:  # set together by on_fit_start
            return result
        counts, class_counts = self.counts.cpu().numpy(), self.class_counts.cpu().numpy()
        known = self.rejected_clean_labels is not None
        for epoch, (drawn, labelled, correct) in enumerate(counts.tolist()):
            result["per_epoch"].append(
                {
                    "epoch": epoch,
                    "drawn": drawn,
                    "pseudo_labelled_fraction": labelled / drawn if drawn else None,
                    "pseudo_label_accuracy": correct / labelled if known and labelled else None,
                    "pseudo_label_class_counts": class_counts[epoch].tolist(),
                }
            )
        if self.config.prior == "labels_and_pseudo_labels" and counts.shape[0]:
            last_step = (counts.shape[0] - 1) * self._steps_per_epoch
            result["last_epoch_prior_counts"] = self.prior_counts(last_step).tolist()
        if result["per_epoch"]:
            last = result["per_epoch"][-1]
            result["pseudo_labelled_fraction"] = last["pseudo_labelled_fraction"]
            result["pseudo_label_accuracy"] = last["pseudo_label_accuracy"]
        return result


@register_trainer("pseudo_label")
def build_pseudo_label_trainer(
    config: Any, splits: Any, **trainer_kwargs: Any
) -> PseudoLabelTrainer:
    """The trainer of ``config.pseudo_label`` on ``splits.rejected``.

    Raises:
        ConfigError: no ``data.relabel_file`` (nothing is rejected without one), or a loss with
            per-group parameters (the rejected samples carry no group attribute).
    """
    if config.data.relabel_file is None:
        raise ConfigError(
            "data.relabel_file: method 'pseudo_label' trains on the samples a relabel file "
            "rejects (label -1), but none is set; write one with "
            "autorobust.methods.sample_selection.run_selection"
        )
    if getattr(trainer_kwargs["loss"], "uses_groups", False):
        raise ConfigError(
            f"loss.name: method 'pseudo_label' cannot train loss {config.loss.name!r}, which has "
            "per-group parameters: the rejected samples carry no group attribute"
        )
    rejected = splits.rejected

    def loss_factory(counts: np.ndarray) -> ClassificationLoss:
        return create_loss(config.loss.name, class_counts=counts, **config.loss.options)

    return PseudoLabelTrainer(
        rejected_images=rejected.images,
        rejected_clean_labels=rejected.clean_labels,
        pseudo_label=config.pseudo_label,
        label_counts=splits.train_class_counts,
        loss_factory=loss_factory,
        **trainer_kwargs,
    )
