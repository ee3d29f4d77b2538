"""Treatment ``selection``: a per-class selection of the noisy pool by a detector scoring the
probe's outputs (methods/sample_selection), maybe relabelling confident rejected samples, maybe
keeping the rejected ones as unlabeled images for a pseudo-label loss. The design trains on the
relabel file the selection writes (``data.relabel_file``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autorobust.design.loss_families import DesignLoss, loss_family
from autorobust.design.treatments import NoiseTreatment, categorical
from autorobust.methods.sample_selection.config import SelectionConfig

if TYPE_CHECKING:
    from autorobust.design.config import DesignConfig
    from autorobust.design.space import Design

# One weak forward pass without gradient and one strong forward and backward pass of as many
# rejected images as labelled ones, per step: the pseudo-label loss's nominal cost per
# sample-epoch relative to plain training.
PSEUDO_LABEL_COST_FACTOR = 2.3


def _pseudo_label_composes(loss: str) -> bool:
    """The pseudo-label loss is a training method of its own: it does not compose with a loss
    family that brings another (AutoBalance's bilevel trainer)."""
    return loss_family(loss).method is None


class Selection(NoiseTreatment):
    """Selection (and relabelling, and a pseudo-label loss) of the noisy pool."""

    name = "selection"

    def cost_factor(self, design: Design) -> float:
        return PSEUDO_LABEL_COST_FACTOR if design.pseudo_label else 1.0

    def pseudo_label_choices(self, settings: DesignConfig, loss: str) -> list[bool]:
        return list(settings.pseudo_label) if _pseudo_label_composes(loss) else [False]

    def selection(self, design: Design) -> SelectionConfig | None:
        return SelectionConfig(
            detector=design.detector or "posterior",
            rule=design.rule,
            rule_options={"q": design.quantile} if design.rule == "meta_quantile" else {},
            relabel=bool(design.relabel),
            relabel_confidence=design.relabel_confidence or 0.9,
            relabel_needs_prototype=design.relabel_needs_prototype,
            # Weight 1: measured on Fashion-MNIST, confidence weights did not help (78.2% against
            # 78.4% balanced), and AutoBalance's and MW-Net's trainers take no sample weights.
            relabel_weight="one",
        )

    def configure(
        self,
        raw: dict[str, Any],
        design: Design,
        *,
        loss: DesignLoss,
        noise_model_file: Path | None,
        relabel_file: Path | None,
    ) -> None:
        if relabel_file is None:
            raise ValueError("a selection design needs the relabel file")
        raw["data"]["relabel_file"] = str(relabel_file)
        if design.pseudo_label:
            raw["method"] = "pseudo_label"

    def suggest(self, trial: Any, settings: DesignConfig, point: dict[str, Any]) -> None:
        s = settings
        point["detector"] = categorical(trial, "detector", s.detectors)
        point["rule"] = categorical(trial, "rule", s.rules)
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
        composes = _pseudo_label_composes(point["loss"])
        if composes and len(s.pseudo_label) > 1:
            point["pseudo_label"] = trial.suggest_categorical("pseudo_label", [False, True])
        elif composes:
            point["pseudo_label"] = s.pseudo_label[0]

    def params(self, design: Design, settings: DesignConfig, params: dict[str, Any]) -> bool:
        s = settings
        if design.detector not in s.detectors or design.rule not in s.rules:
            return False
        if len(s.detectors) > 1:
            params["detector"] = design.detector
        if len(s.rules) > 1:
            params["rule"] = design.rule
        if design.rule == "meta_quantile":
            if design.quantile is None:
                return False
            if not s.quantile_range[0] <= design.quantile <= s.quantile_range[1]:
                return False
            params["quantile"] = design.quantile
        params["relabel"] = bool(design.relabel)
        if design.relabel:
            params["relabel_confidence"] = design.relabel_confidence
            if design.detector == "prototype":
                params["relabel_needs_prototype"] = bool(design.relabel_needs_prototype)
            elif design.relabel_needs_prototype:
                return False
        pseudo_labels = self.pseudo_label_choices(s, design.loss)
        if bool(design.pseudo_label) not in pseudo_labels:
            return False
        if len(pseudo_labels) > 1:
            params["pseudo_label"] = bool(design.pseudo_label)
        return True

    def components(self, design: Design) -> list[str]:
        parts = [self.name]
        if design.relabel:
            parts.append("relabel")
        if design.pseudo_label:
            parts.append("pseudo_label")
        return parts

    def without(self, design: Design, component: str) -> Design:
        if component == "relabel":
            return replace(design, relabel=False, relabel_confidence=None)
        if component == "pseudo_label":
            return replace(design, pseudo_label=False)
        return super().without(design, component)

    def describe(self, design: Design) -> str | None:
        relabel = f", relabel {design.relabel_confidence:.2f}" if design.relabel else ""
        if design.relabel and design.relabel_needs_prototype:
            relabel += " if the prototype agrees"
        rule = f"q={design.quantile:.2f}" if design.rule == "meta_quantile" else design.rule
        semi = ", pseudo-labels" if design.pseudo_label else ""
        return f"{self.name}({design.detector}, {rule}{relabel}{semi})"
