"""Stage 4: the finalists continued to ``train.epochs`` and compared there with their ensemble
(the simplest within one standard error of the best is kept), and the kept model moved to
``run_dir/best`` and measured on the test split."""

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
    ENSEMBLE_KEY,
    ScoredDesign,
    choose_finalist,
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
    there. Their ensemble (``design.ensemble``) is one more candidate of that choice, the most
    complex one, so it is kept only when it beats every finalist by more than one standard
    error. Returns (the chosen trial's table row, its run or the ensemble's member runs, the
    comparison's summary); the table's ``chosen`` flags are set to the chosen trial (with an
    ensemble kept: the simplest finalist within one standard error of the best finalist)."""
    started = time.process_time()
    finalists = finalist_trials(state.config.design, finished_trials(study))
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
    labels, k = state.splits.meta.labels, state.splits.num_classes
    ordered = [runs[t.number] for t in finalists]
    ensemble = None
    if len(ordered) > 1 and state.config.design.ensemble:
        designs = [design for design, _ in ordered]
        ensemble = ScoredDesign(
            ENSEMBLE_KEY,
            ensemble_complexity(designs),
            ensemble_scores(state, [fit for _, fit in ordered]),
        )
    choice = choose_finalist(
        scored, ensemble, labels, k, one_standard_error=state.config.design.one_standard_error
    )
    kept = choice.kept
    state.cost["finalists_sample_epochs"] = cost
    state.cost["finalists_cpu_seconds"] = time.process_time() - started
    for row in table:
        row["chosen"] = row["trial"] == kept
    summary: dict[str, Any] = {
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
            for row in choice.rows
            if row["key"] != ENSEMBLE_KEY
        ],
        "ensemble": None,
    }
    if ensemble is not None:
        best = next(d for d in scored if d.key == choice.best_single)
        summary["ensemble"] = ensemble_summary(
            ensemble, best, ordered, labels, k, kept=choice.ensemble_kept
        )
    chosen_row = next(r for r in table if r["chosen"])
    if choice.ensemble_kept:
        return chosen_row, [fit for _, fit in ordered], summary
    return chosen_row, [runs[kept][1]], summary


def ensemble_complexity(designs: list[Design]) -> tuple[int, float]:
    """The ensemble's place in the order of simplicity: after each of its members (one more
    component than the most complex, the members' nominal costs summed)."""
    return (
        max(d.complexity[0] for d in designs) + 1,
        sum(d.complexity[1] for d in designs),
    )


def ensemble_scores(state: DesignRun, fits: list[Fit]) -> np.ndarray:
    """Per-image meta scores float64 (M,) of the ensemble of ``fits`` (the mean of their
    calibrated probabilities), NaN on the images some member may not be scored on (it was
    fitted on them: cross-fitting)."""
    meta = state.splits.meta
    scored = np.logical_and.reduce([fit.scored for fit in fits])
    labels = meta.labels[scored]
    # The log of the mean probability is the ensemble's logit: its softmax gives them back.
    log_mean = np.log(np.clip(ensemble_probabilities(state, fits, meta.images[scored]), 1e-12, 1))
    scores = np.full(len(meta.labels), np.nan)
    scores[scored] = per_image_score(
        log_mean, labels, state.splits.num_classes, state.config.design.score
    )
    return scores


def ensemble_summary(
    ensemble: ScoredDesign,
    best: ScoredDesign,
    finalists: list[tuple[Design, Fit]],
    labels: np.ndarray,
    num_classes: int,
    *,
    kept: bool,
) -> dict[str, Any]:
    """What the report says of the ensemble: its members, its score and the best finalist's on
    the meta images every member may be scored on, their paired difference and its standard
    error, how many images that is, and whether it was ``kept``."""
    scored = np.isfinite(ensemble.losses)
    difference, standard_error = weighted_difference(
        ensemble.losses, best.losses, labels, num_classes
    )
    return {
        "members": [design.describe() for design, _ in finalists],
        "score": scored_balanced_mean(ensemble.losses, labels, num_classes),
        "best_finalist_score": scored_balanced_mean(
            np.where(scored, best.losses, np.nan), labels, num_classes
        ),
        "difference": difference,
        "standard_error": standard_error,
        "scored_images": int(scored.sum()),
        "kept": kept,
    }


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
