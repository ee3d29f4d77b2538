"""Stage 3: the study's first rung. The reference designs, then TPE's proposals, each trained for
``design.trial_epochs`` and scored on the clean meta set, one at a time while the budget leaves
room for the finalists' continuation (and the leader's refit); and the choice at the first rung."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from optuna.trial import TrialState

from autorobust.design._fits import (
    Fit,
    balanced_score,
    design_fits,
    meta_scores,
    sample_epochs,
    train_until,
)
from autorobust.design._probe import noise_model_rejected, take_second_look
from autorobust.design._refit import refit_cost
from autorobust.design._state import DesignRun, copy_once
from autorobust.design.config import DesignConfig
from autorobust.design.run_config import PROBE_DESIGN
from autorobust.design.scoring import ScoredDesign, choose_within_one_standard_error
from autorobust.design.space import (
    LEADING_REFERENCE_DESIGNS,
    REFERENCE_DESIGNS,
    Design,
    DesignSpace,
)
from autorobust.design.treatments import treatment
from autorobust.errors import AutorobustError
from autorobust.search.common import search_settings, trial_dir
from autorobust.search.driver import NextTrial, run_trials
from autorobust.search.runner import retry_dead_trials, study_state_counts, take_over_trial_dir
from autorobust.train.trainer import CHECKPOINT_NAME


def start_from_probe(state: DesignRun, design: Design, fits: list[Fit]) -> int:
    """Epochs a trial of ``design`` gets from the probe: the reference design's trial continues
    the probe's run (a copy of its checkpoint, so that the probe itself stays as it was)."""
    if design != PROBE_DESIGN or state.probe_epochs > state.trial_epochs:
        return 0
    copy_once(state.run_dir / "probe" / CHECKPOINT_NAME, fits[0].run_dir / CHECKPOINT_NAME)
    return state.probe_epochs


def rung_costs(state: DesignRun, design: Design) -> tuple[float, float]:
    """(sample-epochs of a trial of ``design`` at the first rung, of its continuation to
    ``train.epochs``); the continuation is its first fit's alone."""
    fits = design_fits(
        state, design, state.run_dir / "trials" / "cost-estimate"
    )  # nothing is trained
    start = state.probe_epochs if design == PROBE_DESIGN else 0
    first = sample_epochs(design, fits, max(state.trial_epochs - start, 0))
    rest = sample_epochs(design, fits[:1], state.config.train.epochs - state.trial_epochs)
    return first, rest


def study_objective(state: DesignRun, space: DesignSpace) -> Callable[[Any], float]:
    """The study's objective: train the trial's design to the first rung and return its
    balanced meta score (per-image scores, cost and CPU seconds kept as user attributes)."""

    def objective(trial: Any) -> float:
        design = space.suggest(trial)
        trial.set_user_attr("design", design.to_dict())
        trial.set_user_attr("name", design.describe())
        started = time.process_time()
        directory = trial_dir(state.run_dir, trial.number)
        # A retry of a trial whose worker died takes over its folder and resumes its runs there.
        take_over_trial_dir(trial, directory, lambda number: trial_dir(state.run_dir, number))
        fits = design_fits(state, design, directory)
        start = start_from_probe(state, design, fits)
        for fit in fits:
            train_until(fit.config, fit.splits, state.trial_epochs)
        losses = meta_scores(state, fits)
        # JSON has no NaN: an image the design may not be scored on is stored as None.
        trial.set_user_attr("meta_losses", [None if np.isnan(v) else float(v) for v in losses])
        trial.set_user_attr(
            "sample_epochs", sample_epochs(design, fits, state.trial_epochs - start)
        )
        trial.set_user_attr(
            "continuation_sample_epochs",
            sample_epochs(design, fits[:1], state.config.train.epochs - state.trial_epochs),
        )
        trial.set_user_attr("cpu_seconds", time.process_time() - started)
        return balanced_score(state, losses)

    return objective


def meta_losses(trial: Any) -> np.ndarray:
    """A finished trial's per-image meta scores float64 (M,), NaN where it may not be scored."""
    return np.array(
        [np.nan if v is None else v for v in trial.user_attrs["meta_losses"]], dtype=np.float64
    )


