from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

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


def _float_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every ``float`` and ``float | None`` field of ``model``, nested included."""
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _float_fields(annotation, f"{prefix}{name}.")
            continue
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        members = typing.get_args(annotation) if union else (annotation,)
        if float in members:
            paths.append(f"{prefix}{name}")
    return paths


FLOAT_FIELDS = _float_fields(ExperimentConfig)


def test_the_float_fields_are_found():
    assert {"train.lr", "shift.rho", "search.timeout", "bilevel.upper_lr"} <= set(FLOAT_FIELDS)
    assert len(FLOAT_FIELDS) > 30


@pytest.mark.parametrize("value", ["inf", "-inf", ".inf", "nan", ".nan"])
def test_no_float_field_takes_infinity_or_nan(value: str):
    for path in FLOAT_FIELDS:
        with pytest.raises(ConfigError) as info:
            load_config("demo", [f"{path}={value}"])
        assert str(info.value).startswith(
            f"--set {path}={value}: {path}: Input should be a finite number"
        ), path


@pytest.mark.parametrize("section", ["model", "loss", "data"])
def test_options_take_no_infinity_or_nan(section: str):
    with pytest.raises(
        ConfigError, match=rf"^my\.yaml: {section}\.options: a\.b\[1\] must be a fin"
    ):
        validate_config({section: {"options": {"a": {"b": [1.0, float("nan")]}}}}, where="my.yaml")


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[1, 0, 0], [0, 1, 0], [0.5, 0.4, 0]], "row 2 sums to 0.9, expected 1"),
        ([[1, 0], [0, 1, 0]], "must be square: row 1 has 3 entries, not 2"),
        ([[1.5, -0.5], [0, 1]], "entry [0][1] is negative (-0.5)"),
        ([], "must be a K x K matrix, got an empty list"),
    ],
)
def test_a_noise_matrix_is_checked_with_its_field(matrix, message):
    raw = {"shift": {"noise": "matrix", "noise_matrix": matrix}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw, where="my.yaml")
    assert str(info.value) == f"my.yaml: shift.noise_matrix: {message}"


def test_a_row_stochastic_noise_matrix_passes():
    matrix = [[0.6, 0.4], [0.1 + 1e-7, 0.9]]  # within the tolerance of 1e-6
    config = validate_config({"shift": {"noise": "matrix", "noise_matrix": matrix}})
    assert config.shift.noise_matrix == matrix


def test_errors_are_blamed_on_the_override_or_the_file(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text("train:\n  epochs: 4\n  warmup_epochs: 2\n  momentum: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.lr=abc", "train.momentum=0.5", "train.epochs=2"])
    assert str(info.value) == (
        "--set train.lr=abc: train.lr: Input should be a valid number, unable to parse string as "
        "a number (got 'abc')"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=2", "shift.noise=pair"])
    # an override's noise without a rate, and the file's momentum
    assert str(info.value) == (
        "--set shift.noise=pair: shift: noise 'pair' needs noise_rate > 0 (or noise 'none'); "
        f"{path}: train.momentum: Input should be less than 1 (got 2)"
    )
    path.write_text("train:\n  epochs: 4\n  warmup_epochs: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=2"])
    assert str(info.value) == (
        f"{path} with --set train.epochs=2: train: warmup_epochs (2) must be smaller than "
        "epochs (2)"
    )
