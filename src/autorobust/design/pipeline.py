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
   one standard error of the best there is kept, or their ensemble where it is better by more
   than one standard error
   (``design.ensemble``); it becomes ``run_dir/best``, measured on the test split.
5. **Refit** (``design.refit``): the kept single design trained again on the pool plus the meta
   images (``run_dir/refit``), when what is left of the budget pays for it. Then **the report**
   (``design.md``, ``design.json``, plots).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optuna.trial import TrialState

from autorobust._io import atomic_write, write_json
from autorobust.config import ExperimentConfig
from autorobust.data.relabel import read_relabel_file
from autorobust.data.splits import Splits, TrainingPool, apply_relabel_file
from autorobust.data.tensors import images_to_tensor, resolve_device
from autorobust.design.config import DesignConfig
from autorobust.design.loss_families import loss_family
from autorobust.design.run_config import PROBE_DESIGN, design_run_config
from autorobust.design.scoring import (
    ScoredDesign,
    choose_within_one_standard_error,
    per_image_score,
    scored_balanced_mean,
    stratified_folds,
    weighted_difference,
)
from autorobust.design.space import (
    LEADING_REFERENCE_DESIGNS,
    REFERENCE_DESIGNS,
    Design,
    DesignSpace,
)
from autorobust.design.treatments import treatment
from autorobust.errors import AutorobustError
from autorobust.experiment import (
    RunResult,
    build_splits,
    config_fingerprint,
    load_best_model,
    train_run,
)
from autorobust.methods.csnas.darts.genotype import check_genotype_files
from autorobust.methods.glc.noise_model import (
    NoiseModel,
    average_noise_models,
    estimate_noise_model,
    noise_model_errors,
    true_transition,
)
from autorobust.methods.sample_selection import (
    ProbeOutputs,
    run_probe_outputs,
    run_selection,
)
from autorobust.search.common import finish_study, search_settings, trial_dir
from autorobust.search.driver import NextTrial, run_trials
from autorobust.search.runner import retry_dead_trials, study_state_counts, take_over_trial_dir
from autorobust.train.calibration import softmax
from autorobust.train.metrics import classification_metrics
from autorobust.train.trainer import CHECKPOINT_NAME, load_checkpoint, predict

__all__ = [
    "DesignOutcome",
    "DesignRun",
    "design_run_config",
    "run_design",
]

NOISE_MODEL_NAME = "noise_model.json"
SECOND_LOOK_NAME = "noise_model_second_look.json"
AVERAGE_NAME = "noise_model_average.json"  # the probe's and the second look's, once taken
ENSEMBLE_NAME = "ensemble.json"  # a design's best/ that holds the finalists' ensemble
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


@dataclass
class DesignRun:
    """What the stages share: the config, the data, the probe's outputs and the noise model."""

    config: ExperimentConfig
    splits: Splits
    run_dir: Path
    probe_epochs: int
    trial_epochs: int
    probe: ProbeOutputs | None = None
    noise_model: NoiseModel | None = None
    probe_noise_model: NoiseModel | None = None
    second_look: NoiseModel | None = None
    cost: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def reference_cost(self) -> float:
        """Sample-epochs of one training of the configured model on the whole pool (budget 1)."""
        return float(len(self.splits.train) * self.config.train.epochs)

    @property
    def noise_model_file(self) -> Path:
        """The file of the noise model in use: the probe's, then (once the second look is
        taken) the average of the two."""
        if self.second_look is not None:
            return self.run_dir / AVERAGE_NAME
        return self.run_dir / NOISE_MODEL_NAME

    def selection_file(self, design: Design) -> Path:
        """The relabel file of a selection design (one per distinct selection setting)."""
        key = json.dumps(
            [design.detector, design.rule, design.quantile, design.relabel,
             design.relabel_confidence, design.relabel_needs_prototype]
        )  # fmt: skip
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.run_dir / "selections" / f"selection-{digest}.npz"


def _epochs(config: ExperimentConfig) -> tuple[int, int]:
    """(probe epochs, trial epochs): a third of ``train.epochs`` by default (rounded up)."""
    design = config.design
    probe = design.probe_epochs or max(1, math.ceil(config.train.epochs / 3))
    return probe, design.trial_epochs or probe


# -- the stages -----------------------------------------------------------------------------------


# A finalist's checkpoint at the first rung, kept beside its run before it continues: the refit
# of the kept design starts from it.
RUNG_CHECKPOINT = "rung.pt"


