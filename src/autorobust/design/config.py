"""Config section ``design``: the composed, searched design of ``autorobust design``.

A leaf (pydantic and ``StrictModel`` only), so that :class:`~autorobust.config.ExperimentConfig`
can hold it. The defaults and why are in each field's docstring; docs/methods/design.md shows
what they were measured on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from autorobust._strict import StrictModel

__all__ = ["DesignConfig", "MetaScore"]

Treatment = Literal["none", "transition", "selection", "mwnet"]
LossFamily = Literal["cross_entropy", "logit_adjustment", "autobalance"]
Detector = Literal["posterior", "prototype", "small_loss", "aum", "mean_loss", "agreement"]
Rule = Literal["meta_quantile", "gmm", "otsu"]
MetaScore = Literal["calibrated_log_loss", "log_loss", "error"]


class DesignConfig(StrictModel):
    """What ``autorobust design`` may compose, its compute budget, and how designs are scored."""

    budget: float = Field(3.0, ge=1.5)
    """Compute budget of the whole design (probe, trials, retraining) in trainings of the
    configured model with cross-entropy on the whole noisy pool for ``train.epochs`` epochs (a
    sample-epoch count, with nominal per-method factors; docs/methods/design.md). 3 is issue
    13's target."""
    probe_epochs: int | None = Field(None, ge=1)
    """Epochs of the probe (logit adjustment on the noisy pool) whose outputs estimate the noise
    model and score every sample; None: a third of ``train.epochs``, rounded up. The probe is
    the first ``probe_epochs`` epochs of the reference design's run (no treatment, logit
    adjustment, on the schedule of ``train.epochs``), which the study continues like any other
    trial: it costs nothing of its own."""
    trial_epochs: int | None = Field(None, ge=1)
    """The first rung: every trial trains this many epochs of its ``train.epochs`` schedule and
    is scored there; None: the probe's. The ``finalists`` best then continue to ``train.epochs``
    (successive halving) and are compared at full fidelity."""
    finalists: int = Field(2, ge=1)
    """Designs continued from the first rung to ``train.epochs`` and compared there (the best by
    their first-rung score). Trials that converge fast lead at a third of the epochs and may lose
    at full epochs (measured on Fashion-MNIST ρ = 100, 40% symmetric: a selection led logit
    adjustment at trial fidelity and lost at full), so the choice is made among at least two
    designs trained in full. The budget keeps their continuation free."""
    finalists_across_treatments: bool = False
    """Choose the finalists across noise treatments: the best first-rung design of each
    treatment, in the order of their scores, then (with fewer treatments than ``finalists``) the
    best of the rest. Designs of different treatments converge at different speeds, so the first
    rung ranks them less reliably than designs of one treatment: measured on Fashion-MNIST
    (look-alike confusions, ρ = 50, 5 meta images per class, 2 seeds), selections led at a
    third of the epochs by 3 to 7 points on the test split and ended level with or below
    AutoBalance and logit adjustment on the whole pool, which the top two by score (both
    selections) never continued. Off by default: on 12 runs of the noise-aware benchmark it
    changed 3, balanced accuracy +0.07 points on average (+1.5 where it kept AutoBalance, −1.0
    where AutoBalance was the worse) and the worst class −3.4 points (docs/benchmarks.md)."""
    ensemble: bool = True
    """Let the finalists' ensemble (the mean of their calibrated probabilities) be one more
    candidate of the choice at full epochs, the most complex: the one-standard-error rule then
    keeps it only where its meta score beats every finalist's by more than one standard error of
    their paired difference (without ``one_standard_error``: where it scores best). Its members
    are trained already, so it costs no training; a model a user loads (``autorobust predict``,
    ``autorobust.load_model``, ``autorobust export``) is then the ensemble. Measured on
    Fashion-MNIST ρ = 100 with 40% symmetric noise (1,500 images per class, 10 epochs, seed 0): a
    selection with logit adjustment (66.3% balanced) and AutoBalance (66.8%) averaged gave
    69.6%."""
    cross_fit: bool = True
    """Designs that fit on the meta set (MW-Net's V, AutoBalance's loss with the meta set as upper
    data) are trained on one half of it (stratified) and scored on the other half, at the first
    rung and as finalists. Without it they fit on the meta images that score them, and so cannot
    be compared with the other designs."""
    cross_fit_swap: bool = False
    """At the first rung, also train a cross-fitted design on the second half and score it on the
    first, so that every meta image scores it (half the standard error of its score), at twice
    its first-rung cost. Off by default: at ``budget`` 3 on Fashion-MNIST's whole long-tailed pool
    the swapped AutoBalance (0.87 trainings at the first rung) left no room for itself in the
    budget, and the study never tried it; its one half costs 0.43."""
    max_trials: int = Field(12, ge=1)
    """Trials at most (the probe included); the budget usually stops the study earlier."""
    n_startup_trials: int = Field(4, ge=0)
    """Random designs TPE draws before modelling, after the enqueued reference designs."""
    treatments: list[Treatment] = Field(
        default_factory=lambda: list[Treatment](["none", "transition", "selection", "mwnet"]),
        min_length=1,
    )
    """Noise treatments the search may pick: ``none``; ``transition`` (forward correction with the
    estimated transition matrix, composed with the loss's prior correction at the estimated clean
    prior; not with AutoBalance); ``selection`` (per-class selection by a detector, with or
    without relabelling, the loss then using the counts of the labels kept); ``mwnet``
    (Meta-Weight-Net with a searched V, cheap meta step; not with AutoBalance)."""
    losses: list[LossFamily] = Field(
        default_factory=lambda: list[LossFamily](
            ["cross_entropy", "logit_adjustment", "autobalance"]
        ),
        min_length=1,
    )
    """Loss families: fixed cross-entropy, logit adjustment (prior of the labels trained on), or
    AutoBalance's parametric loss learned by bilevel optimisation from the logit-adjusted point."""
    architectures: list[str] = Field(default_factory=lambda: ["fixed"], min_length=1)
    """``fixed`` (the config's ``model``) and/or paths of CSNAS genotype JSON files (e.g. the
    ``best_genotype.json`` of ``autorobust search architecture``), trained as model ``darts`` at
    ``architecture.eval_layers`` x ``eval_channels``."""
    detectors: list[Detector] = Field(
        default_factory=lambda: list[Detector](["posterior", "small_loss", "prototype"])
    )
    """Detectors a ``selection`` design may use (methods/sample_selection)."""
    rules: list[Rule] = Field(
        default_factory=lambda: list[Rule](["meta_quantile", "gmm"]), min_length=1
    )
    """Per-class rules a ``selection`` design may use: ``meta_quantile`` (the threshold is the
    q-quantile of the class's clean meta scores, q searched), ``gmm`` (DivideMix's two-component
    mixture; RoLT's rule) or ``otsu``. With ``prototype`` and relabelling, whether a relabel needs
    the nearest prototype's agreement (RoLT) is searched as well."""
    pseudo_label: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    """Whether a ``selection`` design keeps its rejected samples as unlabeled images for a
    pseudo-label loss (``method: pseudo_label``); both values: searched."""
    quantile_range: tuple[float, float] = (0.02, 0.3)
    """Range of the per-class meta quantile q of a selection (log-uniform)."""
    relabel_confidence_range: tuple[float, float] = (0.3, 0.9)
    """Range of the confidence a relabelled sample needs. The probe learned noisy labels, so its
    confidence is low: measured on Fashion-MNIST rho = 100 + 40% symmetric noise, at most 0.78
    (median 0.30); at 0.4 it relabelled 1,877 samples at 95.1% correct."""
    tau_range: tuple[float, float] = (0.5, 1.5)
    """Range of τ of the prior correction (logit adjustment, and its composition with forward
    correction)."""
    noise_estimator: Literal["glc", "confusion"] = "confusion"
    """How the transition matrix is estimated from the probe (methods/glc)."""
    score: MetaScore = "calibrated_log_loss"
    """How a design is scored on the clean meta set (lower is better; design/scoring.py): the
    balanced log-loss after a temperature fitted on the other meta images (default: smooth, and
    blind to how confident a design is, which the raw ``log_loss`` rewards in designs trained on
    cleaner labels), or the 0/1 balanced ``error``."""
    refit: bool = True
    """Once the design is chosen, train it again on the pool plus the clean meta images
    (scikit-learn's ``refit``; ``run_dir/refit``), which then is the design's model; ``best/``
    stays for comparison. The refit continues the kept run's checkpoint at the first rung (its
    schedule unchanged) with the meta images added, so it costs the rest of ``train.epochs``.
    The meta images then both train the model and select its epoch. Not applied to a kept
    ensemble. The refit comes after the leading reference designs in the budget: it runs when
    what the study and the finalists left of ``budget`` pays for it (the report says when it
    did not). Measured (from scratch) on Fashion-MNIST,
    ρ = 100, 40% symmetric noise, 10 meta images per class, the kept design against its refit:
    with 1,500 images per class before the tail and 10 epochs (3 seeds) balanced test accuracy
    61.0% → 67.1% on average, worst class 7.4% → 8.0% (the 10 meta images of a class are a large
    share of its clean images there); on the whole pool with 15 epochs (seed 0) 78.9% → 79.9%,
    worst class 30.9% → 33.8%. So it is on by default."""
    reference_final: bool = False
    """Make the reference design (no treatment, logit adjustment: the probe's recipe) one of the
    finalists whatever its first-rung score, so that it is always compared at ``train.epochs``
    (``finalists`` then counts it)."""
    one_standard_error: bool = True
    """Keep the simplest design whose meta score is within one standard error of the best (the
    error of the paired difference over the meta images): on a small meta set most score
    differences are noise, and a simpler design then generalises at least as well."""
    leave_one_out: bool = False
    """Measure each chosen component's contribution by retraining the chosen design without it
    (full epochs, one retraining per component, outside the budget); otherwise contributions come
    from the study's trials at trial fidelity."""

    @model_validator(mode="after")
    def _consistent(self) -> DesignConfig:
        for name in ("quantile_range", "relabel_confidence_range", "tau_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(
                    f"{name} must be (low, high) with 0 <= low <= high, got {low, high}"
                )
        low, high = self.quantile_range
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"quantile_range must lie in (0, 1), got {low, high}")
        low, high = self.relabel_confidence_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"relabel_confidence_range must lie in (0, 1], got {low, high}")
        if "selection" in self.treatments and not self.detectors:
            raise ValueError("treatment 'selection' needs at least one detector")
        return self
