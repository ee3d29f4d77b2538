"""A design's training runs (:class:`Fit`): the splits it trains on (its selection's, if any), its
config, training paused at an epoch and continued later, and its per-image scores on the clean
meta set (under cross-fitting, each image by the run that was not fitted on it)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autorobust.config import ExperimentConfig
from autorobust.data.relabel import read_relabel_file
from autorobust.data.splits import Splits, apply_relabel_file
from autorobust.data.tensors import images_to_tensor, resolve_device
from autorobust.design._state import DesignRun
from autorobust.design.run_config import design_run_config
from autorobust.design.scoring import per_image_score, scored_balanced_mean, stratified_folds
from autorobust.design.space import Design
from autorobust.design.treatments import treatment
from autorobust.experiment import RunResult, load_best_model, train_run
from autorobust.methods.sample_selection import run_selection
from autorobust.train.trainer import CHECKPOINT_NAME, load_checkpoint, predict

# A finalist's checkpoint at the first rung, kept beside its run before it continues: the refit
# of the kept design starts from it.
RUNG_CHECKPOINT = "rung.pt"


class _Pause(Exception):
    """Raised by a run's epoch callback once the epoch it was asked to reach is checkpointed."""


def finished_epochs(run_dir: Path) -> int:
    """Epochs the checkpoint in ``run_dir`` holds (0 without one)."""
    path = run_dir / CHECKPOINT_NAME
    return int(load_checkpoint(path)["epoch"]) if path.is_file() else 0


def train_until(
    config: ExperimentConfig, splits: Splits, until: int, *, evaluate_test: bool = False
) -> RunResult | None:
    """Train ``config`` (on the schedule of its ``train.epochs``) until ``until`` epochs are
    finished, resuming its checkpoint; a run paused below ``train.epochs`` is continued later by
    a call with a larger ``until``. Returns the finished run's result, or None when paused."""
    if until >= config.train.epochs:
        return train_run(config, resume=True, splits=splits, evaluate_test=evaluate_test)
    if finished_epochs(Path(config.run_dir)) >= until:
        return None

    def pause(record: Any) -> None:
        if record.epoch + 1 >= until:
            raise _Pause

    with contextlib.suppress(_Pause):
        train_run(config, resume=True, splits=splits, evaluate_test=False, callbacks=[pause])
    return None


def design_splits(state: DesignRun, design: Design) -> tuple[Splits, Path | None]:
    """The splits a design trains on: the pool, or its treatment's selection (written once)."""
    settings = treatment(design.treatment).selection(design)
    if settings is None:
        return state.splits, None
    assert state.probe is not None
    path = state.selection_file(design)
    if not path.is_file():
        run_selection(
            state.probe,
            settings,
            source_index=state.splits.train.source_index,
            path=path,
            clean_labels=state.splits.train.clean_labels,
        )
    # Applied as make_splits applies data.relabel_file (the rejected samples feed the
    # pseudo-label loss; the unlabeled view is drawn from the relabelled pool), so the design
    # trains on what its config builds from the command line.
    splits = apply_relabel_file(
        state.splits,
        read_relabel_file(path),
        unlabeled_fraction=state.config.data.unlabeled_fraction,
        seed=state.config.seed,
    )
    return splits, path


@dataclass(frozen=True)
class Fit:
    """One training run of a design: its config (and folder), the splits it trains on, and which
    meta images (bool (M,)) it may be scored on: all, or under cross-fitting the half it was not
    fitted on."""

    config: ExperimentConfig
    splits: Splits
    scored: np.ndarray

    @property
    def run_dir(self) -> Path:
        """The run's folder."""
        return Path(self.config.run_dir)