class _Pause(Exception):
    """Raised by a run's epoch callback once the epoch it was asked to reach is checkpointed."""


def _copy_once(source: Path, target: Path) -> None:
    """Copy the file ``source`` to ``target`` (its folder created), atomically, unless
    ``target`` exists: a checkpoint another run starts from."""
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda handle: handle.write(source.read_bytes()))


def _spent(state: DesignRun) -> float:
    """Sample-epochs spent so far, every stage's (the ``*sample_epochs`` entries of the cost)."""
    return sum(v for k, v in state.cost.items() if k.endswith("sample_epochs"))


def _finished_epochs(run_dir: Path) -> int:
    """Epochs the checkpoint in ``run_dir`` holds (0 without one)."""
    path = run_dir / CHECKPOINT_NAME
    return int(load_checkpoint(path)["epoch"]) if path.is_file() else 0


def _train_until(
    config: ExperimentConfig, splits: Splits, until: int, *, evaluate_test: bool = False
) -> RunResult | None:
    """Train ``config`` (on the schedule of its ``train.epochs``) until ``until`` epochs are
    finished, resuming its checkpoint; a run paused below ``train.epochs`` is continued later by
    a call with a larger ``until``. Returns the finished run's result, or None when paused."""
    if until >= config.train.epochs:
        return train_run(config, resume=True, splits=splits, evaluate_test=evaluate_test)
    if _finished_epochs(Path(config.run_dir)) >= until:
        return None

    def pause(record: Any) -> None:
        if record.epoch + 1 >= until:
            raise _Pause

    with contextlib.suppress(_Pause):
        train_run(config, resume=True, splits=splits, evaluate_test=False, callbacks=[pause])
    return None


def _run_probe(state: DesignRun) -> None:
    """Stage 1: the probe (the reference design's run paused at ``probe_epochs``), its outputs
    and the noise model (each resumed if already there)."""
    config = _probe_config(state)
    started = time.process_time()
    _train_until(config, state.splits, state.probe_epochs)
    # The probe's loss (logit adjustment at the observed counts) scores the small-loss detector.
    state.probe = run_probe_outputs(config, state.splits, device=resolve_device(config.device))
    state.noise_model = state.probe_noise_model = _noise_model(state)
    state.cost["probe_sample_epochs"] = float(len(state.splits.train) * state.probe_epochs)
    state.cost["probe_cpu_seconds"] = time.process_time() - started


def _probe_config(state: DesignRun) -> ExperimentConfig:
    return design_run_config(
        state.config, PROBE_DESIGN, epochs=state.config.train.epochs,
        run_dir=state.run_dir / "probe",
    )  # fmt: skip


def _noise_model(state: DesignRun) -> NoiseModel:
    probe, splits = state.probe, state.splits
    assert probe is not None
    model = estimate_noise_model(
        observed_labels=splits.train.labels,
        num_classes=splits.num_classes,
        method=state.config.design.noise_estimator,
        meta_logits=probe.meta_logits,
        meta_labels=splits.meta.labels,
        pool_logits=probe.logits,
        probe_tau=PROBE_DESIGN.tau,  # the probe is logit-adjusted at the observed counts
        class_names=splits.class_names,
        # Shrunk towards no noise as far as its bootstrap spread asks; rejected (T̂ = I, n̂ the
        # observed counts) when it moves the prior less than its own sampling noise.
        check=True,
        seed=state.config.seed,
    )
    model.save(state.run_dir / NOISE_MODEL_NAME)
    return model


