"""``autorobust search loss``: AutoBalance, a loss learned by bilevel optimisation, then retrained.

One trial = one bilevel run (``method: autobalance``, trained by
:func:`~autorobust.experiment.train_run` like every other method) on the training pool's train
part, the upper level on its validation part (``bilevel.upper_data``). TPE, through the
foundation's runner, may tune the bilevel trainer's own knobs (``bilevel.tune``: upper lr, warm-up,
fairness weight, η scale, upper frequency, and the per-class augmentation strength, which is not
differentiable and so is searched by TPE rather than by the hypergradient); a trial is scored by
the balanced accuracy of its lower-level model on the clean meta / validation split (never the
test split). With an empty ``tune`` every trial runs the configured values, so ``n_trials: 1`` is
a single bilevel run.

Outputs in ``run_dir``: ``search.json`` (the study), ``learned_loss.json`` (the best trial's
per-class Δ, ι, ω, usable as ``loss: {name: parametric, options: {params_file: ...}}``, and the
searched ``augment_class_strength`` or null),
``learned_loss.png`` (parameters against class frequency) and ``best/`` (the retraining from
scratch on the whole pool with the learned loss, ``metrics.json`` with the test split; in group
mode also ``fairness``: equal-opportunity gap and worst-group accuracy).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autorobust._io import write_json
from autorobust.config import ExperimentConfig, validate_config
from autorobust.data.augment import BatchAugment
from autorobust.data.splits import Splits
from autorobust.data.tensors import images_to_tensor, resolve_device
from autorobust.errors import ConfigError, DataError
from autorobust.experiment import RunResult, build_model, build_splits
from autorobust.methods.autobalance.config import BilevelConfig
from autorobust.methods.autobalance.objectives import fairness_metrics
from autorobust.search.common import SearchOutcome, train_trial, trial_dir
from autorobust.search.driver import drive_search
from autorobust.search.space import SearchSpace

__all__ = [
    "LEARNED_NAME",
    "BilevelKnobSpace",
    "augment_class_strength",
    "bilevel_trial_config",
    "run_search",
]

LEARNED_NAME = "learned_loss.json"


class BilevelKnobSpace(SearchSpace[dict[str, Any]]):
    """The TPE space over the bilevel trainer's knobs named in ``bilevel.tune``.

    Only calls ``trial.suggest_*``; :meth:`apply` turns a point into a :class:`BilevelConfig`.
    """

    def __init__(self, bilevel: BilevelConfig) -> None:
        self.bilevel = bilevel

    def suggest(self, trial: Any) -> dict[str, Any]:
        """A point {knob: value} for the knobs in ``bilevel.tune`` (empty if none)."""
        b = self.bilevel
        point: dict[str, Any] = {}
        for knob in b.tune:
            if knob == "upper_lr":
                point[knob] = trial.suggest_float(knob, *b.upper_lr_range, log=True)
            elif knob == "warmup_epochs":
                point[knob] = trial.suggest_int(knob, *b.warmup_range)
            elif knob == "fairness_weight":
                point[knob] = trial.suggest_float(knob, *b.fairness_weight_range)
            elif knob == "eta_scale":
                point[knob] = trial.suggest_float(knob, *b.eta_scale_range)
            elif knob == "upper_every":
                point[knob] = trial.suggest_int(knob, *b.upper_every_range, log=True)
            elif knob == "augment_strength":
                point["augment_head"] = trial.suggest_float(
                    "augment_head", *b.augment_strength_range
                )
                point["augment_tail"] = trial.suggest_float(
                    "augment_tail", *b.augment_strength_range
                )
        return point

    def point_from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Invert :meth:`suggest`: the trial's params are its point."""
        return dict(params)

    def describe(self) -> dict[str, Any]:
        """The space as JSON-able data: ``{"tune": {knob: its range}}`` for the tuned knobs."""
        b = self.bilevel
        ranges = {
            "upper_lr": b.upper_lr_range,
            "warmup_epochs": b.warmup_range,
            "fairness_weight": b.fairness_weight_range,
            "eta_scale": b.eta_scale_range,
            "upper_every": b.upper_every_range,
            "augment_strength": b.augment_strength_range,
        }
        return {"tune": {knob: list(ranges[knob]) for knob in b.tune}}

    def apply(self, point: dict[str, Any]) -> BilevelConfig:
        """``bilevel`` with the point's values (the augmentation strengths excluded)."""
        knobs = {k: v for k, v in point.items() if k not in ("augment_head", "augment_tail")}
        return BilevelConfig.model_validate({**self.bilevel.model_dump(), **knobs})


def augment_class_strength(head: float, tail: float, class_counts: np.ndarray) -> list[float]:
    """Per-class augmentation probability (K,): ``head`` at the most frequent class, ``tail`` at
    the rarest, linear in log class count between them (all ``head`` when counts are equal)."""
    log_counts = np.log(np.maximum(np.asarray(class_counts, dtype=float), 1.0))
    spread = log_counts.max() - log_counts.min()
    t = (log_counts.max() - log_counts) / spread if spread > 0 else np.zeros_like(log_counts)
    return [float(v) for v in head + t * (tail - head)]


def bilevel_trial_config(
    config: ExperimentConfig,
    *,
    bilevel: BilevelConfig | None = None,
    class_strength: list[float] | None = None,
    run_dir: str | Path | None = None,
) -> ExperimentConfig:
    """``config`` as one bilevel run (``method: autobalance``) with the loss search's epoch budget
    (:meth:`~autorobust.config.ExperimentConfig.epochs` ``("bilevel")``), quiet, optionally with
    other ``bilevel`` knobs, per-class augmentation strengths and run directory."""
    epochs = config.epochs("bilevel")
    augment = config.train.augment
    if class_strength is not None:
        augment = augment.model_copy(update={"class_strength": class_strength})
    train = config.train.model_copy(
        update={
            "epochs": epochs,
            "warmup_epochs": min(config.train.warmup_epochs, epochs - 1),
            "progress": False,
            "augment": augment,
        }
    )
    update: dict[str, Any] = {"method": "autobalance", "train": train}
    if bilevel is not None:
        update["bilevel"] = bilevel
    if run_dir is not None:
        update["run_dir"] = str(run_dir)
    return config.model_copy(update=update)


