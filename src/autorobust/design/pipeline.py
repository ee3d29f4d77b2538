"""``autorobust design``: search a composed design under a compute budget and keep the best.

The stages, each resumable (rerunning the command continues where it stopped; every run is
trained on the schedule of ``train.epochs``, paused and continued from its checkpoint):

1. **Probe.** The reference design (logit adjustment on the noisy pool) trained for the first
   ``design.probe_epochs`` epochs (``run_dir/probe``). Its outputs on the pool and the clean meta
   set (and its training dynamics) feed the detectors and the noise model.
2. **Noise model.** T̂ and the clean class counts n̂ from the probe (:mod:`autorobust.methods.glc`),
   checked against their bootstrap spread and shrunk towards no noise (``noise_model.json``); in
   a simulated shift, the estimation error. Once the leading reference designs are scored, a
   **second look** estimates it again from the best of them that never fitted on the meta set
   (a model trained on cleaner data, ``noise_model_second_look.json``); from then on the design
   uses the average of the two estimates (``noise_model_average.json``).
3. **Study, first rung.** The reference designs, then TPE's proposals (architecture x noise
   treatment x loss family, :mod:`~autorobust.design.space`), each trained for the first
   ``design.trial_epochs`` epochs in ``trials/trial-NNNN`` through
   :func:`~autorobust.experiment.train_run` and scored on the clean meta set only, by
   ``design.score`` (:mod:`~autorobust.design.scoring`). A design that fits on the meta set is
   cross-fitted over its two halves. The study stops when the next trial would leave too little
   of ``design.budget`` for the finalists' continuation.
4. **Finalists.** The ``design.finalists`` best continue to ``train.epochs``; the simplest within
   one standard error of the best there is kept, their ensemble (``design.ensemble``) being one
   more candidate, the most complex; it becomes ``run_dir/best``, measured on the test split.
5. **Refit** (``design.refit``): the kept single design trained again on the pool plus the meta
   images (``run_dir/refit``), when what is left of the budget pays for it. Then **the report**
   (``design.md``, ``design.json``, plots).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autorobust._io import write_json
from autorobust.config import ExperimentConfig
from autorobust.data.splits import Splits
from autorobust.design._contributions import component_contributions, train_leave_one_out
from autorobust.design._finalists import (
    drop_trial_checkpoints,
    ensemble_run,
    final_run,
    promote_finalists,
)
from autorobust.design._fits import (
    RUNG_CHECKPOINT,
    Fit,
    balanced_score,
    retrained_scores,
    train_design,
)
from autorobust.design._probe import noise_model_report, run_probe
from autorobust.design._refit import refit_if_affordable
from autorobust.design._state import DesignRun, sample_epochs_spent, stage_epochs
from autorobust.design._study import choose_at_first_rung, run_study
from autorobust.design.run_config import design_run_config
from autorobust.design.space import Design
from autorobust.experiment import RunResult, build_splits
from autorobust.methods.csnas.darts.genotype import check_genotype_files
from autorobust.search.common import finish_study

__all__ = [
    "DesignOutcome",
    "DesignRun",
    "design_run_config",
    "run_design",
]


DESIGN_JSON = "design.json"


@dataclass(frozen=True)
class DesignOutcome:
    """A finished ``autorobust design``.

    Attributes:
        run_dir: where everything is (probe, trials, study, best, report).
        chosen: the study's chosen design's summary (design, trial, score, standard error).
        retrained: the design's model at ``train.epochs`` (``best/``, or ``refit/``) with its test
            metrics, or None without the finalists' stage.
        report: the path of ``design.md``.
        final: the name of the design's model: the kept finalist's, or
            ``ensemble(a; b)`` when the finalists' ensemble was kept (``best/ensemble.json``).
    """

    run_dir: Path
    chosen: dict[str, Any]
    retrained: RunResult | None
    report: Path
    final: str = ""


def run_design(
    config: ExperimentConfig,
    *,
    default_study_name: str = "design",
    retrain: bool = True,
    splits: Splits | None = None,
    fixed: Design | None = None,
) -> DesignOutcome:
    """Run (or resume) ``autorobust design`` for ``config`` in ``config.run_dir``.

    Args:
        config: the experiment; its ``design`` section sets the space, budget and scoring.
        default_study_name: the study name when ``search.study_name`` is unset.
        retrain: train the chosen design with ``train.epochs`` and measure it on the test split.
        splits: pre-built splits (None: built from ``config``).
        fixed: skip the study and retrain this design (a fixed recipe, such as the GLC or
            RoLT-style baselines, through the same stages).

    Returns:
        :class:`DesignOutcome`.
    """
    from autorobust.design.report import write_report

    wall = time.perf_counter()
    run_dir = Path(config.run_dir)
    # Parsed and validated before anything is written (a bad cell would fail every trial).
    check_genotype_files(config.design.architectures)
    splits = build_splits(config) if splits is None else splits
    probe_epochs, trial_epochs = stage_epochs(config)
    state = DesignRun(config, splits, run_dir, probe_epochs, trial_epochs)
    run_probe(state)
    final: dict[str, Any] | None = None
    refit: dict[str, Any] | None = None
    kept_fits: list[Fit] = []
    rung: Path | None = None
    if fixed is None:
        study = run_study(state, default_study_name)
        chosen, table = choose_at_first_rung(state, study)
        if retrain:
            chosen, kept_fits, final = promote_finalists(state, study, table)
        finish_study(study, run_dir, design_table=table)
    else:
        chosen = {"trial": None, "design": fixed.to_dict(), "name": fixed.describe()}
        table = [chosen]
    design = Design.from_dict(chosen["design"])
    noise = noise_model_report(state)  # final once the study (and its second look) is done
    contributions = component_contributions(state, design, table) if fixed is None else []
    retrained = None
    if retrain:
        started = time.process_time()
        if len(kept_fits) > 1:
            retrained = ensemble_run(state, kept_fits)
        elif kept_fits:
            rung = kept_fits[0].run_dir / RUNG_CHECKPOINT
            retrained, kept_fits[0] = final_run(state, kept_fits[0])
        else:  # a fixed recipe: trained from scratch with train.epochs
            retrained, _, _, cost = train_design(
                state, design, epochs=config.train.epochs, run_dir=run_dir / "best",
                evaluate_test=True,
            )  # fmt: skip
            state.cost["retrain_sample_epochs"] = cost
        state.cost["retrain_cpu_seconds"] = time.process_time() - started
        if config.design.refit and len(kept_fits) == 1:
            refit, refitted = refit_if_affordable(state, design, retrained, rung)
            retrained = refitted or retrained
        if kept_fits:  # the study's kept run is in best/ (and refit/): the trials' are spent
            drop_trial_checkpoints(state, study)
        metrics = dict(retrained.metrics)
        metrics["noise_model"] = noise
        write_json(retrained.run_dir / "metrics.json", metrics)
        retrained = RunResult(run_dir=retrained.run_dir, metrics=metrics)
    spent = sample_epochs_spent(state)
    leave_one_out = []
    if config.design.leave_one_out and retrained is not None:
        leave_one_out = train_leave_one_out(state, design)
        if final is not None:
            # The kept finalist's score at train.epochs, as compared there: its run may be an
            # ensemble's member by now, and a refit has seen the meta images.
            kept_score = next(c["score"] for c in final["candidates"] if c["kept"])
        else:  # a fixed recipe, trained in best/
            kept_score = balanced_score(state, retrained_scores(state, design, retrained.run_dir))
        for row in leave_one_out:
            row["meta_score_gain"] = row["meta_score"] - kept_score
    state.cost["total_sample_epochs"] = spent
    state.cost["budget_used"] = spent / state.reference_cost
    state.cost["wall_seconds_this_call"] = time.perf_counter() - wall
    summary = {
        "chosen": chosen,
        "final": final,
        "refit": refit,
        "final_design": design.to_dict(),
        "final_name": design.describe(),
        "score": config.design.score,
        "trials": table,
        "contributions": contributions,
        "leave_one_out": leave_one_out,
        "noise_model": noise,
        "cost": state.cost,
        "probe_epochs": probe_epochs,
        "trial_epochs": trial_epochs,
        "test": None if retrained is None else retrained.metrics["test"],
        "retrained_data": None if retrained is None else retrained.metrics["data"],
    }
    write_json(run_dir / DESIGN_JSON, summary)
    report = write_report(run_dir, summary, state)
    ensemble = (final or {}).get("ensemble") or {}
    name = design.describe()
    if ensemble.get("kept"):
        name = f"ensemble({'; '.join(ensemble['members'])})"
    return DesignOutcome(
        run_dir=run_dir, chosen=chosen, retrained=retrained, report=report, final=name
    )
