"""The public API of ``import autorobust``: light to import, every name resolves, help() maps it."""

from __future__ import annotations

import importlib
import json
import os
import pydoc
import subprocess
import sys

import pytest

import autorobust
from autorobust import api

HEAVY = ("torch", "numpy", "optuna", "pydantic", "sqlalchemy", "yaml")
WATCHED = (*HEAVY, "autorobust")


def _fresh_interpreter(code: str) -> dict:
    """Run ``code`` in a new Python and return the JSON it prints last."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


_LOADED = (
    "import json, sys\n"
    "def loaded():\n"
    f"    return sorted(m for m in sys.modules if m.split('.')[0] in {WATCHED!r})\n"
)


def test_import_autorobust_loads_no_layer_and_no_torch() -> None:
    result = _fresh_interpreter(_LOADED + "import autorobust\nprint(json.dumps(loaded()))")
    assert result == ["autorobust"]


def test_a_public_name_imports_only_what_defines_it() -> None:
    code = _LOADED + (
        "import autorobust\n"
        "autorobust.ConfigError, autorobust.load_config\n"
        "light = loaded()\n"
        "autorobust.train_run\n"
        "print(json.dumps({'light': light, 'after_train_run': loaded()}))"
    )
    result = _fresh_interpreter(code)
    assert "torch" not in result["light"]
    assert "optuna" not in result["light"]
    assert "autorobust.config" in result["light"]
    assert "torch" in result["after_train_run"]
    assert "optuna" not in result["after_train_run"]
    assert "autorobust.design.pipeline" not in result["after_train_run"]


def test_every_public_name_is_the_object_of_its_defining_module() -> None:
    assert sorted(autorobust.__all__) == sorted(api.EXPORTS)
    for name, (module, attribute) in api.EXPORTS.items():
        defined = getattr(importlib.import_module(f"autorobust.{module}"), attribute)
        assert getattr(autorobust, name) is defined, name
    assert autorobust.search_reweighter.__module__ == "autorobust.methods.meta_weight_net.search"
    assert issubclass(autorobust.ConfigError, autorobust.AutorobustError)


def test_dir_and_star_import_offer_the_public_names() -> None:
    assert set(autorobust.__all__) <= set(dir(autorobust))
    namespace: dict = {}
    exec("from autorobust import *", namespace)
    assert set(autorobust.__all__) <= set(namespace)
    assert "importlib" not in namespace


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'autorobust' has no attribute 'trian_run'"):
        autorobust.trian_run  # noqa: B018
    assert not hasattr(autorobust, "EXPORTS")
    with pytest.raises(AttributeError, match="'nope'"):
        api.load("nope")


def test_help_shows_the_package_map_and_every_public_name() -> None:
    text = pydoc.render_doc(autorobust, renderer=pydoc.plaintext)
    assert "The package, by layer" in text
    for name in autorobust.__all__:
        assert name in text, name
    # The public functions get their own entries with their signatures, not just the map.
    assert "train_run(config: 'ExperimentConfig'" in text
    assert "search_baseline = run_search(config" in text
