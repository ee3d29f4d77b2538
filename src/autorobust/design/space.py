"""The space of composed designs: architecture x noise treatment x loss family.

A :class:`Design` is plain data (JSON round trip); :class:`DesignSpace` asks an Optuna trial for
one with ``trial.suggest_*`` only (conditional parameters: a selection's detector and quantile
exist only in trials that select). Pairs that do not compose are not proposed: MW-Net trains with
its own method, so ``mwnet`` goes with a fixed loss, not with AutoBalance; nor does ``transition``,
whose forward correction leaves AutoBalance's hypergradient no positive definite Hessian.

What a treatment or a loss family contributes (its parameters, cost, components and name) is its
own module's: design/treatments/ and design/loss_families.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from autorobust.design.config import DesignConfig
from autorobust.design.loss_families import loss_family
from autorobust.design.treatments import categorical, treatment
from autorobust.errors import ConfigError

__all__ = [
    "AUTOBALANCE_DESIGN",
    "LEADING_REFERENCE_DESIGNS",
    "MWNET_DESIGN",
    "REFERENCE_DESIGNS",
    "ROLT_DESIGN",
    "Design",
    "DesignSpace",
]


@dataclass(frozen=True)
class Design:
    """One composed design.

    Attributes:
        architecture: ``"fixed"`` (the config's model) or the path of a CSNAS genotype file.
        treatment: ``none``, ``transition``, ``selection`` or ``mwnet``.
        loss: ``cross_entropy``, ``logit_adjustment`` or ``autobalance``.
        tau: τ of the prior correction (logit adjustment; composed with forward correction under
            ``transition``). Unused by cross-entropy.
        detector: a selection's detector (``posterior``, ``prototype``, ``small_loss``).
        quantile: a selection's per-class meta quantile q (rule ``meta_quantile``).
        rule: a selection's per-class rule: ``meta_quantile`` (searched), or ``gmm`` / ``otsu``
            (for fixed recipes such as the RoLT-style baseline).
        relabel: whether a selection relabels confident rejected samples.
        relabel_confidence: the confidence a relabelled sample needs.
        relabel_needs_prototype: relabel only where the nearest clean prototype agrees (RoLT).
        pseudo_label: a selection's rejected samples stay as unlabeled images for a
            pseudo-label loss (``method: pseudo_label``, FixMatch on the rejected samples).
        mwnet_class_aware: MW-Net's V reads a class embedding (CMW-Net-like) besides the loss.
        mwnet_lr: V's learning rate.
    """

    architecture: str = "fixed"
    treatment: str = "none"
    loss: str = "logit_adjustment"
    tau: float = 1.0
    detector: str | None = None
    quantile: float | None = None
    rule: str = "meta_quantile"
    relabel: bool | None = None
    relabel_confidence: float | None = None
    relabel_needs_prototype: bool = False
    pseudo_label: bool | None = None
    mwnet_class_aware: bool | None = None
    mwnet_lr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (None ones included)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "design") -> Design:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError naming ``where``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown design field {unknown[0]!r}; known: {sorted(known)}"
            )
        return cls(**data)

    @property
    def components(self) -> list[str]:
        """The parts that differ from the simplest design (fixed model, no treatment, CE)."""
        parts = []
        if self.architecture != "fixed":
            parts.append("architecture")
        parts.extend(treatment(self.treatment).components(self))
        loss = loss_family(self.loss).component(self)
        if loss is not None:
            parts.append(loss)
        return parts

    def without(self, component: str) -> Design:
        """This design with ``component`` (one of :attr:`components`) taken out: the fixed
        model, no treatment, no relabelling, or cross-entropy instead of the loss family."""
        if component not in self.components:
            raise ValueError(f"{component!r} is not a component of {self.describe()}")
        if component == "architecture":
            return replace(self, architecture="fixed")
        family = loss_family(self.loss)
        if component == family.component(self):
            return family.without(self)
        return treatment(self.treatment).without(self, component)

    @property
    def fits_meta(self) -> bool:
        """Whether training fits something on the clean meta set besides selecting the epoch
        (MW-Net's V, AutoBalance's loss with the meta set as upper data), so that scoring it on
        the same images would flatter it (cross-fitting, ``design.cross_fit``)."""
        return treatment(self.treatment).fits_meta or loss_family(self.loss).fits_meta

    @property
    def complexity(self) -> tuple[int, float]:
        """Order of simplicity for the one-standard-error rule: components, then nominal cost."""
        return len(self.components), self.cost_factor

    @property
    def cost_factor(self) -> float:
        """Nominal cost of one sample-epoch relative to plain training (docs/methods/design.md,
        "budget"): the treatment's factor times the loss family's.

        MW-Net's cheap step (last layer, V every 4th step) measured 1.05-1.15x a CE epoch; a
        selection's pseudo-label loss 2.3x; AutoBalance's upper steps through the head about 1.3x;
        the others add nothing per sample.
        """
        factor = 1.0
        factor *= treatment(self.treatment).cost_factor(self)
        factor *= loss_family(self.loss).cost_factor
        return factor

    def describe(self) -> str:
        """Short name, e.g. ``selection(posterior, q=0.10, relabel 0.90) + logit_adjustment``."""
        parts = []
        if self.architecture != "fixed":
            parts.append(f"cell {self.architecture}")
        name = treatment(self.treatment).describe(self)
        if name is not None:
            parts.append(name)
        return " + ".join([*parts, loss_family(self.loss).describe(self)])


# The reference designs a study evaluates first (REFERENCE_DESIGNS below); TPE then explores
# around them.
_SELECTION = Design(
    treatment="selection",
    loss="logit_adjustment",
    tau=1.0,
    detector="posterior",
    quantile=0.1,
    relabel=False,
    pseudo_label=False,
)
# RoLT-style (Wei et al. 2021): distance to the clean meta set's class prototypes, a per-class
# two-component mixture, relabelling where the prototype agrees. Under pair-flip noise the probe
# learns the flipped pairs, so its posterior cannot tell them apart while the clean prototypes
# can: measured (benchmarks/noise_aware.py --preset cpu, seed 0) this recipe led both pair-flip
# cells (75.0% and 61.4% balanced against 66.7% and 46.9% for the posterior selection).
ROLT_DESIGN = Design(
    treatment="selection",
    loss="logit_adjustment",
    tau=1.0,
    detector="prototype",
    rule="gmm",
    relabel=True,
    relabel_confidence=0.9,
    relabel_needs_prototype=True,
    pseudo_label=False,
)
# AutoBalance (Li et al. 2021) from the logit-adjusted start with the clean meta set as upper
# data: the best single method on long-tailed Fashion-MNIST with 40% symmetric noise (63.3%
# balanced against 59.5% for logit adjustment, benchmarks/noise_aware.py --preset cpu) and on a
# shift with class-dependent confusions (83.4% against 79.8%).
AUTOBALANCE_DESIGN = Design(treatment="none", loss="autobalance", tau=1.0)
# MW-Net (Shu et al. 2019) on the logit-adjusted loss with the class-aware V and learning rate of
# the bundled fashion-mnist-lt100-sym40-reweight config: V then only has to find the noisy
# labels while the prior correction handles the tail.
MWNET_DESIGN = Design(
    treatment="mwnet", loss="logit_adjustment", tau=1.0, mwnet_class_aware=True, mwnet_lr=1e-3
)
LEADING_REFERENCE_DESIGNS: tuple[Design, ...] = (
    Design(treatment="none", loss="logit_adjustment", tau=1.0),
    ROLT_DESIGN,
    AUTOBALANCE_DESIGN,
    _SELECTION,
    MWNET_DESIGN,
)
"""The probe's recipe, then the fixed recipe of each method that led some cell of the
noise-aware benchmark or a held-back shift: they come before the refit in the budget
(``design.refit``), so that a study finds the best single method before it spends on the refit."""
REFERENCE_DESIGNS: tuple[Design, ...] = (
    *LEADING_REFERENCE_DESIGNS,
    replace(_SELECTION, relabel=True, relabel_confidence=0.5),
    Design(treatment="transition", loss="logit_adjustment", tau=1.0),
)
"""Designs every study evaluates first, in this order (each skipped where it lies outside the
configured space or does not fit the budget): :data:`LEADING_REFERENCE_DESIGNS`, then the
remaining treatments, which (like TPE's proposals) leave the refit free."""


class DesignSpace:
    """Asks a trial for a :class:`Design` within a ``design`` config section.

    Optuna parameter names (a categorical with one allowed value is not asked): ``architecture``,
    ``treatment``, ``loss`` (``mwnet_loss`` under MW-Net, ``transition_loss`` under forward
    correction), ``tau`` (not with CE); then the treatment's own (design/treatments/):
    ``detector``, ``rule``, ``quantile``, ``relabel``, ``relabel_confidence``,
    ``relabel_needs_prototype``, ``pseudo_label`` (selection); ``mwnet_class_aware``,
    ``mwnet_lr`` (mwnet).
    """

    def __init__(self, settings: DesignConfig) -> None:
        self.settings = settings

    def suggest(self, trial: Any) -> Design:
        """Ask ``trial`` for a design (``trial.suggest_*`` only)."""
        s = self.settings
        architecture = categorical(trial, "architecture", s.architectures)
        name = categorical(trial, "treatment", s.treatments)
        kind = treatment(name)
        # A treatment that restricts the loss families (MW-Net: not AutoBalance) asks under its
        # own parameter name.
        loss = categorical(trial, *kind.loss_choices(s))
        point: dict[str, Any] = {"architecture": architecture, "treatment": name, "loss": loss}
        if loss_family(loss).prior_corrected:
            point["tau"] = trial.suggest_float("tau", *s.tau_range)
        else:
            point["tau"] = 0.0
        kind.suggest(trial, s, point)
        return Design(**point)

    def params(self, design: Design) -> dict[str, Any] | None:
        """Optuna's params of ``design`` (to enqueue it), or None when it lies outside the space."""
        s = self.settings
        if (
            design.architecture not in s.architectures
            or design.treatment not in s.treatments
            or design.loss not in s.losses
        ):
            return None
        params: dict[str, Any] = {}
        if len(s.architectures) > 1:
            params["architecture"] = design.architecture
        if len(s.treatments) > 1:
            params["treatment"] = design.treatment
        kind = treatment(design.treatment)
        name, losses = kind.loss_choices(s)
        if design.loss not in losses:
            return None
        if len(losses) > 1:
            params[name] = design.loss
        if loss_family(design.loss).prior_corrected:
            if not s.tau_range[0] <= design.tau <= s.tau_range[1]:
                return None
            params["tau"] = design.tau
        if not kind.params(design, s, params):
            return None
        return params

    def describe(self) -> dict[str, Any]:
        """The space as JSON-able data (stored with the study; a resumed study must match)."""
        return self.settings.model_dump(
            mode="json",
            include={
                "treatments",
                "losses",
                "architectures",
                "detectors",
                "rules",
                "quantile_range",
                "relabel_confidence_range",
                "tau_range",
            },
        )