def design_fits(state: DesignRun, design: Design, directory: Path) -> list[Fit]:
    """The runs of ``design`` in ``directory``, each on the schedule of ``train.epochs``: one,
    which under cross-fitting (``design.cross_fit``, a design that fits on the meta set) is
    fitted on one stratified half of the meta set and scored on the other; with
    ``design.cross_fit_swap`` a second run swaps the halves."""
    splits, relabel_file = design_splits(state, design)
    meta = state.splits.meta

    def fit(run_dir: Path, fit_splits: Splits, scored: np.ndarray) -> Fit:
        config = design_run_config(
            state.config,
            design,
            epochs=state.config.train.epochs,
            run_dir=run_dir,
            noise_model_file=state.noise_model_file,
            relabel_file=relabel_file,
        )
        return Fit(config, fit_splits, scored)

    if not (design.fits_meta and state.config.design.cross_fit):
        return [fit(directory, splits, np.ones(len(meta), dtype=bool))]
    half = stratified_folds(meta.labels, 2)
    fits = []
    for fold in (0, 1) if state.config.design.cross_fit_swap else (0,):
        fitted = np.flatnonzero(half == fold)
        fold_splits = dataclasses.replace(
            splits,
            meta=splits.meta.subset(fitted),
            # A user's trusted set has no positions in the source's train split (empty index).
            meta_index=splits.meta_index[fitted] if len(splits.meta_index) else splits.meta_index,
        )
        fits.append(fit(directory / f"meta-half-{fold}", fold_splits, half != fold))
    return fits


def meta_scores(state: DesignRun, fits: list[Fit]) -> np.ndarray:
    """Per-image score float64 (M,) of the fits' selected models on the clean meta set
    (``design.score``; lower is better): each image by the fit that may score it, NaN where
    none may."""
    meta = state.splits.meta
    scores = np.full(len(meta), np.nan)
    for fit in fits:
        logits = fit_logits(state, fit, meta.images)
        scores[fit.scored] = per_image_score(
            logits[fit.scored], meta.labels[fit.scored], state.splits.num_classes,
            state.config.design.score,
        )  # fmt: skip
    return scores


def fit_logits(state: DesignRun, fit: Fit, images: np.ndarray) -> np.ndarray:
    """Raw logits float (N, K) of a fit's selected model on uint8 ``images`` (N, H, W, C)."""
    device = resolve_device(state.config.device)
    model, normalize, _ = load_best_model(fit.config, fit.splits, device=device)
    return predict(model, images_to_tensor(images, device), normalize).numpy()


def balanced_score(state: DesignRun, scores: np.ndarray) -> float:
    """The class-balanced mean of per-image meta scores (M,) (NaN: not scored), lower is better."""
    return scored_balanced_mean(scores, state.splits.meta.labels, state.splits.num_classes)


def sample_epochs(design: Design, fits: list[Fit], epochs: int) -> float:
    """Nominal cost of ``epochs`` epochs of every fit (sample-epochs x the design's factor)."""
    return sum(len(f.splits.train) * epochs * design.cost_factor for f in fits)


def design_config(
    state: DesignRun, design: Design, *, epochs: int, run_dir: Path
) -> tuple[ExperimentConfig, Splits]:
    """The config that trains ``design`` for ``epochs`` in ``run_dir``, and its splits."""
    splits, relabel_file = design_splits(state, design)
    config = design_run_config(
        state.config,
        design,
        epochs=epochs,
        run_dir=run_dir,
        noise_model_file=state.noise_model_file,
        relabel_file=relabel_file,
    )
    return config, splits


def train_design(
    state: DesignRun, design: Design, *, epochs: int, run_dir: Path, evaluate_test: bool
) -> tuple[RunResult, ExperimentConfig, Splits, float]:
    """Train ``design`` from scratch for ``epochs`` (resumed when its directory holds a
    checkpoint); (result, config, splits, sample-epochs)."""
    config, splits = design_config(state, design, epochs=epochs, run_dir=run_dir)
    result = train_run(config, resume=True, splits=splits, evaluate_test=evaluate_test)
    return result, config, splits, float(len(splits.train) * epochs * design.cost_factor)


def retrained_scores(state: DesignRun, design: Design, run_dir: Path) -> np.ndarray:
    """Per-image meta scores (M,) of ``design`` trained for ``train.epochs`` in ``run_dir``."""
    config, splits = design_config(state, design, epochs=state.config.train.epochs, run_dir=run_dir)
    return meta_scores(state, [Fit(config, splits, np.ones(len(splits.meta), dtype=bool))])
