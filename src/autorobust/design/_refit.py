"""Stage 5: the kept design trained again on its pool plus the clean meta images ("refit on
everything clean"), when what is left of the budget pays for it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autorobust._io import atomic_write
from autorobust.data.splits import Splits, TrainingPool
from autorobust.design._fits import design_config, design_splits
from autorobust.design._state import DesignRun, sample_epochs_spent
from autorobust.design.space import Design
from autorobust.errors import AutorobustError
from autorobust.experiment import RunResult, config_fingerprint, train_run
from autorobust.train.trainer import CHECKPOINT_NAME, load_checkpoint


def with_meta_in_pool(splits: Splits) -> Splits:
    """``splits`` whose training pool also holds the clean meta images with their labels
    (appended; weight 1 where the pool is weighted), for a refit on everything clean. The meta
    set stays the validation split."""
    pool, meta = splits.train, splits.meta
    m = len(meta)
    groups = None
    if pool.groups is not None and meta.groups is not None:
        groups = np.concatenate([pool.groups, meta.groups])
    weights = None if pool.weights is None else np.concatenate([pool.weights, np.ones(m)])
    index = splits.meta_index if len(splits.meta_index) == m else np.full(m, -1, np.int64)
    return dataclasses.replace(
        splits,
        train=TrainingPool(
            images=np.concatenate([pool.images, meta.images]),
            labels=np.concatenate([pool.labels, meta.labels]),
            clean_labels=np.concatenate([pool.clean_labels, meta.labels]),
            noise_mask=np.concatenate([pool.noise_mask, np.zeros(m, dtype=bool)]),
            source_index=np.concatenate([pool.source_index, index]),
            groups=groups,
            weights=weights,
        ),
    )


def refit_cost(state: DesignRun, design: Design, start: int) -> float:
    """Sample-epochs of :func:`train_refit` of ``design`` from epoch ``start``: its pool (its
    selection's, if any) plus the meta images, for the rest of ``train.epochs``, at its cost
    factor."""
    splits, _ = design_splits(state, design)
    size = len(splits.train) + len(state.splits.meta)
    return float(size * (state.config.train.epochs - start) * design.cost_factor)


def refit_if_affordable(
    state: DesignRun, design: Design, best: RunResult, rung: Path | None
) -> tuple[dict[str, Any], RunResult | None]:
    """Stage 5 when the budget left after the study and the finalists pays for it: the refit
    of ``design`` (whose ``best/`` run is ``best``) from its first-rung checkpoint ``rung``.
    Returns the report's ``refit`` entry (``best_test``; ``refit_test``, None when skipped, and
    then the ``reason``; ``start_epoch``; ``budget_left`` and ``cost`` in trainings) and the
    refit's result (None when skipped). A refit already started (its checkpoint written) is
    finished whatever the budget says now."""
    left = state.config.design.budget * state.reference_cost - sample_epochs_spent(state)
    # From the kept finalist's first rung when its checkpoint there was kept, else from scratch.
    rung = rung if rung is not None and rung.is_file() else None
    start = state.trial_epochs if rung is not None else 0
    cost = refit_cost(state, design, start)
    entry: dict[str, Any] = {
        "best_test": best.metrics["test"],
        "refit_test": None,
        "start_epoch": start,
        "budget_left": left / state.reference_cost,
        "cost": cost / state.reference_cost,
    }
    if cost > left and not (state.run_dir / "refit" / CHECKPOINT_NAME).is_file():
        entry["reason"] = (
            f"not refitted: the refit costs {entry['cost']:.2f} trainings, the budget has "
            f"{max(entry['budget_left'], 0.0):.2f} left"
        )
        print(f"design: {entry['reason']}")
        return entry, None
    started = time.process_time()
    result = train_refit(state, design, rung)
    state.cost["refit_sample_epochs"] = cost
    state.cost["refit_cpu_seconds"] = time.process_time() - started
    entry["refit_test"] = result.metrics["test"]
    return entry, result


def train_refit(state: DesignRun, design: Design, rung: Path | None) -> RunResult:
    """Stage 5 (``design.refit``): ``design`` trained on its pool plus the meta images to
    ``train.epochs`` in ``run_dir/refit``, continuing its first-rung checkpoint ``rung`` (the
    same config, so the same schedule; the meta images join from there) or from scratch. The
    refit records no training dynamics (nothing reads them)."""
    config, splits = design_config(
        state, design, epochs=state.config.train.epochs, run_dir=state.run_dir / "refit"
    )
    quiet = config.model_copy(
        update={"train": config.train.model_copy(update={"record_dynamics": False})}
    )
    target = state.run_dir / "refit" / CHECKPOINT_NAME
    if rung is not None and not target.is_file():
        checkpoint = load_checkpoint(rung)
        if checkpoint.get("fingerprint") != config_fingerprint(config):
            raise AutorobustError(f"{rung}: not a checkpoint of {design.describe()}")
        # The dynamics recorded on the pool (the probe's recipe) do not extend to the meta
        # images; recording changes no weight, so the run continues without them.
        checkpoint.pop("dynamics", None)
        checkpoint["fingerprint"] = config_fingerprint(quiet)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle: torch.save(checkpoint, handle))
    return train_run(quiet, resume=True, splits=with_meta_in_pool(splits), evaluate_test=True)
