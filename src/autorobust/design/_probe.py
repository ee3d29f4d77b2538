"""Stages 1 and 2: the probe (the reference design's run paused at ``probe_epochs``), the noise
model estimated from it, the second look at the noise model from a model trained on cleaner data,
their average, and the noise-model report."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from autorobust.config import ExperimentConfig
from autorobust.data.tensors import resolve_device
from autorobust.design._fits import balanced_score, design_fits, fit_logits, train_until
from autorobust.design._state import AVERAGE_NAME, NOISE_MODEL_NAME, SECOND_LOOK_NAME, DesignRun
from autorobust.design.loss_families import loss_family
from autorobust.design.run_config import PROBE_DESIGN, design_run_config
from autorobust.design.scoring import per_image_score
from autorobust.design.space import Design
from autorobust.design.treatments import treatment
from autorobust.methods.glc.noise_model import (
    NoiseModel,
    average_noise_models,
    estimate_noise_model,
    noise_model_errors,
    true_transition,
)
from autorobust.methods.sample_selection import run_probe_outputs
from autorobust.search.common import trial_dir


def run_probe(state: DesignRun) -> None:
    """Stage 1: the probe (the reference design's run paused at ``probe_epochs``), its outputs
    and the noise model (each resumed if already there)."""
    config = probe_config(state)
    started = time.process_time()
    train_until(config, state.splits, state.probe_epochs)
    # The probe's loss (logit adjustment at the observed counts) scores the small-loss detector.
    state.probe = run_probe_outputs(config, state.splits, device=resolve_device(config.device))
    state.noise_model = state.probe_noise_model = estimate_probe_noise_model(state)
    state.cost["probe_sample_epochs"] = float(len(state.splits.train) * state.probe_epochs)
    state.cost["probe_cpu_seconds"] = time.process_time() - started


def probe_config(state: DesignRun) -> ExperimentConfig:
    """The probe's config: the reference design on the schedule of ``train.epochs``."""
    return design_run_config(
        state.config, PROBE_DESIGN, epochs=state.config.train.epochs,
        run_dir=state.run_dir / "probe",
    )  # fmt: skip


def estimate_probe_noise_model(state: DesignRun) -> NoiseModel:
    """Stage 2: T̂ and n̂ from the probe's logits, checked by its bootstrap and shrunk towards
    no noise; saved as ``noise_model.json``."""
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


def take_second_look(state: DesignRun, done: list[Any]) -> bool:
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
        fit = design_fits(state, design, trial_dir(state.run_dir, trial.number))[0]
        assert state.probe is not None and state.probe.meta_logits is not None
        meta = state.splits.meta
        probe_score = balanced_score(
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
            meta_logits=fit_logits(state, fit, meta.images),
            meta_labels=meta.labels,
            pool_logits=fit_logits(state, fit, state.splits.train.images),
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


def noise_model_rejected(state: DesignRun) -> bool:
    """Whether every estimate the noise model in use rests on was rejected by its check (then
    it is "no noise": T̂ = I and the observed counts)."""
    models = [state.probe_noise_model, state.second_look]
    checks = [m.check for m in models if m is not None]
    return bool(checks) and all(c is not None and c.status == "rejected" for c in checks)


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
