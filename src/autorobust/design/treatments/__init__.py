"""The noise treatments a design composes, one module each behind :class:`NoiseTreatment`.

Each treatment owns its part of a design: what it adds to the design's config
(:meth:`~NoiseTreatment.configure`, called by
:func:`~autorobust.design.run_config.design_run_config` after the loss family's), its nominal
cost, its Optuna parameters (asked by :class:`~autorobust.design.space.DesignSpace` after the
architecture, treatment, loss and τ), and its name and components in a design's description.
:func:`treatment` looks one up by the name a :class:`~autorobust.design.space.Design` stores:

- ``none`` (``_none.py``): the pool as it is;
- ``transition`` (``_transition.py``): forward correction with the estimated noise model;
- ``selection`` (``_selection.py``): a per-class selection by a detector, maybe relabelling, maybe
  a pseudo-label loss on the rejected samples;
- ``mwnet`` (``_mwnet.py``): Meta-Weight-Net with its cheap meta step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from autorobust.design.loss_families import DesignLoss

if TYPE_CHECKING:
    from autorobust.design.config import DesignConfig
    from autorobust.design.space import Design
    from autorobust.methods.sample_selection.config import SelectionConfig

__all__ = ["NoiseTreatment", "categorical", "treatment", "treatments"]


class NoiseTreatment:
    """One noise treatment (the base: no treatment's behaviour where a subclass says nothing).

    Attributes:
        name: the name a design stores (``Design.treatment``) and ``design.treatments`` lists.
        fits_meta: whether training fits something on the clean meta set besides selecting the
            epoch (MW-Net's V).
        needs_noise_model: whether the design's config reads the noise model file (with the
            noise model rejected, T̂ = I and the observed counts, it adds nothing).
    """

    name: str
    fits_meta: bool = False
    needs_noise_model: bool = False

    def cost_factor(self, design: Design) -> float:
        """Nominal cost of one sample-epoch of ``design`` relative to plain training, for the
        treatment's part (docs/methods/design.md, "budget")."""
        return 1.0

    def loss_choices(self, settings: DesignConfig) -> tuple[str, list[str]]:
        """(Optuna parameter name, loss families) the treatment composes with. A treatment that
        restricts them asks under its own name, so that each name's choices stay fixed across
        trials (Optuna requires it)."""
        return "loss", list(settings.losses)

    def pseudo_label_choices(self, settings: DesignConfig, loss: str) -> list[bool]:
        """Whether a design of this treatment with the loss family ``loss`` may train with a
        pseudo-label loss on the rejected samples: the values the space may draw."""
        return [False]

    def selection(self, design: Design) -> SelectionConfig | None:
        """How the pool is selected (and relabelled) from the probe's outputs before ``design``
        trains on it (the relabel file its config reads); None: it trains on the pool."""
        return None

    def configure(
        self,
        raw: dict[str, Any],
        design: Design,
        *,
        loss: DesignLoss,
        noise_model_file: Path | None,
        relabel_file: Path | None,
    ) -> None:
        """Add the treatment to the raw config ``raw``, whose loss family ``loss`` is set."""

    def suggest(self, trial: Any, settings: DesignConfig, point: dict[str, Any]) -> None:
        """Ask ``trial`` for the treatment's fields of the design ``point`` (whose architecture,
        treatment, loss and tau are set) and set them there (``trial.suggest_*`` only)."""

    def params(self, design: Design, settings: DesignConfig, params: dict[str, Any]) -> bool:
        """Add the treatment's Optuna params of ``design`` to ``params``; False when they lie
        outside the space."""
        return True

    def components(self, design: Design) -> list[str]:
        """The treatment's components of ``design`` (:attr:`Design.components`)."""
        return [self.name]

    def without(self, design: Design, component: str) -> Design:
        """``design`` without ``component`` (one of :meth:`components`): by default the whole
        treatment taken out."""
        return type(design)(architecture=design.architecture, loss=design.loss, tau=design.tau)

    def describe(self, design: Design) -> str | None:
        """The treatment's part of a design's name (None: nothing to say)."""
        return self.name


_Choice = TypeVar("_Choice", bound=str)


def categorical(trial: Any, name: str, choices: Sequence[_Choice]) -> _Choice:
    """A categorical parameter, asked only when there is a choice (TPE then ignores constants)."""
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


@functools.cache
def treatments() -> dict[str, NoiseTreatment]:
    """Every treatment by name, in the order of ``design.treatments``'s default."""
    from autorobust.design.treatments._mwnet import MWNet
    from autorobust.design.treatments._none import NoTreatment
    from autorobust.design.treatments._selection import Selection
    from autorobust.design.treatments._transition import Transition

    found = (NoTreatment(), Transition(), Selection(), MWNet())
    return {t.name: t for t in found}


def treatment(name: str) -> NoiseTreatment:
    """The treatment named ``name``; a ValueError naming the known ones otherwise."""
    try:
        return treatments()[name]
    except KeyError:
        raise ValueError(f"unknown treatment {name!r}; known: {sorted(treatments())}") from None
