"""``autorobust search baseline``: TPE over the baseline loss family, its hyper-parameters and lr.

Every trial trains the configured model for ``search.trial_epochs`` epochs and is scored by the
best balanced accuracy on the clean meta / validation split; it reports that score after each epoch
so the pruner can stop hopeless trials. The test split is not evaluated during the search. The best
trial is then retrained with the full ``train.epochs`` budget and measured on the test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autorobust.config import ExperimentConfig, validate_config
from autorobust.data.splits import Splits
from autorobust.experiment import build_splits
from autorobust.losses import LOSSES
from autorobust.search.common import SearchOutcome, train_trial, trial_dir
from autorobust.search.driver import drive_search
from autorobust.search.space import SearchSpace

__all__ = ["BaselineLossSpace", "point_from_params", "run_search"]


class BaselineLossSpace(SearchSpace[dict[str, Any]]):
    """The search space: which baseline loss, its hyper-parameters, and the learning rate.

    Hyper-parameter names are prefixed with the loss name (``focal.gamma``) because the space is
    conditional: TPE models each parameter only on the trials where it exists.

    Args:
        losses: candidate loss names (default: every registered loss).
        lr_range: (low, high) of the log-uniform learning-rate range.
    """

    def __init__(
        self, *, losses: Sequence[str] | None = None, lr_range: tuple[float, float] = (0.005, 0.2)
    ) -> None:
        # "parametric" is AutoBalance's learned family (`search loss`); at its defaults it is CE.
        # "forward_corrected" needs a noise model estimated from the data (methods/glc).
        excluded = ("parametric", "forward_corrected")
        default = tuple(name for name in LOSSES.names() if name not in excluded)
        self.losses = tuple(losses) if losses is not None else default
        for name in self.losses:
            LOSSES.get(name)  # an unknown name fails here, listing the valid ones
        self.lr_range = lr_range

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` for a point; returns ``{"loss": name, "options": {...}, "lr": float}``."""
        name = trial.suggest_categorical("loss", list(self.losses))
        options: dict[str, Any] = {}
        for param, (low, high, scale) in LOSSES.get(name).search_space.items():
            key = f"{name}.{param}"
            if scale == "int":
                options[param] = trial.suggest_int(key, int(low), int(high))
            else:
                options[param] = trial.suggest_float(key, low, high, log=scale == "log")
        lr = trial.suggest_float("lr", *self.lr_range, log=True)
        return {"loss": name, "options": options, "lr": lr}

    def point_from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Invert :meth:`suggest` (see :func:`point_from_params`)."""
        return point_from_params(dict(params))

    def describe(self) -> dict[str, Any]:
        """The space as JSON-able data (stored with a study; a resumed study must match)."""
        spaces = {name: LOSSES.get(name).search_space for name in self.losses}
        return {"losses": list(self.losses), "lr_range": list(self.lr_range), "options": spaces}

    @staticmethod
    def apply(config: ExperimentConfig, point: dict[str, Any], **train: Any) -> ExperimentConfig:
        """``config`` with the loss and learning rate of ``point`` (and other train fields)."""
        raw = config.to_dict()
        raw["loss"] = {"name": point["loss"], "options": point["options"]}
        raw["train"].update(lr=point["lr"], **train)
        return validate_config(raw, where="search point")


def run_search(
    config: ExperimentConfig,
    *,
    default_study_name: str = "baseline",
    retrain: bool = True,
    space: BaselineLossSpace | None = None,
    splits: Splits | None = None,
) -> SearchOutcome:
    """Run (or resume) the baseline-loss study of ``config`` in ``config.run_dir``.

    Returns:
        The best trial's summary; with ``retrain``, the run of the best point with ``train.epochs``
        epochs in ``run_dir/best`` (its metrics include the test split).
    """
    import optuna

    searched = space or BaselineLossSpace()
    run_dir = Path(config.run_dir)
    splits = build_splits(config) if splits is None else splits
    trial_epochs = config.epochs("trial")

    def objective(trial: optuna.Trial) -> float:
        point = searched.suggest(trial)
        trial_config = searched.apply(config, point, epochs=trial_epochs, progress=False)
        trial_config = trial_config.model_copy(
            update={"run_dir": str(trial_dir(run_dir, trial.number))}
        )
        result = train_trial(trial, trial_config, splits)
        return max(r["val_balanced_accuracy"] for r in result.metrics["history"])

    def best_config(best: dict[str, Any]) -> ExperimentConfig:
        point = searched.point_from_params(best["params"])
        return searched.apply(config, point).model_copy(update={"run_dir": str(run_dir / "best")})

    return drive_search(
        config,
        searched,
        objective,
        splits=splits,
        default_study_name=default_study_name,
        best_config=best_config if retrain else None,
        describe={"trial_epochs": trial_epochs},
        trial_epochs=trial_epochs,
    )


def point_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """Invert :meth:`BaselineLossSpace.suggest`: Optuna's flat params -> a search point."""
    name = params["loss"]
    prefix = f"{name}."
    options = {key[len(prefix) :]: value for key, value in params.items() if key.startswith(prefix)}
    return {"loss": name, "options": options, "lr": params["lr"]}
