"""Stage 4: the finalists continued to ``train.epochs`` and compared there (the simplest
within one standard error of the best is kept), their ensemble where it is better by more than
one standard error, and the kept model moved to ``run_dir/best`` and measured on the test split."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from autorobust._io import write_json
from autorobust.design._fits import (
    RUNG_CHECKPOINT,
    Fit,
    design_fits,
    finished_epochs,
    fit_logits,
    meta_scores,
    sample_epochs,
    train_until,
)
from autorobust.design._state import DesignRun, copy_once
from autorobust.design._study import finalist_trials, finished_trials
from autorobust.design.scoring import (
    ScoredDesign,
    choose_within_one_standard_error,
    per_image_score,
    scored_balanced_mean,
    weighted_difference,
)
from autorobust.design.space import Design
from autorobust.experiment import RunResult, train_run
from autorobust.inference import ENSEMBLE_NAME
from autorobust.search.common import trial_dir
from autorobust.train.calibration import softmax
from autorobust.train.metrics import classification_metrics
from autorobust.train.trainer import CHECKPOINT_NAME


def promote_finalists(
    state: DesignRun, study: Any, table: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[Fit], dict[str, Any]]:
    """Stage 4: continue the finalists to ``train.epochs`` (a cross-fitted one: its first half's
    run, scored on the other half) and keep the simplest within one standard error of the best
    there, or their ensemble (``design.ensemble``) where it is better by more than one standard
    error. Returns (the kept
    trial's table row, its run or the ensemble's member runs, the comparison's summary); the
    table's ``chosen`` flags are set to the kept trial."""
    started = time.process_time()
    finalists = finalist_trials(state, finished_trials(study))
    epochs = state.config.train.epochs
    runs: dict[int, tuple[Design, Fit]] = {}
    scored, cost = [], 0.0
    for trial in finalists:
        design = Design.from_dict(trial.user_attrs["design"])
        fit = design_fits(state, design, trial_dir(state.run_dir, trial.number))[0]
        keep_rung_checkpoint(state, fit)
        train_until(fit.config, fit.splits, epochs)
        cost += sample_epochs(design, [fit], epochs - state.trial_epochs)
        runs[trial.number] = (design, fit)
        scored.append(ScoredDesign(trial.number, design.complexity, meta_scores(state, [fit])))
    best, kept, rows = choose_within_one_standard_error(
        scored, state.splits.meta.labels, state.splits.num_classes
    )
    if not state.config.design.one_standard_error:
        kept = best
    state.cost["finalists_sample_epochs"] = cost
    state.cost["finalists_cpu_seconds"] = time.process_time() - started
    for row in table:
        row["chosen"] = row["trial"] == kept
    summary = {
        "epochs": epochs,
        "kept": kept,
        "candidates": [
            {
                "trial": int(row["key"]),
                "name": runs[int(row["key"])][0].describe(),
                "run_dir": str(runs[int(row["key"])][1].run_dir),
                "score": row["score"],
                "difference_to_best": row["difference"],
                "standard_error": row["standard_error"],
                "scored_images": int(runs[int(row["key"])][1].scored.sum()),
                "kept": row["key"] == kept,
            }
            for row in rows
        ],
    }
    chosen_row = next(r for r in table if r["chosen"])
    ordered = [runs[t.number] for t in finalists]
    summary["ensemble"] = None
    if len(ordered) > 1 and state.config.design.ensemble:
        kept_scores = next(d.losses for d in scored if d.key == kept)
        if compare_ensemble(state, ordered, kept_scores, summary):
            return chosen_row, [fit for _, fit in ordered], summary
    return chosen_row, [runs[kept][1]], summary


def keep_rung_checkpoint(state: DesignRun, fit: Fit) -> None:
    """Copy a finalist's checkpoint at the first rung to ``RUNG_CHECKPOINT`` beside it (once,
    atomically) before it continues, for the refit to start from."""
    target = fit.run_dir / RUNG_CHECKPOINT
    if not target.is_file() and finished_epochs(fit.run_dir) == state.trial_epochs:
        copy_once(fit.run_dir / CHECKPOINT_NAME, target)


def ensemble_probabilities(state: DesignRun, fits: list[Fit], images: np.ndarray) -> np.ndarray:
    """Mean over ``fits`` of their calibrated probabilities softmax(z / T), float64 (N, K), on
    uint8 ``images``; T is each run's temperature (``metrics.json``, fitted on its meta split)."""
    probabilities = []
    for fit in fits:
        metrics = json.loads((fit.run_dir / "metrics.json").read_text(encoding="utf-8"))
        temperature = metrics["calibration"]["temperature"]
        probabilities.append(softmax(fit_logits(state, fit, images), float(temperature)))
    return np.mean(probabilities, axis=0)


def compare_ensemble(
    state: DesignRun,
    finalists: list[tuple[Design, Fit]],
    kept_scores: np.ndarray,
    final: dict[str, Any],
) -> bool:
    """The finalists' ensemble (the mean of their calibrated probabilities) is scored on
    the meta images every finalist may be scored on, against the kept finalist there; kept when
    it is better by more than one standard error of the paired difference (by any margin
    without ``design.one_standard_error``): the simplest model within one standard error wins,
    as everywhere in the choice. Records the comparison in ``final["ensemble"]``; returns
    whether the ensemble is kept. ``kept_scores`` are the kept finalist's per-image meta scores
    (M,), NaN where it may not be scored."""
    fits = [fit for _, fit in finalists]
    meta = state.splits.meta
    scored = np.logical_and.reduce([fit.scored for fit in fits])
    labels = meta.labels[scored]
    k = state.splits.num_classes
    # The log of the mean probability is the ensemble's logit: its softmax gives them back.
    log_mean = np.log(np.clip(ensemble_probabilities(state, fits, meta.images[scored]), 1e-12, 1))
    ensemble = per_image_score(log_mean, labels, k, state.config.design.score)
    single = kept_scores[scored]
    difference, standard_error = weighted_difference(ensemble, single, labels, k)
    # The one-standard-error rule of the whole choice: the ensemble is the more complex model,
    # so it must beat the single finalist by more than the error of the difference.
    margin = standard_error if state.config.design.one_standard_error else 0.0
    keep = difference + margin <= 0.0
    final["ensemble"] = {
        "members": [design.describe() for design, _ in finalists],
        "score": scored_balanced_mean(ensemble, labels, k),
        "kept_finalist_score": scored_balanced_mean(single, labels, k),
        "difference": difference,
        "standard_error": standard_error,
        "scored_images": int(scored.sum()),
        "kept": keep,
    }
    return keep


def ensemble_run(state: DesignRun, fits: list[Fit]) -> RunResult:
    """The ensemble as ``run_dir/best``: each member's run copied to ``best/members/<i>`` and
    measured on the test split there, ``best/ensemble.json`` naming them (what
    :func:`autorobust.load_model` reads), and the ensemble's own ``best/metrics.json``."""
    best = state.run_dir / "best"
    members = []
    for index, fit in enumerate(fits):
        result, moved = final_run(state, fit, best / "members" / str(index))
        members.append((result, moved))
    splits = state.splits
    probabilities = ensemble_probabilities(state, [m for _, m in members], splits.test.images)
    metrics: dict[str, Any] = {
        "run": {
            "ensemble": True,
            "members": [str(m.run_dir.relative_to(best)) for _, m in members],
        },
        "data": members[0][0].metrics["data"],
        "test": classification_metrics(
            splits.test.labels,
            probabilities.argmax(1),
            splits.num_classes,
            probabilities=probabilities,
            train_class_counts=splits.train_class_counts,
        ),
        "members": [result.metrics["test"] for result, _ in members],
    }
    write_json(best / ENSEMBLE_NAME, {"members": metrics["run"]["members"], "combine": "mean"})
    write_json(best / "metrics.json", metrics)
    return RunResult(run_dir=best, metrics=metrics)


def final_run(state: DesignRun, fit: Fit, best: Path | None = None) -> tuple[RunResult, Fit]:
    """The kept finalist as ``best`` (default ``run_dir/best``): its checkpoint copied there and
    measured on the test split (the run is finished: nothing more is trained). Returns (its
    result, the run at its new place)."""
    best = state.run_dir / "best" if best is None else best
    copy_once(fit.run_dir / CHECKPOINT_NAME, best / CHECKPOINT_NAME)
    moved = dataclasses.replace(fit, config=fit.config.model_copy(update={"run_dir": str(best)}))
    result = train_run(moved.config, resume=True, splits=fit.splits, evaluate_test=True)
    return result, moved


def drop_trial_checkpoints(state: DesignRun, study: Any) -> None:
    """Once ``best`` holds the kept run, the trials' checkpoints are needed by nothing."""
    for trial in study.get_trials(deepcopy=False):
        directory = trial_dir(state.run_dir, trial.number)
        for name in (CHECKPOINT_NAME, RUNG_CHECKPOINT):
            for path in [directory / name, *directory.glob(f"*/{name}")]:
                path.unlink(missing_ok=True)
