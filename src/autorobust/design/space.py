"""The space of composed designs: architecture x noise treatment x loss family.

A :class:`Design` is plain data (JSON round trip); :class:`DesignSpace` asks an Optuna trial for
one with ``trial.suggest_*`` only (conditional parameters: a selection's detector and quantile
exist only in trials that select). Pairs that do not compose are not proposed: MW-Net trains with
its own method, so ``mwnet`` goes with a fixed loss, not with AutoBalance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

from autorobust.design.config import DesignConfig, LossFamily
from autorobust.errors import ConfigError

__all__ = [
    "AUTOBALANCE_DESIGN",
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
        if self.treatment != "none":
            parts.append(self.treatment)
            if self.treatment == "selection" and self.relabel:
                parts.append("relabel")
            if self.treatment == "selection" and self.pseudo_label:
                parts.append("pseudo_label")
        if self.loss != "cross_entropy":
            parts.append(self.loss)
        return parts

    def without(self, component: str) -> Design:
        """This design with ``component`` (one of :attr:`components`) taken out: the fixed
        model, no treatment, no relabelling, or cross-entropy instead of the loss family."""
        if component not in self.components:
            raise ValueError(f"{component!r} is not a component of {self.describe()}")
        if component == "architecture":
            return replace(self, architecture="fixed")
        if component == "relabel":
            return replace(self, relabel=False, relabel_confidence=None)
        if component == "pseudo_label":
            return replace(self, pseudo_label=False)
        if component in ("logit_adjustment", "autobalance"):
            return replace(self, loss="cross_entropy", tau=0.0)
        return Design(architecture=self.architecture, loss=self.loss, tau=self.tau)

    @property
    def fits_meta(self) -> bool:
        """Whether training fits something on the clean meta set besides selecting the epoch
        (MW-Net's V, AutoBalance's loss with the meta set as upper data), so that scoring it on
        the same images would flatter it (cross-fitting, ``design.cross_fit``)."""
        return self.treatment == "mwnet" or self.loss == "autobalance"

    @property
    def complexity(self) -> tuple[int, float]:
        """Order of simplicity for the one-standard-error rule: components, then nominal cost."""
        return len(self.components), self.cost_factor

    @property
    def cost_factor(self) -> float:
        """Nominal cost of one sample-epoch relative to plain training (docs/methods/design.md,
        "budget").

        MW-Net's cheap step (last layer, V every 4th step) measured 1.05-1.15x a CE epoch;
        AutoBalance's upper steps through the head about 1.3x; the others add nothing per sample.
        """
        factor = 1.0
        if self.treatment == "mwnet":
            factor *= 1.15
        if self.pseudo_label:
            # One weak forward pass without gradient and one strong forward and backward pass of
            # as many rejected images as labelled ones, per step.
            factor *= 2.3
        if self.loss == "autobalance":
            factor *= 1.3
        return factor

    def describe(self) -> str:
        """Short name, e.g. ``selection(posterior, q=0.10, relabel 0.90) + logit_adjustment``."""
        parts = []
        if self.architecture != "fixed":
            parts.append(f"cell {self.architecture}")
        if self.treatment == "selection":
            relabel = f", relabel {self.relabel_confidence:.2f}" if self.relabel else ""
            if self.relabel and self.relabel_needs_prototype:
                relabel += " if the prototype agrees"
            rule = f"q={self.quantile:.2f}" if self.rule == "meta_quantile" else self.rule
            semi = ", pseudo-labels" if self.pseudo_label else ""
            parts.append(f"selection({self.detector}, {rule}{relabel}{semi})")
        elif self.treatment == "mwnet":
            aware = "class-aware V" if self.mwnet_class_aware else "V on the loss"
            parts.append(f"mwnet({aware})")
        elif self.treatment == "transition":
            parts.append("transition")
        loss = self.loss if self.loss == "cross_entropy" else f"{self.loss}(tau={self.tau:.2f})"
        return " + ".join([*parts, loss])


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
REFERENCE_DESIGNS: tuple[Design, ...] = (
    Design(treatment="none", loss="logit_adjustment", tau=1.0),
    ROLT_DESIGN,
    AUTOBALANCE_DESIGN,
    _SELECTION,
    MWNET_DESIGN,
    replace(_SELECTION, relabel=True, relabel_confidence=0.5),
    Design(treatment="transition", loss="logit_adjustment", tau=1.0),
)
"""Designs every study evaluates first, in this order (each skipped where it lies outside the
configured space or does not fit the budget): the probe's recipe, then the fixed recipe of each
method that led some cell of the noise-aware benchmark, then the remaining treatments."""


class DesignSpace:
    """Asks a trial for a :class:`Design` within a ``design`` config section.

    Optuna parameter names (a categorical with one allowed value is not asked): ``architecture``,
    ``treatment``, ``loss`` (``mwnet_loss`` under MW-Net), ``tau`` (not with CE); ``detector``,
    ``quantile``, ``relabel``, ``relabel_confidence`` (selection); ``mwnet_class_aware``,
    ``mwnet_lr`` (mwnet).
    """

    def __init__(self, settings: DesignConfig) -> None:
        self.settings = settings

    def suggest(self, trial: Any) -> Design:
        """Ask ``trial`` for a design (``trial.suggest_*`` only)."""
        s = self.settings
        architecture = _categorical(trial, "architecture", s.architectures)
        treatment = _categorical(trial, "treatment", s.treatments)
        if treatment == "mwnet":
            # MW-Net trains with its own method, so it does not compose with AutoBalance; its own
            # parameter name keeps each name's choices fixed across trials (Optuna requires it).
            loss = _categorical(trial, "mwnet_loss", _mwnet_losses(s))
        else:
            loss = _categorical(trial, "loss", s.losses)
        point: dict[str, Any] = {"architecture": architecture, "treatment": treatment, "loss": loss}
        if loss != "cross_entropy":
            point["tau"] = trial.suggest_float("tau", *s.tau_range)
        else:
            point["tau"] = 0.0
        if treatment == "selection":
            point["detector"] = _categorical(trial, "detector", s.detectors)
            point["rule"] = _categorical(trial, "rule", s.rules)
            if point["rule"] == "meta_quantile":
                point["quantile"] = trial.suggest_float("quantile", *s.quantile_range, log=True)
            point["relabel"] = trial.suggest_categorical("relabel", [False, True])
            if point["relabel"]:
                point["relabel_confidence"] = trial.suggest_float(
                    "relabel_confidence", *s.relabel_confidence_range
                )
                if point["detector"] == "prototype":
                    point["relabel_needs_prototype"] = trial.suggest_categorical(
                        "relabel_needs_prototype", [False, True]
                    )
            if loss != "autobalance" and len(s.pseudo_label) > 1:
                point["pseudo_label"] = trial.suggest_categorical("pseudo_label", [False, True])
            elif loss != "autobalance":
                point["pseudo_label"] = s.pseudo_label[0]
        if treatment == "mwnet":
            point["mwnet_class_aware"] = trial.suggest_categorical(
                "mwnet_class_aware", [False, True]
            )
            point["mwnet_lr"] = trial.suggest_float("mwnet_lr", 1e-4, 1e-2, log=True)
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
        if design.treatment == "mwnet":
            if design.loss not in _mwnet_losses(s):
                return None
            if len(_mwnet_losses(s)) > 1:
                params["mwnet_loss"] = design.loss
        elif len(s.losses) > 1:
            params["loss"] = design.loss
        if design.loss != "cross_entropy":
            if not s.tau_range[0] <= design.tau <= s.tau_range[1]:
                return None
            params["tau"] = design.tau
        if design.treatment == "mwnet":
            params["mwnet_class_aware"] = bool(design.mwnet_class_aware)
            params["mwnet_lr"] = design.mwnet_lr
        if design.treatment == "selection":
            if design.detector not in s.detectors or design.rule not in s.rules:
                return None
            if len(s.detectors) > 1:
                params["detector"] = design.detector
            if len(s.rules) > 1:
                params["rule"] = design.rule
            if design.rule == "meta_quantile":
                if design.quantile is None:
                    return None
                if not s.quantile_range[0] <= design.quantile <= s.quantile_range[1]:
                    return None
                params["quantile"] = design.quantile
            params["relabel"] = bool(design.relabel)
            if design.relabel:
                params["relabel_confidence"] = design.relabel_confidence
                if design.detector == "prototype":
                    params["relabel_needs_prototype"] = bool(design.relabel_needs_prototype)
                elif design.relabel_needs_prototype:
                    return None
            if design.loss != "autobalance":
                if bool(design.pseudo_label) not in s.pseudo_label:
                    return None
                if len(s.pseudo_label) > 1:
                    params["pseudo_label"] = bool(design.pseudo_label)
            elif design.pseudo_label:
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


_Choice = TypeVar("_Choice", bound=str)


def _categorical(trial: Any, name: str, choices: Sequence[_Choice]) -> _Choice:
    """A categorical parameter, asked only when there is a choice (TPE then ignores constants)."""
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


def _mwnet_losses(settings: DesignConfig) -> list[LossFamily]:
    return [loss for loss in settings.losses if loss != "autobalance"] or ["logit_adjustment"]
