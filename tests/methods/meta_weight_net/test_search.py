from __future__ import annotations

import json

import optuna
import pytest

from autorobust.config import load_config
from autorobust.errors import ConfigError, UnknownNameError
from autorobust.experiment import build_splits
from autorobust.methods.meta_weight_net.config import ReweightConfig, ReweightSearchConfig
from autorobust.methods.meta_weight_net.search import (
    MetaWeightNetSpace,
    params_from_reweight,
    point_from_params,
    run_search,
)


def _config(tmp_path, n_trials: int, *overrides: str):
    return load_config(
        "demo",
        [
            f"run_dir={tmp_path}",
            "device=cpu",
            "train.progress=false",
            "train.epochs=2",
            "search.trial_epochs=1",
            f"search.n_trials={n_trials}",
            "search.n_startup_trials=2",
            "model.options.width=4",
            "train.batch_size=256",
            "reweight.meta_scope=head",
            "reweight.search.max_hidden_layers=2",
            "reweight.search.width_range=[4,16]",
            "reweight.hidden=[8]",
            "reweight.input=loss",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def splits():
    return build_splits(load_config("demo"))


def test_space_covers_depth_widths_inputs_and_round_trips():
    settings = ReweightSearchConfig()
    space = MetaWeightNetSpace(layers=["block1", "block3"], settings=settings)
    assert space.input_choices == [
        "loss",
        "features@block1",
        "features@block3",
        "loss+features@block1",
        "loss+features@block3",
    ]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_depths, seen_inputs = set(), set()
    for _ in range(40):
        trial = study.ask()
        point = space.suggest(trial)
        study.tell(trial, 0.0)
        assert len(point["hidden"]) == trial.params["hidden_layers"]
        assert all(8 <= w <= 256 for w in point["hidden"])
        assert 1e-4 <= point["lr"] <= 1e-2
        assert point_from_params(trial.params, settings) == point
        assert (point["feature_layer"] is None) == (point["input"] == "loss")
        assert point["class_embedding"] in (0, settings.class_embedding)
        seen_depths.add(len(point["hidden"]))
        seen_inputs.add(trial.params["input"])
    assert seen_depths == {0, 1, 2, 3, 4}
    assert len(seen_inputs) == 5


def test_configured_v_maps_to_params_inside_the_space_only():
    settings = ReweightSearchConfig()
    original = ReweightConfig(hidden=[100], input="loss", class_embedding=0, lr=0.001)
    params = params_from_reweight(original, settings, ["block1"])
    assert params == {
        "hidden_layers": 1,
        "width_0": 100,
        "input": "loss",
        "class_aware": False,
        "mwn_lr": 0.001,
    }
    point = point_from_params(params, settings)
    assert point == {
        "hidden": [100],
        "input": "loss",
        "feature_layer": None,
        "class_embedding": 0,
        "lr": 0.001,
    }
    features = original.model_copy(update={"input": "features", "feature_layer": "block1"})
    assert params_from_reweight(features, settings, ["block1"])["input"] == "features@block1"
    for outside in (
        original.model_copy(update={"hidden": [300]}),  # wider than width_range
        original.model_copy(update={"hidden": [8] * 5}),  # deeper than max_hidden_layers
        original.model_copy(update={"lr": 0.5}),
        features.model_copy(update={"feature_layer": "block9"}),
    ):
        assert params_from_reweight(outside, settings, ["block1"]) is None


class _CtrlCSpace(MetaWeightNetSpace):
    """Raises KeyboardInterrupt inside trial ``at``, as Ctrl-C during a search would."""

    def __init__(self, at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.at = at

    def suggest(self, trial):
        if trial.number == self.at:
            raise KeyboardInterrupt
        return super().suggest(trial)


def test_search_resumes_after_interruption_and_writes_outputs(tmp_path, splits):
    config = _config(tmp_path, 3)
    layers = ["block1", "block2", "block3", "block4"]  # the same space as the resumed runs
    space = _CtrlCSpace(1, layers=layers, settings=config.reweight.search)
    with pytest.raises(KeyboardInterrupt):
        run_search(config, retrain=False, space=space, splits=splits)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name="reweighter", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    # the configured V (here 1 hidden layer of 8 on the loss) is the first trial
    assert study.trials[0].params["hidden_layers"] == 1 and study.trials[0].params["width_0"] == 8
    assert study.trials[0].params["input"] == "loss"

    first = run_search(_config(tmp_path, 2), retrain=False, splits=splits)
    assert first.retrained is None
    summary = json.loads((tmp_path / "search.json").read_text())
    assert summary["state_counts"]["COMPLETE"] + summary["state_counts"]["PRUNED"] == 2

    # A larger budget continues the same study: one new trial, not three.
    second = run_search(_config(tmp_path, 3), default_study_name="reweighter", splits=splits)
    study = optuna.load_study(study_name="reweighter", storage=storage)
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and states.count("FAIL") == 1
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 3
    best = json.loads((tmp_path / "best_mwnet.json").read_text())
    assert best["trial"] == second.best["number"]
    assert set(best["spec"]) == {
        "hidden",
        "activation",
        "input",
        "feature_layer",
        "class_embedding",
    }
    assert (tmp_path / "search_history.png").stat().st_size > 1000
    metrics = second.retrained.metrics
    assert metrics["run"]["epochs"] == 2  # the full budget, not trial_epochs
    assert "test" in metrics and 0.0 <= metrics["method"]["noise_auc"] <= 1.0
    assert metrics["method"]["spec"] == best["spec"]
    assert (tmp_path / "best" / "weight_distribution.png").is_file()
    # Trials never evaluate the test split.
    trial_metrics = json.loads((tmp_path / "trials" / "trial-0000" / "metrics.json").read_text())
    assert "test" not in trial_metrics
    # Resuming over a changed space is refused with the changed keys (not Optuna's
    # "dynamic value space" error from inside a trial).
    wider = _config(tmp_path, 4, "reweight.search.width_range=[4,32]")
    with pytest.raises(ConfigError, match=r"another space \(changed: width_range\)"):
        run_search(wider, retrain=False, splits=splits)


def test_unknown_candidate_layer_is_named(tmp_path, splits):
    config = _config(tmp_path, 1, "reweight.search.layers=[block9]")
    with pytest.raises(UnknownNameError, match=r"reweight.search.layers: unknown layer 'block9'"):
        run_search(config, retrain=False, splits=splits)
