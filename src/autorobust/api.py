"""The public Python API: every name ``autorobust.__all__`` offers, and where it is defined.

``import autorobust`` imports none of the layers: the package's ``__getattr__`` (PEP 562) asks
:func:`load` for a public name the first time it is used, and :func:`load` imports only the module
that defines it. ``autorobust.load_config`` and the errors therefore load pydantic and no torch,
``autorobust.train_run`` loads torch, and ``autorobust.search_baseline`` loads Optuna.

Why a module of its own: this one sits in the top layer of ``.importlinter``, so lint-imports
checks what it imports, like any other layer. The package's ``__init__`` reads it by name
(``importlib.import_module("autorobust.api")``) rather than by an import statement: import-linter
counts an import inside a function as an import, and an ``autorobust -> autorobust.experiment``
edge would put every layer above any module that imports the package itself (say, for
``__version__``), a chain that breaks the layers contract. The imports here are written out as
statements for the same reason: a module name computed into ``importlib`` would be invisible to
the check. The search commands are the exception: ``search_KIND`` is read from the registry of
search kinds (:data:`autorobust.search.kinds.SEARCH_KINDS`), which names where each kind's
``run_search`` lives, as the trainers' registry does for the methods' trainers.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from autorobust.search.kinds import SEARCH_KINDS

__all__ = ["EXPORTS", "load"]


def _search_exports() -> dict[str, tuple[str, str]]:
    """``search_KIND`` -> where its ``run_search`` is defined, for every registered search kind
    of this package (``autorobust search KIND``)."""
    exports = {}
    for name in SEARCH_KINDS.names():
        kind = SEARCH_KINDS.get(name)
        if kind.module.startswith("autorobust."):
            exports[f"search_{name}"] = (kind.module.removeprefix("autorobust."), kind.attribute)
    return exports


# Public name -> (module under autorobust, attribute there). The search commands are named like
# the command line's ``autorobust search KIND``; every other name is its defining module's own.
EXPORTS: dict[str, tuple[str, str]] = {
    # configuration
    "ExperimentConfig": ("config", "ExperimentConfig"),
    "load_config": ("config", "load_config"),
    "validate_config": ("config", "validate_config"),
    "bundled_configs": ("config", "bundled_configs"),
    # data, models, losses
    "build_splits": ("experiment", "build_splits"),
    "Splits": ("data.splits", "Splits"),
    "create_model": ("models", "create_model"),
    "list_models": ("models", "list_models"),
    "create_loss": ("losses", "create_loss"),
    "list_losses": ("losses", "list_losses"),
    # training and evaluation
    "train_run": ("experiment", "train_run"),
    "evaluate_run": ("experiment", "evaluate_run"),
    "RunResult": ("experiment", "RunResult"),
    "load_run_config": ("experiment", "load_run_config"),
    "load_best_model": ("experiment", "load_best_model"),
    "classification_metrics": ("train.metrics", "classification_metrics"),
    # prediction (`autorobust predict`)
    "load_model": ("inference", "load_model"),
    "LoadedEnsemble": ("inference", "LoadedEnsemble"),
    "LoadedModel": ("inference", "LoadedModel"),
    # a finished run as one ONNX / torch.export file (`autorobust export`)
    "export_model": ("export", "export_model"),
    # searches (`autorobust search KIND`): search_KIND from the registry of search kinds
    **_search_exports(),
    "SearchOutcome": ("search.common", "SearchOutcome"),
    # designs (`autorobust design`)
    "run_design": ("design.pipeline", "run_design"),
    "DesignOutcome": ("design.pipeline", "DesignOutcome"),
    "Design": ("design.space", "Design"),
    # errors
    "AutorobustError": ("errors", "AutorobustError"),
    "ConfigError": ("errors", "ConfigError"),
    "DataError": ("errors", "DataError"),
    "ShiftError": ("errors", "ShiftError"),
    "UnknownNameError": ("errors", "UnknownNameError"),
    "WriteError": ("errors", "WriteError"),
}


_SEARCH_MODULES = {module for module, _ in _search_exports().values()}


def load(name: str) -> Any:
    """The object the public name ``name`` stands for, importing only its defining module.

    Raises:
        AttributeError: ``name`` is not a public name of autorobust.
    """
    try:
        module, attribute = EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'autorobust' has no attribute {name!r}") from None
    return getattr(_import(module), attribute)


def _import(module: str) -> ModuleType:
    """Import ``autorobust.<module>``; one import statement per module (see the docstring)."""
    loaded: ModuleType  # declared once, so that each branch's import may bind it
    if module == "errors":
        import autorobust.errors as loaded
    elif module == "config":
        import autorobust.config as loaded
    elif module == "data.splits":
        import autorobust.data.splits as loaded
    elif module == "models":
        import autorobust.models as loaded
    elif module == "losses":
        import autorobust.losses as loaded
    elif module == "experiment":
        import autorobust.experiment as loaded
    elif module == "train.metrics":
        import autorobust.train.metrics as loaded
    elif module == "inference":
        import autorobust.inference as loaded
    elif module == "export":
        import autorobust.export as loaded
    elif module == "search.common":
        import autorobust.search.common as loaded
    elif module == "design.pipeline":
        import autorobust.design.pipeline as loaded
    elif module == "design.space":
        import autorobust.design.space as loaded
    elif module in _SEARCH_MODULES:
        loaded = importlib.import_module(f"autorobust.{module}")  # named by the registry
    else:
        raise AssertionError(f"EXPORTS names autorobust.{module}, which _import does not import")
    return loaded