def finished_trials(study: Any) -> list[Any]:
    """The study's completed trials."""
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def finalist_trials(settings: DesignConfig, done: list[Any]) -> list[Any]:
    """The trials that continue to ``train.epochs``, ``design.finalists`` of them: the reference
    design first with ``design.reference_final``; then, with
    ``design.finalists_across_treatments``, the best of each treatment not yet among them, in
    the order of their first-rung scores; then the best of the rest."""
    ranked = sorted(done, key=lambda t: (t.value, t.number))

    def design(t: Any) -> Design:
        return Design.from_dict(t.user_attrs["design"])

    chosen = (
        [t for t in ranked if design(t) == PROBE_DESIGN][:1] if settings.reference_final else []
    )
    if settings.finalists_across_treatments:
        for t in ranked:
            if len(chosen) < settings.finalists and all(
                design(t).treatment != design(c).treatment for c in chosen
            ):
                chosen.append(t)
    chosen += [t for t in ranked if t not in chosen][: max(settings.finalists - len(chosen), 0)]
    return chosen


def continuation_reserve(state: DesignRun, done: list[Any], continuation: float | None) -> float:
    """Sample-epochs to keep free for the finalists' continuation, if the next trial (whose
    continuation costs ``continuation``; None: no next trial) may become one of the finalists.
    The refit is not reserved: it runs when what is left pays for it (``design.refit``)."""
    costs = [
        t.user_attrs["continuation_sample_epochs"]
        for t in finalist_trials(state.config.design, done)
    ]
    reserve = float(sum(costs))
    if continuation is None:
        return reserve
    if len(costs) < state.config.design.finalists:
        return reserve + continuation
    replaceable = costs[1:] if state.config.design.reference_final else costs
    if not replaceable:
        return reserve
    return reserve + max(0.0, continuation - min(replaceable))


def refit_reserve(state: DesignRun, done: list[Any]) -> float:
    """Sample-epochs a TPE proposal or a reference design after the leading ones
    (:data:`~autorobust.design.space.LEADING_REFERENCE_DESIGNS`) leaves free for the refit
    (``design.refit``): the refit of the design that leads the study (the best first-rung score
    so far)."""
    if not state.config.design.refit or not done:
        return 0.0
    leader = min(done, key=lambda t: (t.value, t.number))
    return refit_cost(state, Design.from_dict(leader.user_attrs["design"]), state.trial_epochs)


def costliest_factors(settings: DesignConfig) -> tuple[float, float]:
    """Cost factors (per sample-epoch, over plain training) of the costliest design the space
    holds: (at the first rung, where a cross-fitted design trains twice with
    ``design.cross_fit_swap``; in its continuation).
    An upper bound for a design not yet proposed (a selection is counted on the whole pool)."""
    candidates = [
        Design(treatment=name, loss=loss, pseudo_label=pseudo)
        for name in settings.treatments
        for loss in treatment(name).loss_choices(settings)[1]
        for pseudo in treatment(name).pseudo_label_choices(settings, loss)
    ]
    cross_fit = 2.0 if settings.cross_fit and settings.cross_fit_swap else 1.0
    first = max(d.cost_factor * (cross_fit if d.fits_meta else 1.0) for d in candidates)
    return max(first, 1.0), max(max(d.cost_factor for d in candidates), 1.0)


