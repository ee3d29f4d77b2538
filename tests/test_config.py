from __future__ import annotations

from pathlib import Path

import pytest

from autorobust.config import (
    ExperimentConfig,
    apply_overrides,
    bundled_configs,
    load_config,
    validate_config,
)
from autorobust.errors import ConfigError


def test_bundled_configs_validate():
    names = bundled_configs()
    assert {"demo", "fashion-mnist-lt100-sym40"} <= set(names)
    for name in names:
        assert isinstance(load_config(name), ExperimentConfig)


def test_fashion_mnist_config_is_the_reference_protocol():
    config = load_config("fashion-mnist-lt100-sym40")
    assert (config.shift.imbalance, config.shift.rho) == ("long_tail", 100)
    assert (config.shift.noise, config.shift.noise_rate) == ("symmetric", 0.4)
    assert config.data.source == "fashion-mnist"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"shift": {"rho": 0.5}},
            r"shift\.rho: Input should be greater than or equal to 1 \(got 0\.5\)",
        ),
        ({"train": {"epochs": "many"}}, r"train\.epochs: Input should be a valid integer"),
        ({"trian": {}}, r"trian: unknown key"),
        ({"shift": {"noise_rate": 1.0}}, r"shift\.noise_rate: Input should be less than 1"),
        ({"shift": {"noise": "pair"}}, r"shift: noise 'pair' needs noise_rate > 0"),
        ({"train": {"milestones": [3]}}, r"train: milestones must be fractions in \(0, 1\)"),
        ({"data": {"meta_per_class": 0}}, r"data\.meta_per_class: Input should be greater"),
        ({"model": {"name": "x", "widht": 3}}, r"model\.widht: unknown key"),
    ],
)
def test_invalid_values_are_reported_with_their_path(raw, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(raw, where="my.yaml")
    assert str(info.value).startswith("my.yaml: ")
    assert "\n" not in str(info.value)


def test_overrides_parse_yaml_scalars_and_nest():
    raw = apply_overrides(
        {"train": {"epochs": 3}}, ["train.epochs=5", "shift.noise=none", "train.augment.hflip=true"]
    )
    assert raw == {"train": {"epochs": 5, "augment": {"hflip": True}}, "shift": {"noise": "none"}}


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "train..epochs=3"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE"):
        apply_overrides({}, [bad])


def test_override_through_a_scalar_is_refused():
    with pytest.raises(ConfigError, match=r"train\.epochs is not a mapping"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(
        ConfigError, match=r"nope\.yaml: no such config file \(bundled configs: .*demo"
    ):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(
        ConfigError, match=r"scalar\.yaml: expected a mapping at the top level, got int"
    ):
        load_config(scalar)