def _take_second_look(state: DesignRun, done: list[Any]) -> bool:
    """Estimate the noise model again from a model trained on cleaner data (once per run), and
    use the average of the two estimates from then on.

    The probe learns the noisy labels it is trained on, and where classes overlap its confusion
    on 10 meta images per class is a poor correction. The candidate is the finished trial with
    the best first-rung score among the designs that never fitted on the meta set (its
    confusion there is unbiased) and do not read the noise model themselves; its logits on the
    pool and the meta set give the confusion estimate, checked by the same bootstrap as the
    probe's (``noise_model_second_look.json``). Neither estimate is reliably the better one
    (measured on Fashion-MNIST, ρ = 100, total variation of the prior from the truth, probe /
    second look / observed counts: pair-flip 0.169 / 0.079 / 0.160 and 0.109 / 0.173 / 0.160,
    head-to-tail 0.068 / 0.174 / 0.268), and a better meta score of the trial's model did not
    tell which; so the design uses their average (:func:`average_noise_models`,
    ``noise_model_average.json``), whose error is at most the mean of theirs. Transition
    designs trained from now on read it; all three are reported. Written once (a resumed run
    reads the files back, so the trials' later continuation cannot change them).

    Returns:
        True when the noise model in use changed now, False when it did not (already looked,
        the ``glc`` estimator, or no candidate in ``done`` and no file to read back).
    """
    if state.second_look is not None or state.config.design.noise_estimator != "confusion":
        return False
    path = state.run_dir / SECOND_LOOK_NAME
    if path.is_file():
        model = NoiseModel.load(path)
    else:
        candidates = [
            t for t in done
            if not Design.from_dict(t.user_attrs["design"]).fits_meta
            and not treatment(t.user_attrs["design"]["treatment"]).needs_noise_model
        ]  # fmt: skip
        if not candidates:
            return False
        trial = min(candidates, key=lambda t: (t.value, t.number))
        design = Design.from_dict(trial.user_attrs["design"])
        fit = _fits(state, design, trial_dir(state.run_dir, trial.number))[0]
        assert state.probe is not None and state.probe.meta_logits is not None
        meta = state.splits.meta
        probe_score = _balanced(
            state,
            per_image_score(
                state.probe.meta_logits, meta.labels, state.splits.num_classes,
                state.config.design.score,
            ),
        )  # fmt: skip
        source = {
            "trial": int(trial.number),
            "name": design.describe(),
            "meta_score": float(trial.value),
            "probe_meta_score": probe_score,
        }
        model = estimate_noise_model(
            observed_labels=state.splits.train.labels,
            num_classes=state.splits.num_classes,
            method="confusion",
            meta_logits=_fit_logits(state, fit, meta.images),
            meta_labels=meta.labels,
            pool_logits=_fit_logits(state, fit, state.splits.train.images),
            probe_tau=loss_family(design.loss).prior_tau(design),
            class_names=state.splits.class_names,
            info={"second_look": source},
            check=True,
            seed=state.config.seed,
        )
        model.save(path)
    assert state.probe_noise_model is not None
    average = state.run_dir / AVERAGE_NAME
    if not average.is_file():
        average_noise_models(
            [state.probe_noise_model, model], info={"average_of": [NOISE_MODEL_NAME, path.name]}
        ).save(average)
    state.second_look = model
    state.noise_model = NoiseModel.load(average)
    return True


def noise_model_report(state: DesignRun) -> dict[str, Any]:
    """The noise model in use as JSON values (``estimate``: the probe's, or the average of the
    probe's and the second look's), the probe's (``probe``) and the second look's
    (``second_look``: its source and estimate, None if not taken), with their estimation errors
    in a simulated shift (``error``, ``probe_error``, ``second_look_error``)."""
    assert state.noise_model is not None and state.probe_noise_model is not None
    second = state.second_look
    report: dict[str, Any] = {
        "estimate": state.noise_model.to_dict(),
        "source": "probe" if second is None else "average",
        "probe": state.probe_noise_model.to_dict(),
        "second_look": None
        if second is None
        else {**second.info["second_look"], "estimate": second.to_dict()},
    }
    if state.config.shift.noise != "none":
        pool = state.splits.train
        k = state.splits.num_classes
        truth = true_transition(pool.clean_labels, pool.labels, k)
        counts = np.bincount(pool.clean_labels, minlength=k)
        given = {"true_transition": truth.tolist(), "true_diagonal": np.diag(truth).tolist()}
        for key, model in (
            ("error", state.noise_model),
            ("probe_error", state.probe_noise_model),
            ("second_look_error", second),
        ):
            report[key] = (
                None if model is None else {**noise_model_errors(model, truth, counts), **given}
            )
    return report


def _design_splits(state: DesignRun, design: Design) -> tuple[Splits, Path | None]:
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
class _Fit:
    """One training run of a design: its config (and folder), the splits it trains on, and which
    meta images (bool (M,)) it may be scored on: all, or under cross-fitting the half it was not
    fitted on."""

    config: ExperimentConfig
    splits: Splits
    scored: np.ndarray

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)


def _fits(state: DesignRun, design: Design, directory: Path) -> list[_Fit]:
    """The runs of ``design`` in ``directory``, each on the schedule of ``train.epochs``: one,
    which under cross-fitting (``design.cross_fit``, a design that fits on the meta set) is
    fitted on one stratified half of the meta set and scored on the other; with
    ``design.cross_fit_swap`` a second run swaps the halves."""
    splits, relabel_file = _design_splits(state, design)
    meta = state.splits.meta

    def fit(run_dir: Path, fit_splits: Splits, scored: np.ndarray) -> _Fit:
        config = design_run_config(
            state.config,
            design,
            epochs=state.config.train.epochs,
            run_dir=run_dir,
            noise_model_file=state.noise_model_file,
            relabel_file=relabel_file,
        )
        return _Fit(config, fit_splits, scored)

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


