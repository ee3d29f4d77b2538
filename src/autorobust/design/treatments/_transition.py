"""Treatment ``transition``: forward correction (Patrini et al. 2017) with the transition matrix
T̂ estimated from the probe (methods/glc), composed with the loss family's prior correction at the
estimated clean prior."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autorobust.design.loss_families import AutoBalance, DesignLoss, LogitAdjustment
from autorobust.design.treatments import NoiseTreatment

if TYPE_CHECKING:
    from autorobust.design.config import DesignConfig
    from autorobust.design.space import Design


class Transition(NoiseTreatment):
    """Forward correction; needs the noise model file."""

    name = "transition"
    needs_noise_model = True

    def loss_choices(self, settings: DesignConfig) -> tuple[str, list[str]]:
        # Not with AutoBalance: its hypergradient solves with the Hessian of the lower problem,
        # which forward correction makes indefinite even over the last layer alone (the
        # likelihood of a mixture of softmax outputs is not convex in the logits). On digits,
        # small_cnn and resnet20 alike, every upper step met negative curvature and was skipped,
        # so the trial failed. Its own parameter name keeps each name's choices fixed.
        losses: list[str] = [name for name in settings.losses if name != AutoBalance.name]
        return "transition_loss", losses or [LogitAdjustment.name]

    def configure(
        self,
        raw: dict[str, Any],
        design: Design,
        *,
        loss: DesignLoss,
        noise_model_file: Path | None,
        relabel_file: Path | None,
    ) -> None:
        if noise_model_file is None:
            raise ValueError("a transition design needs the noise model file")
        raw["loss"] = {
            "name": "forward_corrected",
            "options": {"noise_model_file": str(noise_model_file), "tau": loss.prior_tau(design)},
        }
        loss.with_transition(raw, noise_model_file)
