"""The design space: what a trial can propose, and reference designs enqueued by their params."""

from __future__ import annotations

import optuna
import pytest

from autorobust.design.config import DesignConfig
from autorobust.design.space import REFERENCE_DESIGNS, Design, DesignSpace
from autorobust.errors import ConfigError


@pytest.mark.parametrize("design", REFERENCE_DESIGNS, ids=lambda d: d.describe())
def test_reference_designs_round_trip_through_their_params(design: Design) -> None:
    space = DesignSpace(DesignConfig())
    params = space.params(design)
    assert params is not None
    assert space.suggest(optuna.trial.FixedTrial(params)) == design


def test_every_proposal_composes(tmp_path) -> None:
    space = DesignSpace(DesignConfig())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen, rules = set(), set()
    for _ in range(200):
        trial = study.ask()
        design = space.suggest(trial)
        study.tell(trial, 0.0)
        seen.add((design.treatment, design.loss))
        # MW-Net trains with its own method; forward correction's Hessian is indefinite.
        assert not (design.treatment in ("mwnet", "transition") and design.loss == "autobalance")
        if design.treatment == "selection":
            assert design.detector in ("posterior", "small_loss", "prototype")
            rules.add(design.rule)
            if design.rule == "meta_quantile":
                assert 0.02 <= design.quantile <= 0.3
            else:
                assert design.rule == "gmm" and design.quantile is None
            if design.relabel_needs_prototype:
                assert design.detector == "prototype" and design.relabel
        else:
            assert design.detector is None and design.quantile is None
        assert Design.from_dict(design.to_dict()) == design
    # Every treatment meets every loss family it composes with; both default rules are drawn.
    assert len(seen) == 4 * 3 - 2
    assert rules == {"meta_quantile", "gmm"}


def test_a_design_outside_the_space_has_no_params() -> None:
    space = DesignSpace(DesignConfig(treatments=["none", "selection"]))
    assert space.params(Design(treatment="transition")) is None
    assert space.params(Design(treatment="none", tau=3.0)) is None  # tau outside its range
    every = DesignSpace(DesignConfig())
    assert every.params(Design(treatment="transition", loss="autobalance")) is None
    assert every.params(Design(treatment="transition", loss="logit_adjustment")) == {
        "treatment": "transition",
        "transition_loss": "logit_adjustment",
        "tau": 1.0,
    }


def test_components_and_simplicity() -> None:
    plain = Design(treatment="none", loss="cross_entropy", tau=0.0)
    selected = REFERENCE_DESIGNS[5]
    assert plain.components == []
    assert selected.components == ["selection", "relabel", "logit_adjustment"]
    assert plain.complexity < selected.complexity
    assert Design(loss="autobalance").cost_factor > 1.0


def test_unknown_design_field_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown design field 'colour'"):
        Design.from_dict({"colour": "red"})


def test_config_ranges_are_checked() -> None:
    with pytest.raises(ValueError, match="quantile_range"):
        DesignConfig(quantile_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="budget"):
        DesignConfig(budget=1.0)


def test_a_component_taken_out() -> None:
    design = REFERENCE_DESIGNS[5]  # selection with relabelling + logit adjustment
    assert design.without("relabel").components == ["selection", "logit_adjustment"]
    assert design.without("selection") == Design(loss="logit_adjustment", tau=1.0)
    assert design.without("logit_adjustment").loss == "cross_entropy"
    with pytest.raises(ValueError, match="not a component"):
        design.without("mwnet")