def run_study(state: DesignRun, default_study_name: str) -> Any:
    """Stage 3: first-rung trials one at a time while the budget allows the next one and the
    finalists' continuation. The reference designs come first, each skipped when it does not
    fit; then TPE's proposals, counted at the costliest a design can be."""
    settings_cfg = state.config.design
    space = DesignSpace(settings_cfg)
    search = state.config.search.model_copy(
        update={"pruner": "none", "n_startup_trials": settings_cfg.n_startup_trials}
    )
    settings = search_settings(
        search,
        study_name=default_study_name,
        space={**space.describe(), "probe_epochs": state.probe_epochs,
               "trial_epochs": state.trial_epochs, "score": settings_cfg.score,
               "finalists": settings_cfg.finalists, "cross_fit": settings_cfg.cross_fit},
        directions=("minimize",),
    )  # fmt: skip
    budget = settings_cfg.budget * state.reference_cost
    # A resumed study reads back the second look it took (a retry of a trial trained after it
    # must build the same config).
    take_second_look(state, [])
    # A TPE proposal may be the costliest design the space holds.
    first_rung, continuation_factor = costliest_factors(settings_cfg)
    worst = (
        len(state.splits.train) * state.trial_epochs * first_rung,
        len(state.splits.train)
        * (state.config.train.epochs - state.trial_epochs)
        * continuation_factor,
    )

    def next_trial(study: Any) -> NextTrial | None:
        """The next first-rung trial: a queued retry, the first reference design that fits the
        budget with the finalists' continuation, or TPE's proposal if even the costliest design
        fits with the continuation and the leader's refit; None: the study ends."""
        done = finished_trials(study)
        spent = state.cost.get("probe_sample_epochs", 0.0) + sum(
            t.user_attrs.get("sample_epochs", 0.0) for t in done
        )
        counts = study_state_counts(study)
        finished = counts["COMPLETE"] + counts["PRUNED"]
        tried = [Design.from_dict(t.user_attrs["design"]) for t in done]
        # A killed trial (still RUNNING until its heartbeat goes stale) is retried: its retry
        # runs next and resumes in the dead trial's folder; nothing else is enqueued meanwhile,
        # so its design is not trained a second time.
        retries = retry_dead_trials(study) or study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING,)
        )

        def next_reference() -> Design | None:
            """The first reference design not yet tried that fits the budget, if any."""
            for design in [] if retries else REFERENCE_DESIGNS:
                if design in tried or space.params(design) is None:
                    continue
                if treatment(design.treatment).needs_noise_model and noise_model_rejected(state):
                    continue  # with T̂ = I and the observed counts it is the probe's recipe again
                cost = rung_costs(state, design)
                reserve = continuation_reserve(state, done, cost[1])
                if design not in LEADING_REFERENCE_DESIGNS:
                    reserve += refit_reserve(state, done)
                if finished == 0 or spent + cost[0] + reserve <= budget:
                    return design
                # else this reference does not fit: the next one may
            return None

        first = next_reference()
        # Past the leading references the noise model is looked at again (once), before any
        # design that may read it is trained.
        if not retries and first not in LEADING_REFERENCE_DESIGNS and take_second_look(state, done):
            first = next_reference()
        proposal = (
            spent
            + worst[0]
            + continuation_reserve(state, done, worst[1])
            + refit_reserve(state, done)
        )
        if not retries and first is None and (finished == 0 or proposal > budget):
            return None
        return NextTrial(None if first is None else space.params(first))

    # The one search driver: trials one at a time, while next_trial says the budget allows one.
    study = run_trials(
        study_objective(state, space),
        dataclasses.replace(settings, n_trials=settings_cfg.max_trials),
        state.run_dir,
        next_trial=next_trial,
    )
    state.cost["trials_sample_epochs"] = sum(
        t.user_attrs.get("sample_epochs", 0.0) for t in finished_trials(study)
    )
    # A study that ended within the leading references looks again before its finalists
    # continue (their checkpoints are still the first rung's).
    take_second_look(state, finished_trials(study))
    return study


def choose_at_first_rung(
    state: DesignRun, study: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The choice at the first rung: the best design and the simplest one within one standard
    error of it (the choice when there is no continuation), and the table of every trial."""
    done = finished_trials(study)
    if not done:
        raise AutorobustError(
            f"design study {study.study_name!r} has no completed trial; see the warnings above"
        )
    designs = {t.number: Design.from_dict(t.user_attrs["design"]) for t in done}
    scored = [
        ScoredDesign(key=t.number, complexity=designs[t.number].complexity, losses=meta_losses(t))
        for t in done
    ]
    best, chosen, rows = choose_within_one_standard_error(
        scored, state.splits.meta.labels, state.splits.num_classes
    )
    if not state.config.design.one_standard_error:
        chosen = best
    by_number = {t.number: t for t in done}
    finalists = {t.number for t in finalist_trials(state.config.design, done)}
    table = []
    for row in sorted(rows, key=lambda r: r["score"]):
        trial = by_number[row["key"]]
        table.append(
            {
                "trial": row["key"],
                "design": designs[row["key"]].to_dict(),
                "name": designs[row["key"]].describe(),
                "score": row["score"],
                "difference_to_best": row["difference"],
                "standard_error": row["standard_error"],
                "sample_epochs": trial.user_attrs.get("sample_epochs"),
                "scored_images": int(np.isfinite(meta_losses(trial)).sum()),
                "best": row["key"] == best,
                "finalist": row["key"] in finalists,
                "chosen": row["key"] == chosen,
            }
        )
    chosen_row = next(r for r in table if r["chosen"])
    return chosen_row, table