def _scores(state: DesignRun, fits: list[_Fit]) -> np.ndarray:
    """Per-image score float64 (M,) of the fits' selected models on the clean meta set
    (``design.score``; lower is better): each image by the fit that may score it, NaN where
    none may."""
    meta = state.splits.meta
    scores = np.full(len(meta), np.nan)
    for fit in fits:
        logits = _fit_logits(state, fit, meta.images)
        scores[fit.scored] = per_image_score(
            logits[fit.scored], meta.labels[fit.scored], state.splits.num_classes,
            state.config.design.score,
        )  # fmt: skip
    return scores


def _fit_logits(state: DesignRun, fit: _Fit, images: np.ndarray) -> np.ndarray:
    """Raw logits float (N, K) of a fit's selected model on uint8 ``images`` (N, H, W, C)."""
    device = resolve_device(state.config.device)
    model, normalize, _ = load_best_model(fit.config, fit.splits, device=device)
    return predict(model, images_to_tensor(images, device), normalize).numpy()


def _balanced(state: DesignRun, scores: np.ndarray) -> float:
    return scored_balanced_mean(scores, state.splits.meta.labels, state.splits.num_classes)


def _sample_epochs(design: Design, fits: list[_Fit], epochs: int) -> float:
    """Nominal cost of ``epochs`` epochs of every fit (sample-epochs x the design's factor)."""
    return sum(len(f.splits.train) * epochs * design.cost_factor for f in fits)


def _design_config(
    state: DesignRun, design: Design, *, epochs: int, run_dir: Path
) -> tuple[ExperimentConfig, Splits]:
    """The config that trains ``design`` for ``epochs`` in ``run_dir``, and its splits."""
    splits, relabel_file = _design_splits(state, design)
    config = design_run_config(
        state.config,
        design,
        epochs=epochs,
        run_dir=run_dir,
        noise_model_file=state.noise_model_file,
        relabel_file=relabel_file,
    )
    return config, splits


def _train_design(
    state: DesignRun, design: Design, *, epochs: int, run_dir: Path, evaluate_test: bool
) -> tuple[RunResult, ExperimentConfig, Splits, float]:
    """Train ``design`` from scratch for ``epochs`` (resumed when its directory holds a
    checkpoint); (result, config, splits, sample-epochs)."""
    config, splits = _design_config(state, design, epochs=epochs, run_dir=run_dir)
    result = train_run(config, resume=True, splits=splits, evaluate_test=evaluate_test)
    return result, config, splits, float(len(splits.train) * epochs * design.cost_factor)


def _start_from_probe(state: DesignRun, design: Design, fits: list[_Fit]) -> int:
    """Epochs a trial of ``design`` gets from the probe: the reference design's trial continues
    the probe's run (a copy of its checkpoint, so that the probe itself stays as it was)."""
    if design != PROBE_DESIGN or state.probe_epochs > state.trial_epochs:
        return 0
    _copy_once(state.run_dir / "probe" / CHECKPOINT_NAME, fits[0].run_dir / CHECKPOINT_NAME)
    return state.probe_epochs


def _rung_costs(state: DesignRun, design: Design) -> tuple[float, float]:
    """(sample-epochs of a trial of ``design`` at the first rung, of its continuation to
    ``train.epochs``); the continuation is its first fit's alone."""
    fits = _fits(state, design, state.run_dir / "trials" / "cost-estimate")  # nothing is trained
    start = state.probe_epochs if design == PROBE_DESIGN else 0
    first = _sample_epochs(design, fits, max(state.trial_epochs - start, 0))
    rest = _sample_epochs(design, fits[:1], state.config.train.epochs - state.trial_epochs)
    return first, rest


