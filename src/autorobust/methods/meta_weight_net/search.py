"""``autorobust search reweighter``: TPE over the Meta-Weight-Net architecture (paper 002).

The space (``reweight.search`` in the config): the number of V's hidden layers (0–4) and the width
of each (log-uniform integers), what V reads (the loss, the pooled features of one of the
classifier's intermediate layers, or both), optionally a class embedding (CMW-Net-like), and V's
learning rate (log-uniform). Every trial trains with ``search.trial_epochs`` epochs and is scored by
the best balanced accuracy on the clean meta / validation split (the test split is never
evaluated during the search); it reports that score after every epoch so the pruner can stop
hopeless trials. The best V is then retrained with the full ``train.epochs`` budget.

Outputs in ``run_dir``: ``study.db`` (the default storage; rerunning resumes it), ``search.json``,
``best_mwnet.json`` (the best V's spec and learning rate), ``search_history.png``, and ``best/``
(the retrained run: ``metrics.json`` with the test split, ``weight_vs_loss.png``,
``weight_distribution.png``, ``sample_weights.npz``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autorobust._io import write_json
from autorobust.config import ExperimentConfig, validate_config
from autorobust.data.splits import Splits
from autorobust.errors import UnknownNameError
from autorobust.experiment import build_model, build_splits
from autorobust.methods.meta_weight_net.config import ReweightConfig, ReweightSearchConfig
from autorobust.methods.meta_weight_net.network import MetaWeightNetSpec
from autorobust.search.common import SearchOutcome, train_trial, trial_dir
from autorobust.search.driver import drive_search
from autorobust.search.space import SearchSpace

__all__ = [
    "BEST_SPEC_NAME",
    "MetaWeightNetSpace",
    "params_from_reweight",
    "point_from_params",
    "run_search",
]

BEST_SPEC_NAME = "best_mwnet.json"
_SEP = "@"  # "features@block3": a categorical choice naming the input kind and the layer


class MetaWeightNetSpace(SearchSpace[dict[str, Any]]):
    """The search space over V; :meth:`suggest` only calls ``trial.suggest_*``.

    Parameters as Optuna sees them: ``hidden_layers`` (int), ``width_0`` .. ``width_3`` (int,
    log; only those below ``hidden_layers`` exist in a trial), ``input`` (``"loss"`` or
    ``"features@LAYER"`` / ``"loss+features@LAYER"``), ``class_aware`` (bool, only when both values
    are allowed) and ``mwn_lr`` (float, log).

    Args:
        layers: the classifier's candidate intermediate layers.
        settings: the ``reweight.search`` config section.
    """

    def __init__(self, *, layers: Sequence[str], settings: ReweightSearchConfig) -> None:
        self.layers = tuple(layers)
        self.settings = settings

    @property
    def input_choices(self) -> list[str]:
        choices = []
        for kind in self.settings.inputs:
            if kind == "loss":
                choices.append("loss")
            else:
                choices += [f"{kind}{_SEP}{layer}" for layer in self.layers]
        return choices

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` for a point; see :func:`point_from_params` for its keys."""
        s = self.settings
        depth = trial.suggest_int("hidden_layers", s.min_hidden_layers, s.max_hidden_layers)
        for i in range(depth):
            trial.suggest_int(f"width_{i}", *s.width_range, log=True)
        trial.suggest_categorical("input", self.input_choices)
        if len(set(s.class_aware)) > 1:
            trial.suggest_categorical("class_aware", [False, True])
        trial.suggest_float("mwn_lr", *s.lr_range, log=True)
        return point_from_params(trial.params, s)

    def point_from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Invert :meth:`suggest` (see :func:`point_from_params`)."""
        return point_from_params(dict(params), self.settings)

    def describe(self) -> dict[str, Any]:
        """The space as JSON-able data (stored with a study; a resumed study must match)."""
        return {"layers": list(self.layers), **self.settings.model_dump(mode="json")}

    @staticmethod
    def apply(config: ExperimentConfig, point: dict[str, Any], **train: Any) -> ExperimentConfig:
        """``config`` trained by reweighting with the V of ``point`` (and other train fields)."""
        raw = config.to_dict()
        raw["method"] = "reweight"
        raw["reweight"].update(point)
        raw["train"].update(train)
        return validate_config(raw, where="search point")


def point_from_params(params: dict[str, Any], settings: ReweightSearchConfig) -> dict[str, Any]:
    """Optuna's params -> ``reweight`` fields: hidden, input, feature_layer, class_embedding, lr."""
    depth = int(params["hidden_layers"])
    kind, _, layer = str(params["input"]).partition(_SEP)
    class_aware = params.get("class_aware", settings.class_aware[0])
    return {
        "hidden": [int(params[f"width_{i}"]) for i in range(depth)],
        "input": kind,
        "feature_layer": layer or None,
        "class_embedding": settings.class_embedding if class_aware else 0,
        "lr": float(params["mwn_lr"]),
    }


