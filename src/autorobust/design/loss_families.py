"""The loss families a design trains with: what each adds to a design's config, its cost, its name.

A family is looked up by the name a :class:`~autorobust.design.space.Design` stores
(:func:`loss_family`); :data:`LOSS_FAMILIES` holds them in the order of ``design.losses``'s
default. A family that brings its own training method (AutoBalance's bilevel trainer) does not
compose with a treatment that brings another (MW-Net, the pseudo-label loss of a selection).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autorobust.design.space import Design

__all__ = [
    "AUTOBALANCE_COST_FACTOR",
    "LOSS_FAMILIES",
    "AutoBalance",
    "CrossEntropy",
    "DesignLoss",
    "LogitAdjustment",
    "loss_family",
]

# Nominal cost of one AutoBalance sample-epoch relative to plain training (docs/methods/design.md,
# "budget"): its upper steps go through the head only (docs/methods/autobalance.md, "Hypergradient
# through the last layer"), measured at about 1.3x a CE epoch.
AUTOBALANCE_COST_FACTOR = 1.3


class DesignLoss:
    """One loss family (the base: what every family shares).

    Attributes:
        name: the name a design stores (``Design.loss``) and ``design.losses`` lists.
        cost_factor: nominal cost of one sample-epoch relative to plain training.
        prior_corrected: whether the family corrects the prior with τ (``Design.tau``, searched
            as Optuna parameter ``tau``); without it τ is 0.
        method: the training method the family brings (None: any treatment's, plain ERM).
        fits_meta: whether training fits something on the clean meta set (its upper data).
    """

    name: str
    cost_factor: float = 1.0
    prior_corrected: bool = False
    method: str | None = None
    fits_meta: bool = False

    def prior_tau(self, design: Design) -> float:
        """τ of the prior correction this family trains with (0: none)."""
        return design.tau if self.prior_corrected else 0.0

    def configure(self, raw: dict[str, Any], design: Design, *, epochs: int) -> None:
        """Set the loss (and the method, where the family brings one) in the raw config ``raw``."""
        if self.prior_corrected:
            raw["loss"] = {"name": "logit_adjustment", "options": {"tau": design.tau}}
        else:
            raw["loss"] = {"name": "cross_entropy", "options": {}}

    def with_transition(self, raw: dict[str, Any], noise_model_file: Path) -> None:
        """Compose the family with forward correction by the noise model in ``noise_model_file``
        (the loss itself is replaced by the ``transition`` treatment); nothing more by default."""

    def component(self, design: Design) -> str | None:
        """The family as a component of ``design`` (None: the simplest, cross-entropy)."""
        return self.name

    def without(self, design: Design) -> Design:
        """``design`` with cross-entropy instead of this family."""
        return replace(design, loss=CrossEntropy.name, tau=0.0)

    def describe(self, design: Design) -> str:
        """The family's part of a design's name, e.g. ``logit_adjustment(tau=1.00)``."""
        return f"{self.name}(tau={design.tau:.2f})" if self.prior_corrected else self.name


class CrossEntropy(DesignLoss):
    """Fixed cross-entropy: the simplest family, which other designs are compared without."""

    name = "cross_entropy"

    def component(self, design: Design) -> str | None:
        return None


class LogitAdjustment(DesignLoss):
    """Logit adjustment at the prior of the labels trained on, τ searched."""

    name = "logit_adjustment"
    prior_corrected = True


class AutoBalance(DesignLoss):
    """AutoBalance's parametric loss, learned by bilevel optimisation from the logit-adjusted
    point with the clean meta set as upper data."""

    name = "autobalance"
    cost_factor = AUTOBALANCE_COST_FACTOR
    prior_corrected = True
    method = "autobalance"
    fits_meta = True

    def configure(self, raw: dict[str, Any], design: Design, *, epochs: int) -> None:
        super().configure(raw, design, epochs=epochs)
        raw["method"] = self.method
        # The clean meta set as upper data: the variant that led the noise-aware benchmark
        # (the noisy pool's own split would fit the loss to noisy labels).
        raw["bilevel"].update(
            init="logit_adjustment",
            init_tau=design.tau,
            upper_data="meta",
            warmup_epochs=min(raw["bilevel"]["warmup_epochs"], epochs - 1),
        )

    def with_transition(self, raw: dict[str, Any], noise_model_file: Path) -> None:
        from autorobust.methods.glc.noise_model import NoiseModel

        model = NoiseModel.load(noise_model_file)
        raw["bilevel"].update(
            transition=model.transition.tolist(),
            init_prior_counts=model.clean_counts.tolist(),
        )


LOSS_FAMILIES: dict[str, DesignLoss] = {
    family.name: family for family in (CrossEntropy(), LogitAdjustment(), AutoBalance())
}
"""Every loss family by name."""


def loss_family(name: str) -> DesignLoss:
    """The loss family named ``name``; a ValueError naming the known ones otherwise."""
    try:
        return LOSS_FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown loss family {name!r}; known: {sorted(LOSS_FAMILIES)}") from None