def _objective(state: DesignRun, space: DesignSpace) -> Callable[[Any], float]:
    def objective(trial: Any) -> float:
        design = space.suggest(trial)
        trial.set_user_attr("design", design.to_dict())
        trial.set_user_attr("name", design.describe())
        started = time.process_time()
        directory = trial_dir(state.run_dir, trial.number)
        # A retry of a trial whose worker died takes over its folder and resumes its runs there.
        take_over_trial_dir(trial, directory, lambda number: trial_dir(state.run_dir, number))
        fits = _fits(state, design, directory)
        start = _start_from_probe(state, design, fits)
        for fit in fits:
            _train_until(fit.config, fit.splits, state.trial_epochs)
        losses = _scores(state, fits)
        # JSON has no NaN: an image the design may not be scored on is stored as None.
        trial.set_user_attr("meta_losses", [None if np.isnan(v) else float(v) for v in losses])
        trial.set_user_attr(
            "sample_epochs", _sample_epochs(design, fits, state.trial_epochs - start)
        )
        trial.set_user_attr(
            "continuation_sample_epochs",
            _sample_epochs(design, fits[:1], state.config.train.epochs - state.trial_epochs),
        )
        trial.set_user_attr("cpu_seconds", time.process_time() - started)
        return _balanced(state, losses)

    return objective


def _meta_losses(trial: Any) -> np.ndarray:
    return np.array(
        [np.nan if v is None else v for v in trial.user_attrs["meta_losses"]], dtype=np.float64
    )