def params_from_reweight(
    reweight: ReweightConfig, settings: ReweightSearchConfig, layers: Sequence[str]
) -> dict[str, Any] | None:
    """The inverse of :func:`point_from_params`: Optuna's params of the V that ``reweight``
    configures, or None when that V lies outside the space (depth, widths, input, layer, lr)."""
    depth = len(reweight.hidden)
    low, high = settings.width_range
    kind = reweight.input
    choice = kind if kind == "loss" else f"{kind}{_SEP}{reweight.feature_layer}"
    class_aware = reweight.class_embedding > 0
    inside = (
        settings.min_hidden_layers <= depth <= settings.max_hidden_layers
        and all(low <= width <= high for width in reweight.hidden)
        and kind in settings.inputs
        and (kind == "loss" or reweight.feature_layer in layers)
        and class_aware in settings.class_aware
        and settings.lr_range[0] <= reweight.lr <= settings.lr_range[1]
    )
    if not inside:
        return None
    params: dict[str, Any] = {"hidden_layers": depth, "input": choice, "mwn_lr": reweight.lr}
    params.update({f"width_{i}": width for i, width in enumerate(reweight.hidden)})
    if len(set(settings.class_aware)) > 1:
        params["class_aware"] = class_aware
    return params


def _candidate_layers(config: ExperimentConfig, splits: Splits) -> list[str]:
    available = list(build_model(config, splits).intermediate_layers)
    wanted = config.reweight.search.layers
    if wanted is None:
        return available
    for layer in wanted:
        if layer not in available:
            raise UnknownNameError(
                f"reweight.search.layers: unknown layer {layer!r} of model "
                f"{config.model.name!r}; valid: {', '.join(available)}"
            )
    return list(wanted)


def run_search(
    config: ExperimentConfig,
    *,
    default_study_name: str = "reweighter",
    retrain: bool = True,
    space: MetaWeightNetSpace | None = None,
    splits: Splits | None = None,
) -> SearchOutcome:
    """Run (or resume) the MW-Net architecture study of ``config`` in ``config.run_dir``.

    Returns:
        The best trial's summary; with ``retrain``, the run of the best V with ``train.epochs``
        epochs in ``run_dir/best`` (its metrics include the test split and the weight analysis).
    """
    import optuna

    run_dir = Path(config.run_dir)
    splits = build_splits(config) if splits is None else splits
    space = space or MetaWeightNetSpace(
        layers=_candidate_layers(config, splits), settings=config.reweight.search
    )
    trial_epochs = config.epochs("trial")

    def objective(trial: optuna.Trial) -> float:
        point = space.suggest(trial)
        trial_config = space.apply(config, point, epochs=trial_epochs, progress=False)
        trial_config = trial_config.model_copy(
            update={
                "run_dir": str(trial_dir(run_dir, trial.number)),
                "reweight": trial_config.reweight.model_copy(update={"plots": False}),
            }
        )
        result = train_trial(trial, trial_config, splits)
        method = result.metrics.get("method", {})
        for key in ("noise_auc", "mean_weight_clean", "mean_weight_noisy", "spec_name"):
            if method.get(key) is not None:
                trial.set_user_attr(key, method[key])
        return max(r["val_balanced_accuracy"] for r in result.metrics["history"])

    # The configured V (by default the original 1-100-1 on the loss) is the first trial, so the
    # search is never judged worse on validation than the design it starts from.
    configured = params_from_reweight(config.reweight, space.settings, space.layers)

    def best_config(best: dict[str, Any]) -> ExperimentConfig:
        point = space.point_from_params(best["params"])
        return space.apply(config, point).model_copy(update={"run_dir": str(run_dir / "best")})

    def on_best(study: Any, best: dict[str, Any]) -> None:
        _history_plot(study, run_dir)
        point = space.point_from_params(best["params"])
        spec = MetaWeightNetSpec.from_config(best_config(best).reweight)
        write_json(
            run_dir / BEST_SPEC_NAME,
            {
                "spec": spec.to_dict(),
                "name": spec.describe(),
                "lr": point["lr"],
                "trial": best["number"],
                "val_balanced_accuracy": best["value"],
            },
        )

    return drive_search(
        config,
        space,
        objective,
        splits=splits,
        default_study_name=default_study_name,
        best_config=best_config if retrain else None,
        describe={"trial_epochs": trial_epochs},
        trial_epochs=trial_epochs,
        first_params=configured,
        on_best=on_best,
    )


def _history_plot(study: Any, run_dir: Path) -> None:
    from optuna.trial import TrialState

    from autorobust.report.plots import search_history_plot

    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if trials:
        search_history_plot(
            [t.number for t in trials],
            [t.value for t in trials],
            run_dir / "search_history.png",
            ylabel="val. balanced accuracy",
            title="Meta-Weight-Net architecture search",
        )
