"""What each component of the chosen design contributed: read from the study's trials, and (with
``design.leave_one_out``) measured by retraining the design without it."""

from __future__ import annotations

from typing import Any

from autorobust.design._fits import balanced_score, retrained_scores, train_design
from autorobust.design._state import DesignRun
from autorobust.design.space import Design


def component_contributions(
    state: DesignRun, chosen: Design, table: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What each component of the chosen design contributed, from the study's trials.

    For a component, the best trial that lacks it (its treatment off, or CE instead of the
    chosen loss family, or the fixed model instead of the cell) is compared with the chosen
    trial: the difference of their meta scores (positive = the component helped).
    """
    chosen_row = next(r for r in table if r["chosen"])
    rows = []
    for component in chosen.components:
        without = [r for r in table if component not in Design.from_dict(r["design"]).components]
        if not without:
            rows.append({"component": component, "without": None})
            continue
        other = min(without, key=lambda r: r["score"])
        rows.append(
            {
                "component": component,
                "without": other["name"],
                "trial_without": other["trial"],
                "score_gain": other["score"] - chosen_row["score"],
            }
        )
    return rows


def train_leave_one_out(state: DesignRun, chosen: Design) -> list[dict[str, Any]]:
    """Retrain the chosen design without each of its components (``train.epochs`` each, in
    ``leave_one_out/<component>``); their meta score and test metrics."""
    rows = []
    for component in chosen.components:
        design = chosen.without(component)
        directory = state.run_dir / "leave_one_out" / component
        result, _, _, cost = train_design(
            state, design, epochs=state.config.train.epochs, run_dir=directory, evaluate_test=True
        )
        losses = retrained_scores(state, design, directory)
        state.cost["leave_one_out_sample_epochs"] = (
            state.cost.get("leave_one_out_sample_epochs", 0.0) + cost
        )
        rows.append(
            {
                "component": component,
                "without": design.describe(),
                "design": design.to_dict(),
                "meta_score": balanced_score(state, losses),
                "test": result.metrics["test"],
            }
        )
    return rows