def _finished_trials(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def _finalists(state: DesignRun, done: list[Any]) -> list[Any]:
    """The trials that continue to ``train.epochs``: the ``design.finalists`` best by their
    first-rung score (the reference design among them with ``design.reference_final``)."""
    ranked = sorted(done, key=lambda t: (t.value, t.number))
    count = state.config.design.finalists
    if state.config.design.reference_final:
        reference = [t for t in ranked if Design.from_dict(t.user_attrs["design"]) == PROBE_DESIGN]
        others = [t for t in ranked if t not in reference]
        return reference[:1] + others[: count - len(reference[:1])]
    return ranked[:count]


def _reserve(state: DesignRun, done: list[Any], continuation: float | None) -> float:
    """Sample-epochs to keep free for the finalists' continuation, if the next trial (whose
    continuation costs ``continuation``; None: no next trial) may become one of the finalists.
    The refit is not reserved: it runs when what is left pays for it (``design.refit``)."""
    costs = [t.user_attrs["continuation_sample_epochs"] for t in _finalists(state, done)]
    reserve = float(sum(costs))
    if continuation is None:
        return reserve
    if len(costs) < state.config.design.finalists:
        return reserve + continuation
    replaceable = costs[1:] if state.config.design.reference_final else costs
    if not replaceable:
        return reserve
    return reserve + max(0.0, continuation - min(replaceable))


def _refit_reserve(state: DesignRun, done: list[Any]) -> float:
    """Sample-epochs a TPE proposal or a reference design after the leading ones
    (:data:`~autorobust.design.space.LEADING_REFERENCE_DESIGNS`) leaves free for the refit
    (``design.refit``): the refit of the design that leads the study (the best first-rung score
    so far)."""
    if not state.config.design.refit or not done:
        return 0.0
    leader = min(done, key=lambda t: (t.value, t.number))
    return _refit_cost(state, Design.from_dict(leader.user_attrs["design"]), state.trial_epochs)


def _costliest_factors(settings: DesignConfig) -> tuple[float, float]:
    """Cost factors (per sample-epoch, over plain training) of the costliest design the space
    holds: (at the first rung, where a cross-fitted design trains twice with
    ``design.cross_fit_swap``; in its continuation).
    An upper bound for a design not yet proposed (a selection is counted on the whole pool)."""
    candidates = [
        Design(treatment=treatment, loss=loss, pseudo_label=pseudo)
        for treatment in settings.treatments
        for loss in settings.losses
        for pseudo in (settings.pseudo_label if treatment == "selection" else [False])
        # MW-Net trains with its own method, and pseudo-labels with theirs: not with AutoBalance.
        if loss != "autobalance" or (treatment != "mwnet" and not pseudo)
    ]
    cross_fit = 2.0 if settings.cross_fit and settings.cross_fit_swap else 1.0
    first = max(d.cost_factor * (cross_fit if d.fits_meta else 1.0) for d in candidates)
    return max(first, 1.0), max(max(d.cost_factor for d in candidates), 1.0)


def _noise_model_rejected(state: DesignRun) -> bool:
    """Whether every estimate the noise model in use rests on was rejected by its check (then
    it is "no noise": T̂ = I and the observed counts)."""
    models = [state.probe_noise_model, state.second_look]
    checks = [m.check for m in models if m is not None]
    return bool(checks) and all(c is not None and c.status == "rejected" for c in checks)


def _run_study(state: DesignRun, default_study_name: str) -> Any:
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
    _take_second_look(state, [])
    # A TPE proposal may be the costliest design the space holds.
    first_rung, continuation_factor = _costliest_factors(settings_cfg)
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
        done = _finished_trials(study)
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
                if treatment(design.treatment).needs_noise_model and _noise_model_rejected(state):
                    continue  # with T̂ = I and the observed counts it is the probe's recipe again
                cost = _rung_costs(state, design)
                reserve = _reserve(state, done, cost[1])
                if design not in LEADING_REFERENCE_DESIGNS:
                    reserve += _refit_reserve(state, done)
                if finished == 0 or spent + cost[0] + reserve <= budget:
                    return design
                # else this reference does not fit: the next one may
            return None

        first = next_reference()
        # Past the leading references the noise model is looked at again (once), before any
        # design that may read it is trained.
        if (
            not retries
            and first not in LEADING_REFERENCE_DESIGNS
            and _take_second_look(state, done)
        ):
            first = next_reference()
        proposal = spent + worst[0] + _reserve(state, done, worst[1]) + _refit_reserve(state, done)
        if not retries and first is None and (finished == 0 or proposal > budget):
            return None
        return NextTrial(None if first is None else space.params(first))

    # The one search driver: trials one at a time, while next_trial says the budget allows one.
    study = run_trials(
        _objective(state, space),
        dataclasses.replace(settings, n_trials=settings_cfg.max_trials),
        state.run_dir,
        next_trial=next_trial,
    )
    state.cost["trials_sample_epochs"] = sum(
        t.user_attrs.get("sample_epochs", 0.0) for t in _finished_trials(study)
    )
    # A study that ended within the leading references looks again before its finalists
    # continue (their checkpoints are still the first rung's).
    _take_second_look(state, _finished_trials(study))
    return study


def _choose(state: DesignRun, study: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Stage 4 at the first rung: the best design and the simplest one within one standard
    error of it (the choice when there is no continuation), and the table of every trial."""
    done = _finished_trials(study)
    if not done:
        raise AutorobustError(
            f"design study {study.study_name!r} has no completed trial; see the warnings above"
        )
    designs = {t.number: Design.from_dict(t.user_attrs["design"]) for t in done}
    scored = [
        ScoredDesign(key=t.number, complexity=designs[t.number].complexity, losses=_meta_losses(t))
        for t in done
    ]
    best, chosen, rows = choose_within_one_standard_error(
        scored, state.splits.meta.labels, state.splits.num_classes
    )
    if not state.config.design.one_standard_error:
        chosen = best
    by_number = {t.number: t for t in done}
    finalists = {t.number for t in _finalists(state, done)}
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
                "scored_images": int(np.isfinite(_meta_losses(trial)).sum()),
                "best": row["key"] == best,
                "finalist": row["key"] in finalists,
                "chosen": row["key"] == chosen,
            }
        )
    chosen_row = next(r for r in table if r["chosen"])
    return chosen_row, table


def _promote(
    state: DesignRun, study: Any, table: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[_Fit], dict[str, Any]]:
    """Stage 5: continue the finalists to ``train.epochs`` (a cross-fitted one: its first half's
    run, scored on the other half) and keep the simplest within one standard error of the best
    there, or their ensemble (``design.ensemble``) where it is better by more than one standard
    error. Returns (the kept
    trial's table row, its run or the ensemble's member runs, the comparison's summary); the
    table's ``chosen`` flags are set to the kept trial."""
    started = time.process_time()
    finalists = _finalists(state, _finished_trials(study))
    epochs = state.config.train.epochs
    runs: dict[int, tuple[Design, _Fit]] = {}
    scored, cost = [], 0.0
    for trial in finalists:
        design = Design.from_dict(trial.user_attrs["design"])
        fit = _fits(state, design, trial_dir(state.run_dir, trial.number))[0]
        _keep_rung_checkpoint(state, fit)
        _train_until(fit.config, fit.splits, epochs)
        cost += _sample_epochs(design, [fit], epochs - state.trial_epochs)
        runs[trial.number] = (design, fit)
        scored.append(ScoredDesign(trial.number, design.complexity, _scores(state, [fit])))
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
        if _ensemble(state, ordered, kept_scores, summary):
            return chosen_row, [fit for _, fit in ordered], summary
    return chosen_row, [runs[kept][1]], summary


def _keep_rung_checkpoint(state: DesignRun, fit: _Fit) -> None:
    """Copy a finalist's checkpoint at the first rung to ``RUNG_CHECKPOINT`` beside it (once,
    atomically) before it continues, for the refit to start from."""
    target = fit.run_dir / RUNG_CHECKPOINT
    if not target.is_file() and _finished_epochs(fit.run_dir) == state.trial_epochs:
        _copy_once(fit.run_dir / CHECKPOINT_NAME, target)


def _ensemble_probabilities(state: DesignRun, fits: list[_Fit], images: np.ndarray) -> np.ndarray:
    """Mean over ``fits`` of their calibrated probabilities softmax(z / T), float64 (N, K), on
    uint8 ``images``; T is each run's temperature (``metrics.json``, fitted on its meta split)."""
    probabilities = []
    for fit in fits:
        metrics = json.loads((fit.run_dir / "metrics.json").read_text(encoding="utf-8"))
        temperature = metrics["calibration"]["temperature"]
        probabilities.append(softmax(_fit_logits(state, fit, images), float(temperature)))
    return np.mean(probabilities, axis=0)


def _ensemble(
    state: DesignRun,
    finalists: list[tuple[Design, _Fit]],
    kept_scores: np.ndarray,
    final: dict[str, Any],
) -> bool:
    """Stage 5b: the finalists' ensemble (the mean of their calibrated probabilities) is scored on
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
    log_mean = np.log(np.clip(_ensemble_probabilities(state, fits, meta.images[scored]), 1e-12, 1))
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


def _ensemble_run(state: DesignRun, fits: list[_Fit]) -> RunResult:
    """The ensemble as ``run_dir/best``: each member's run copied to ``best/members/<i>`` and
    measured on the test split there, ``best/ensemble.json`` naming them (what
    :func:`autorobust.load_model` reads), and the ensemble's own ``best/metrics.json``."""
    best = state.run_dir / "best"
    members = []
    for index, fit in enumerate(fits):
        result, moved = _final_run(state, fit, best / "members" / str(index))
        members.append((result, moved))
    splits = state.splits
    probabilities = _ensemble_probabilities(state, [m for _, m in members], splits.test.images)
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


def _final_run(state: DesignRun, fit: _Fit, best: Path | None = None) -> tuple[RunResult, _Fit]:
    """The kept finalist as ``best`` (default ``run_dir/best``): its checkpoint copied there and
    measured on the test split (the run is finished: nothing more is trained). Returns (its
    result, the run at its new place)."""
    best = state.run_dir / "best" if best is None else best
    _copy_once(fit.run_dir / CHECKPOINT_NAME, best / CHECKPOINT_NAME)
    moved = dataclasses.replace(fit, config=fit.config.model_copy(update={"run_dir": str(best)}))
    result = train_run(moved.config, resume=True, splits=fit.splits, evaluate_test=True)
    return result, moved


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


def _refit_cost(state: DesignRun, design: Design, start: int) -> float:
    """Sample-epochs of :func:`_refit` of ``design`` from epoch ``start``: its pool (its
    selection's, if any) plus the meta images, for the rest of ``train.epochs``, at its cost
    factor."""
    splits, _ = _design_splits(state, design)
    size = len(splits.train) + len(state.splits.meta)
    return float(size * (state.config.train.epochs - start) * design.cost_factor)


def _refit_if_affordable(
    state: DesignRun, design: Design, best: RunResult, rung: Path | None
) -> tuple[dict[str, Any], RunResult | None]:
    """Stage 6 when the budget left after the study and the finalists pays for it: the refit
    of ``design`` (whose ``best/`` run is ``best``) from its first-rung checkpoint ``rung``.
    Returns the report's ``refit`` entry (``best_test``; ``refit_test``, None when skipped, and
    then the ``reason``; ``start_epoch``; ``budget_left`` and ``cost`` in trainings) and the
    refit's result (None when skipped). A refit already started (its checkpoint written) is
    finished whatever the budget says now."""
    left = state.config.design.budget * state.reference_cost - _spent(state)
    # From the kept finalist's first rung when its checkpoint there was kept, else from scratch.
    rung = rung if rung is not None and rung.is_file() else None
    start = state.trial_epochs if rung is not None else 0
    cost = _refit_cost(state, design, start)
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
    result = _refit(state, design, rung)
    state.cost["refit_sample_epochs"] = cost
    state.cost["refit_cpu_seconds"] = time.process_time() - started
    entry["refit_test"] = result.metrics["test"]
    return entry, result


def _refit(state: DesignRun, design: Design, rung: Path | None) -> RunResult:
    """Stage 6 (``design.refit``): ``design`` trained on its pool plus the meta images to
    ``train.epochs`` in ``run_dir/refit``, continuing its first-rung checkpoint ``rung`` (the
    same config, so the same schedule; the meta images join from there) or from scratch. The
    refit records no training dynamics (nothing reads them)."""
    config, splits = _design_config(
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


def _drop_trial_checkpoints(state: DesignRun, study: Any) -> None:
    """Once ``best`` holds the kept run, the trials' checkpoints are needed by nothing."""
    for trial in study.get_trials(deepcopy=False):
        directory = trial_dir(state.run_dir, trial.number)
        for name in (CHECKPOINT_NAME, RUNG_CHECKPOINT):
            for path in [directory / name, *directory.glob(f"*/{name}")]:
                path.unlink(missing_ok=True)


def _contributions(
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


def _retrained_scores(state: DesignRun, design: Design, run_dir: Path) -> np.ndarray:
    """Per-image meta scores (M,) of ``design`` trained for ``train.epochs`` in ``run_dir``."""
    config, splits = _design_config(
        state, design, epochs=state.config.train.epochs, run_dir=run_dir
    )
    return _scores(state, [_Fit(config, splits, np.ones(len(splits.meta), dtype=bool))])


def _leave_one_out(state: DesignRun, chosen: Design) -> list[dict[str, Any]]:
    """Retrain the chosen design without each of its components (``train.epochs`` each, in
    ``leave_one_out/<component>``); their meta score and test metrics."""
    rows = []
    for component in chosen.components:
        design = chosen.without(component)
        directory = state.run_dir / "leave_one_out" / component
        result, _, _, cost = _train_design(
            state, design, epochs=state.config.train.epochs, run_dir=directory, evaluate_test=True
        )
        losses = _retrained_scores(state, design, directory)
        state.cost["leave_one_out_sample_epochs"] = (
            state.cost.get("leave_one_out_sample_epochs", 0.0) + cost
        )
        rows.append(
            {
                "component": component,
                "without": design.describe(),
                "design": design.to_dict(),
                "meta_score": _balanced(state, losses),
                "test": result.metrics["test"],
            }
        )
    return rows


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
    probe_epochs, trial_epochs = _epochs(config)
    state = DesignRun(config, splits, run_dir, probe_epochs, trial_epochs)
    _run_probe(state)
    final: dict[str, Any] | None = None
    refit: dict[str, Any] | None = None
    kept_fits: list[_Fit] = []
    rung: Path | None = None
    if fixed is None:
        study = _run_study(state, default_study_name)
        chosen, table = _choose(state, study)
        if retrain:
            chosen, kept_fits, final = _promote(state, study, table)
        finish_study(study, run_dir, design_table=table)
    else:
        chosen = {"trial": None, "design": fixed.to_dict(), "name": fixed.describe()}
        table = [chosen]
    design = Design.from_dict(chosen["design"])
    noise = noise_model_report(state)  # final once the study (and its second look) is done
    contributions = _contributions(state, design, table) if fixed is None else []
    retrained = None
    if retrain:
        started = time.process_time()
        if len(kept_fits) > 1:
            retrained = _ensemble_run(state, kept_fits)
        elif kept_fits:
            rung = kept_fits[0].run_dir / RUNG_CHECKPOINT
            retrained, kept_fits[0] = _final_run(state, kept_fits[0])
        else:  # a fixed recipe: trained from scratch with train.epochs
            retrained, _, _, cost = _train_design(
                state, design, epochs=config.train.epochs, run_dir=run_dir / "best",
                evaluate_test=True,
            )  # fmt: skip
            state.cost["retrain_sample_epochs"] = cost
        state.cost["retrain_cpu_seconds"] = time.process_time() - started
        if config.design.refit and len(kept_fits) == 1:
            refit, refitted = _refit_if_affordable(state, design, retrained, rung)
            retrained = refitted or retrained
        if kept_fits:  # the study's kept run is in best/ (and refit/): the trials' are spent
            _drop_trial_checkpoints(state, study)
        metrics = dict(retrained.metrics)
        metrics["noise_model"] = noise
        write_json(retrained.run_dir / "metrics.json", metrics)
        retrained = RunResult(run_dir=retrained.run_dir, metrics=metrics)
    spent = _spent(state)
    leave_one_out = []
    if config.design.leave_one_out and retrained is not None:
        leave_one_out = _leave_one_out(state, design)
        kept_score = _balanced(
            state,
            _scores(state, kept_fits[:1])
            if kept_fits
            else _retrained_scores(state, design, retrained.run_dir),
        )
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