def _learned_loss(result: RunResult, config: ExperimentConfig, splits: Splits) -> dict[str, Any]:
    """What ``learned_loss.json`` holds for one bilevel run (see the module docstring)."""
    method = dict(result.metrics["method"])
    hyper_log = method.pop("hyper_log")
    return {
        "options": method["learned_loss"],
        "augment_class_strength": config.train.augment.class_strength,
        "class_counts": splits.train_class_counts.tolist(),
        "bilevel_train_class_counts": method.pop("bilevel_train_class_counts"),
        "val_balanced_accuracy": result.metrics["validation"]["balanced_accuracy"],
        "method": method,
        "hyper_log": hyper_log,
        "seconds": result.metrics["run"]["wall_time_s"],
    }


def run_search(
    config: ExperimentConfig,
    *,
    default_study_name: str = "loss",
    retrain: bool = True,
    splits: Splits | None = None,
) -> SearchOutcome:
    """Run (or resume) the AutoBalance study of ``config`` in ``config.run_dir``; then retrain.

    Returns:
        The best trial's summary, and with ``retrain`` the run of the learned loss trained from
        scratch on the whole pool for ``train.epochs`` epochs in ``run_dir/best`` (with test
        metrics, and ``fairness`` metrics when the test split has group attributes).
    """
    import optuna

    run_dir = Path(config.run_dir)
    splits = build_splits(config) if splits is None else splits
    space = BilevelKnobSpace(config.bilevel)
    if (
        "augment_strength" in config.bilevel.tune
        and not BatchAugment(**config.train.augment.model_dump()).enabled
    ):
        raise ConfigError(
            "bilevel.tune: augment_strength needs an augmentation switched on in train.augment"
        )

    def objective(trial: optuna.Trial) -> float:
        point = space.suggest(trial)
        strength = None
        if "augment_head" in point:
            strength = augment_class_strength(
                point["augment_head"], point["augment_tail"], splits.train_class_counts
            )
        directory = trial_dir(run_dir, trial.number)
        trial_config = bilevel_trial_config(
            config, bilevel=space.apply(point), class_strength=strength, run_dir=directory
        )
        learned = _learned_loss(train_trial(trial, trial_config, splits), trial_config, splits)
        write_json(directory / LEARNED_NAME, learned)
        trial.set_user_attr("learned_loss", learned["options"])
        return float(learned["val_balanced_accuracy"])

    found: dict[str, Any] = {}  # the best trial's learned loss, read by on_best

    def on_best(study: Any, best: dict[str, Any]) -> None:
        learned = json.loads(
            (trial_dir(run_dir, best["number"]) / LEARNED_NAME).read_text(encoding="utf-8")
        )
        learned["trial"] = best["number"]
        write_json(run_dir / LEARNED_NAME, learned)
        _plot(learned, splits, run_dir / "learned_loss.png")
        found.update(learned)

    def best_config(best: dict[str, Any]) -> ExperimentConfig:
        learned = found
        raw = config.to_dict()
        raw["loss"] = {"name": "parametric", "options": learned["options"]}
        raw["train"]["augment"]["class_strength"] = learned["augment_class_strength"]
        raw["method"] = "erm"
        raw["run_dir"] = str(run_dir / "best")
        return validate_config(raw, where="learned loss")

    outcome = drive_search(
        config,
        space,
        objective,
        splits=splits,
        default_study_name=default_study_name,
        best_config=best_config if retrain else None,
        trial_epochs=config.epochs("bilevel"),
        on_best=on_best,
    )
    if outcome.retrained is not None and splits.test.groups is not None:
        outcome = dataclasses.replace(
            outcome, retrained=_add_fairness(outcome.retrained, splits, config)
        )
    return outcome


def _plot(learned: dict[str, Any], splits: Splits, path: Path) -> None:
    from autorobust.methods.autobalance.report import learned_parameters_plot

    options = learned["options"]
    if np.ndim(options["offset"]) != 1:
        return  # group-sensitive parameters: one curve per attribute is not drawn yet
    learned_parameters_plot(
        splits.train_class_counts, options, path, class_names=list(splits.class_names)
    )


def _add_fairness(retrained: Any, splits: Splits, config: ExperimentConfig) -> Any:
    """Add equal-opportunity gap and worst-group accuracy on the test split to metrics.json."""
    groups = splits.test.groups
    if groups is None:
        raise DataError("fairness metrics need the group attributes of the test split")
    import torch

    from autorobust.data.tensors import Normalization
    from autorobust.train.trainer import load_checkpoint, predict

    device = resolve_device(config.device)
    checkpoint = load_checkpoint(retrained.run_dir / "checkpoint.pt", map_location=device)
    model = build_model(config, splits).to(device)
    model.load_state_dict(checkpoint["best_model"])
    normalize = Normalization.from_images(splits.train.images)
    with torch.no_grad():
        logits = predict(model, images_to_tensor(splits.test.images, device), normalize)
    metrics = dict(retrained.metrics)
    metrics["fairness"] = fairness_metrics(splits.test.labels, logits.argmax(1).numpy(), groups)
    write_json(retrained.run_dir / "metrics.json", metrics)
    return RunResult(run_dir=retrained.run_dir, metrics=metrics)
