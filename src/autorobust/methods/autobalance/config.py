"""Config section ``bilevel``: AutoBalance, the parametric loss learned by bilevel optimisation.

Used by ``autorobust search loss`` (docs/methods/autobalance.md). Defaults and why:

- the hypergradient is taken through the classifier's last linear layer only (``hyper_params:
  head``): the lower problem in the head is multinomial logistic regression on fixed features, whose
  Hessian is positive definite with weight decay, cheap to apply and small enough to power-iterate,
  which keeps the search within the cost target (search + retraining <= 3x one CE training);
- the inverse-Hessian product v = H⁻¹ ∇_w L_val is solved by conjugate gradients to a relative
  residual of 1e-4 (``hypergradient: cg``), not by the authors' Neumann series. Measured on
  Fashion-MNIST ρ = 100 (``benchmarks/hypergradient_solvers.py``, n_max 1000, 9 upper steps,
  against the exact solve of the head's Hessian): the 5-term series at η = 1/λ_max was 79% off
  (median relative error; cosine down to 0.60), because the head's Hessian is ill-conditioned
  (λ_min ≈ the weight decay 5e-4); a series adapting its length to a relative term norm of
  1e-2 / 1e-3 had not got there after 2000 / 5000 terms (0.03–0.11 / 0.002–0.03 left) and fell
  back to CG at every step; CG reached 7e-5 in a median 76 Hessian-vector products, 20 ms of CPU
  per upper step, far below the 20 SGD steps between upper steps. CG also reports negative
  curvature directly (the step is then skipped, logged);
- with ``hypergradient: neumann``, η is ``eta_scale / λ_max`` with λ_max estimated by power
  iteration on the same Hessian-vector product (the authors' η = 1 diverged on this project's
  protocol, measured: the series needs every eigenvalue of ηH in (0, 2)); a fixed η is
  checked against λ_max and damped, growing terms halve η or fall back to CG (all logged in
  ``hyper_log``);
- Δ = exp(d) rather than the authors' sigmoid(d) so that d = 0 is exactly cross-entropy; the
  authors' parameterisation is ``scale_parameterisation: sigmoid``;
- the upper optimiser is Adam with a clipped step: its step length does not depend on the scale
  of the hypergradient, which varies by orders of magnitude between the start and end of training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from autorobust._strict import StrictModel

__all__ = ["BilevelConfig"]

TunableKnob = Literal[
    "upper_lr", "warmup_epochs", "fairness_weight", "eta_scale", "upper_every", "augment_strength"
]


class BilevelConfig(StrictModel):
    """AutoBalance: the parametric loss learned by bilevel optimisation, and its search."""

    # -- the loss family ---------------------------------------------------------------------
    learn_scale: bool = False
    """Learn the multiplicative logit scales Δ (off by default: measured on digits long tail
    rho = 20, 15 epochs, seeds 0/1, learning Δ too gave 76.4/68.9% balanced test accuracy against
    86.8/85.1% with offsets only and 80.0/77.7% for CE)."""
    learn_offset: bool = True
    """Learn the additive logit offsets ι."""
    learn_weight: bool = False
    """Learn the per-class loss weights ω (off by default: for a balanced objective they are
    largely redundant with the offsets and make the upper problem noisier)."""
    scale_parameterisation: Literal["exp", "sigmoid"] = "exp"
    """Δ = exp(d) (default; d = 0 is CE) or sigmoid(d) (the authors' code)."""
    init: Literal["ce", "logit_adjustment"] = "logit_adjustment"
    """Initial point: plain CE, or logit adjustment ι = τ·log π."""
    init_tau: float = Field(1.0, ge=0.0)
    """τ of the logit-adjustment initialisation."""
    init_cdt_gamma: float = Field(0.0, ge=0.0)
    """γ of a CDT initialisation Δ_c = (n_c / n_max)^γ; 0: Δ = 1 (exp) or sigmoid(1) (sigmoid)."""
    init_prior_counts: list[float] | None = None
    """K counts > 0 whose proportions are the prior π of the logit-adjustment start (e.g. a noise
    model's estimated clean counts); None: the observed counts of the lower level's data."""
    transition: list[list[float]] | None = None
    """Fixed K x K label-noise transition matrix T (T_ij = P(observed j | true i)): the family
    becomes −ω_ỹ log (Tᵀ softmax(Δ ⊙ z + ι))_ỹ, forward correction composed with the learned
    parameters. With ``init: logit_adjustment`` and ``init_prior_counts`` = the estimated clean
    counts, AutoBalance starts from forward correction + logit adjustment at the clean prior.
    The head's lower problem is then no longer convex: its Hessian can be indefinite, which skips
    upper steps unless ``damping`` is set. None: no noise correction."""
    group_size: int | None = Field(None, ge=1)
    """Consecutive classes (in label order) sharing one parameter each; None: per class."""
    class_groups: list[int] | None = None
    """Explicit map class -> parameter group (length K); excludes ``group_size``."""
    group_sensitive: bool = False
    """Separate parameters per value of the sample's group attribute (sensitive attribute x
    class); needs group attributes in the data."""
    offset_bound: float = Field(10.0, gt=0.0)
    """Offsets are clipped to [-bound, bound] after every upper step."""
    log_scale_bound: float = Field(3.0, gt=0.0)
    """Raw scale parameters d are clipped to [-bound, bound]."""
    log_weight_bound: float = Field(2.3, gt=0.0)
    """Raw weights log ω are clipped to [-bound, bound] (ω within about [0.1, 10])."""

    # -- the split -----------------------------------------------------------------------------
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Fraction of the training pool held out for the upper level."""
    val_split: Literal["balanced", "stratified"] = "balanced"
    """balanced: equal count per class where the data allow (at most ``max_class_val_fraction``
    of a class); stratified: ``val_fraction`` of every class (the authors' 80/20 per class)."""
    max_class_val_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """A balanced split takes at most this fraction of any class, so every class keeps training
    images."""
    upper_data: Literal["pool", "meta"] = "pool"
    """Validation data of the upper level: the held-out part of the pool (the paper), or the
    clean meta set (then the whole pool trains the lower level)."""

    # -- the upper objective -------------------------------------------------------------------
    objective: Literal["balanced_ce", "worst_class", "fairness"] = "balanced_ce"
    """balanced CE (weights ∝ 1/n_c), smooth worst-class loss, or balanced CE + λ·EO gap."""
    worst_class_temperature: float = Field(0.5, gt=0.0)
    """T of the smooth max T·log Σ_c exp(L_c / T) over per-class losses."""
    fairness_weight: float = Field(1.0, ge=0.0)
    """λ of the equal-opportunity gap in the fairness objective."""

    # -- the hypergradient ---------------------------------------------------------------------
    hypergradient: Literal["neumann", "cg", "unrolled"] = "cg"
    """Implicit differentiation with conjugate gradients (default, see the module docstring) or a
    Neumann series (the authors'), or one unrolled SGD step (torch.func)."""
    hyper_params: Literal["head", "all"] = "head"
    """Lower-level weights the hypergradient differentiates through: the last linear layer, or
    every model parameter (the authors'). Through every weight the Hessian of a CNN is
    indefinite and, without ``damping``, every upper step is skipped (on digits ``damping: 10``
    makes H + δI positive definite)."""
    neumann_terms: int = Field(5, ge=0)
    """J: terms (I − ηH)^j, j = 1..J, after the first; with ``neumann_tol``, the most terms."""
    neumann_tol: float | None = Field(None, gt=0.0, lt=1.0)
    """Adaptive series: stop once ‖(I − ηH)^j g‖ ≤ tol·‖g‖, and fall back to CG if that takes
    more than ``neumann_terms`` terms; None: always J terms (an approximation)."""
    eta: float | None = Field(None, gt=0.0)
    """Fixed η of the Neumann series (the authors' 1.0); None: ``eta_scale / λ_max``. λ_max is
    estimated either way: a fixed η with η·λ_max ≥ 2 is damped to ``eta_scale / λ_max``
    (logged)."""
    eta_scale: float = Field(1.0, gt=0.0, lt=2.0)
    """η·λ_max; must be < 2 for the series to converge."""
    eta_halvings: int = Field(2, ge=0)
    """Times η is halved when the Neumann terms grow, before falling back to CG."""
    power_iterations: int = Field(10, ge=1)
    """Power-iteration steps for λ_max."""
    cg_iterations: int = Field(200, ge=1)
    """Most CG iterations (one Hessian-vector product each; 48–126 were needed on Fashion-MNIST
    for tolerances 1e-2 to 1e-6). CG that runs out is used and logged."""
    cg_tol: float = Field(1e-4, gt=0.0, lt=1.0)
    """CG stops once the residual ‖g − (H + δI) v‖ ≤ cg_tol·‖g‖ (1e-4: relative error of the
    hypergradient 7e-5 for 76 products on Fashion-MNIST; 1e-2: 4e-3 for 42)."""
    damping: float = Field(0.0, ge=0.0)
    """δ of the CG system (H + δI) v = g. Negative curvature (H + δI not positive definite)
    skips the upper step with a logged reason; a δ above −λ_min makes such steps solvable, as
    the hypergradient of a proximally regularised lower problem."""
    hyper_train_batches: int = Field(10, ge=1)
    """Training batches averaged in one hypergradient (the authors: 10)."""
    hyper_val_batches: int = Field(10, ge=1)
    """Validation batches averaged in one hypergradient (the authors: 10)."""

    # -- the upper optimiser -------------------------------------------------------------------
    warmup_epochs: int = Field(2, ge=0)
    """Epochs of plain CE before the parametric loss and the upper level start."""
    upper_every: int = Field(10, ge=1)
    """Lower-level iterations between upper steps (the authors: 30)."""
    upper_end_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """The upper level stops after this fraction of the search epochs."""
    upper_optimizer: Literal["adam", "sgd"] = "adam"
    """Optimiser of the learned loss parameters (the upper level): Adam, or SGD with momentum."""
    upper_lr: float = Field(0.05, gt=0.0)
    """Learning rate of the upper optimiser."""
    upper_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """Momentum of the upper level's SGD (``upper_optimizer: sgd``)."""
    upper_weight_decay: float = Field(1e-4, ge=0.0)
    """Weight decay of the upper optimiser on the loss parameters."""
    upper_clip: float = Field(1.0, gt=0.0)
    """Largest L2 norm of one hypergradient (clipped before the optimiser step)."""
    search_epochs: int | None = Field(None, ge=1)
    """Epochs of the bilevel phase; None: ``train.epochs``."""

    # -- the TPE search over the knobs above ----------------------------------------------------
    tune: list[TunableKnob] = Field(default_factory=list)
    """Knobs TPE tunes (scored on validation); empty: every trial runs the values above."""
    upper_lr_range: tuple[float, float] = (0.005, 0.3)
    """``upper_lr``: TPE's range (low, high), log-uniform."""
    warmup_range: tuple[int, int] = (0, 5)
    """``warmup_epochs``: TPE's range (low, high) of integers."""
    fairness_weight_range: tuple[float, float] = (0.0, 5.0)
    """``fairness_weight``: TPE's range (low, high), uniform."""
    eta_scale_range: tuple[float, float] = (0.2, 1.5)
    """``eta_scale``: TPE's range (low, high), uniform; below 2."""
    upper_every_range: tuple[int, int] = (5, 50)
    """``upper_every``: TPE's range (low, high) of integers, log-uniform."""
    augment_strength_range: tuple[float, float] = (0.0, 1.0)
    """``augment_strength``: TPE picks the probability of augmenting a sample of the most
    frequent class and of the rarest one in this range; classes between are interpolated linearly
    in log class count (``train.augment.class_strength``). Augmentation is not differentiable,
    so this part of the loss design is searched by TPE, not by the hypergradient."""

    @model_validator(mode="after")
    def _consistent(self) -> BilevelConfig:
        if self.group_size is not None and self.class_groups is not None:
            raise ValueError("group_size and class_groups exclude each other; set only one")
        if self.class_groups is not None and any(g < 0 for g in self.class_groups):
            raise ValueError(f"class_groups must be group indices >= 0, got {self.class_groups}")
        if not (self.learn_scale or self.learn_offset or self.learn_weight):
            raise ValueError("nothing to learn: set learn_scale, learn_offset or learn_weight")
        if "eta_scale" in self.tune and self.hypergradient != "neumann":
            raise ValueError(
                f"tune: eta_scale only acts on the Neumann series; hypergradient is "
                f"{self.hypergradient!r}"
            )
        if self.init_prior_counts is not None and self.init != "logit_adjustment":
            raise ValueError(
                f"init_prior_counts only sets the logit-adjustment start; init is {self.init!r}"
            )
        if self.scale_parameterisation == "sigmoid" and self.init_cdt_gamma > 0.0:
            raise ValueError(
                "init_cdt_gamma > 0 starts the most frequent class at scale (n_max/n_max)^gamma "
                "= 1, which scale_parameterisation 'sigmoid' (scale < 1) cannot represent; use "
                "scale_parameterisation 'exp' or init_cdt_gamma 0"
            )
        low, high = self.augment_strength_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"augment_strength_range must be (low, high) in [0, 1], got {low, high}"
            )
        for name in ("upper_lr_range", "fairness_weight_range", "eta_scale_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(
                    f"{name} must be (low, high) with 0 <= low <= high, got {low, high}"
                )
        if self.upper_lr_range[0] <= 0.0:
            raise ValueError(f"upper_lr_range must start above 0, got {self.upper_lr_range}")
        if self.eta_scale_range[1] >= 2.0:
            raise ValueError(f"eta_scale_range must stay below 2, got {self.eta_scale_range}")
        for name in ("warmup_range", "upper_every_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(
                    f"{name} must be (low, high) with 0 <= low <= high, got {low, high}"
                )
        if self.upper_every_range[0] < 1:
            raise ValueError(
                f"upper_every_range must start at 1 or more, got {self.upper_every_range}"
            )
        return self
