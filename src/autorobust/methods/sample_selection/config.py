"""The settings of a sample selection (detector, per-class rule, relabelling) and of
``method: pseudo_label``, which trains on the samples a selection rejected, without their labels.

A leaf (pydantic and ``StrictModel`` only), so that a pipeline's config can hold it as a section
(``ExperimentConfig.pseudo_label`` is :class:`PseudoLabelConfig`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from autorobust._strict import StrictModel

__all__ = ["PseudoLabelConfig", "SelectionConfig"]


class SelectionConfig(StrictModel):
    """Detector -> per-class selection rule -> relabelling of the rejected samples.

    The defaults are the recipe measured on Fashion-MNIST, rho = 100, 40% symmetric noise, 10
    meta images per class (issue 13; ``benchmarks/sample_selection.py``): the posterior of the
    observed label under a logit-adjusted probe (5 epochs), kept when it reaches the 10% quantile
    of the clean meta images of that class (8,474 samples kept at 96.2% precision); a rejected
    sample takes the predicted class when its softmax confidence is >= 0.9, else is dropped.
    """

    detector: str = "posterior"
    """``posterior``, ``small_loss``, ``prototype`` or ``weights`` (MW-Net's recorded weights)."""
    detector_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the detector, e.g. ``{"margin": true}`` for ``prototype``."""
    rule: str = "meta_quantile"
    """``meta_quantile`` (thresholds from the clean meta images), ``gmm`` (DivideMix's two-component
    mixture) or ``otsu`` (two-way split); each is applied per observed class. ``meta_quantile``
    is the default because a per-class mixture fitted on a mostly-noisy tail class takes the
    noisy majority for the clean component (measured: precision 0.0 on the rarest class)."""
    rule_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the rule, e.g. ``{"q": 0.2}`` for ``meta_quantile``."""
    min_keep: int = Field(5, ge=1)
    """A class of which a rule keeps fewer samples keeps its ``min_keep`` top-scoring ones (or
    all, if it has fewer): no class is ever emptied. Five gives a tail class a prior and a few
    samples to learn from while adding few wrong labels if its top scores are themselves noisy."""
    relabel: bool = True
    """Give a rejected sample the probe's predicted class when the evidence is confident."""
    relabel_confidence: float = Field(0.9, gt=0.0, le=1.0)
    """Softmax confidence of the prediction (raw logits) a relabelled sample needs. The noise caps
    the confidence of a probe trained on the noisy pool (40% symmetric: at most 0.78, none >= 0.9;
    0.4 relabelled 1,877 at 95.1% correct); the predictions of a model trained on the kept
    samples (``ProbeOutputs.prediction_logits``) reach it: 2,804 relabelled at 93.4% correct."""
    relabel_needs_prototype: bool = False
    """Relabel only when the nearest clean class prototype agrees with the prediction (RoLT's
    label guessing); needs the probe's penultimate features of the pool and the meta set."""
    relabel_weight: Literal["confidence", "one"] = "confidence"
    """A relabelled sample's weight: its confidence (soft relabelling) or 1."""
    rejected: Literal["drop", "keep"] = "drop"
    """A rejected sample that is not relabelled: ``drop`` its label (it leaves the labelled pool)
    or ``keep`` it with weight ``rejected_weight``."""
    rejected_weight: float = Field(0.1, gt=0.0, le=1.0)
    """Weight of a rejected sample kept with its observed label (``rejected: keep``)."""


class PseudoLabelConfig(StrictModel):
    """``method: pseudo_label``: FixMatch (Sohn et al., NeurIPS 2020) on the rejected samples.

    Each step also draws ``mu`` x B images the relabel file rejected (label -1), predicts them on a
    weak view (crop and flip as ``train.augment`` allows) without gradient, and adds ``weight``
    times the run's training loss on a strong view (weak + colour jitter + cutout) for those whose
    balanced confidence, the largest softmax of the raw logits, reaches ``threshold``; the loss is
    averaged over all mu x B drawn images, as in FixMatch. With logit adjustment the raw logits
    model the balanced posterior, and the adjustment at the counts of the labels trained on applies
    to the pseudo-labels as it does to the labels.
    """

    threshold: float = Field(0.95, gt=0.0, le=1.0)
    """Balanced confidence a pseudo-label needs (FixMatch: 0.95)."""
    mu: float = Field(1.0, gt=0.0)
    """Rejected images per step, in multiples of the labelled batch (at least one image)."""
    weight: float = Field(1.0, ge=0.0)
    """lambda, the weight of the pseudo-label loss (FixMatch: 1)."""
    rampup_epochs: int = Field(0, ge=0)
    """lambda grows linearly from 0 over this many epochs (per step); 0: constant lambda."""
    strong_jitter: float = Field(0.5, ge=0.0, lt=1.0)
    """Brightness, contrast and saturation strength of the strong view (factors in
    [1 - s, 1 + s]); 0: none."""
    strong_cutout: float = Field(0.5, ge=0.0, le=1.0)
    """Side of the strong view's cutout square as a fraction of the image's shorter side (the
    usual FixMatch implementations: 16 of 32 pixels); 0: none."""
    prior: Literal["labels", "labels_and_pseudo_labels"] = "labels_and_pseudo_labels"
    """The class counts a prior-based loss (logit adjustment, ...) is built with: those of the
    labels plus the pseudo-labels of the previous epoch, each weighing ``weight / mu`` of a
    labelled sample, as it does in the loss (``labels_and_pseudo_labels``: the counts of
    everything the loss trains on), or those of the labels alone (``labels``). Measured on
    Fashion-MNIST, rho = 100, 40% symmetric noise, 3 seeds (``benchmarks/pseudo_label.py``):
    the same balanced accuracy (77.3% both), worst class 37.0% against 26.9%, because the
    pseudo-labels pile up in a few classes (trouser, dress) that the labels' counts do not
    adjust for."""
