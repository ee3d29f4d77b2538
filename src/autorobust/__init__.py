"""autorobust: automatic design of image classifiers for imbalanced, noisy or unlabeled data.

The ``autorobust`` command and this package do the same things; README shows both ("Python API")
and ``docs/config.md`` / ``docs/metrics.md`` list every config key and every metric.

A run, from Python::

    import autorobust

    config = autorobust.load_config("demo", ["train.epochs=5", "run_dir=runs/api"])
    splits = autorobust.build_splits(config)      # the seeded, shifted splits
    result = autorobust.train_run(config, splits=splits)
    print(result.test["balanced_accuracy"])       # also in runs/api/metrics.json

The public names (importing the package loads none of them; each is imported on first use):

- configuration: ``load_config`` (a YAML file or a bundled config, with ``a.b=value``
  overrides), ``validate_config``, ``bundled_configs``, ``ExperimentConfig``;
- data, models, losses: ``build_splits`` -> ``Splits``, ``create_model``, ``list_models``,
  ``create_loss``, ``list_losses``;
- training: ``train_run`` -> ``RunResult``, ``evaluate_run``, ``load_run_config``,
  ``load_best_model``, ``classification_metrics`` (what ``metrics.json`` holds per split);
- prediction, as ``autorobust predict``: ``load_model`` (a finished run's selected weights,
  preprocessing and calibration temperature) -> ``LoadedModel``, or for a design's kept
  ensemble ``LoadedEnsemble`` (the mean of its members' probabilities); ``export_model`` (as
  ``autorobust export``: one ONNX or torch.export file, uint8 images in, probabilities out);
- searches, as ``autorobust search KIND``: ``search_baseline`` (the baseline losses),
  ``search_reweighter`` (Meta-Weight-Net's V), ``search_loss`` (AutoBalance),
  ``search_architecture`` (CSNAS), each -> ``SearchOutcome``;
- designs, as ``autorobust design``: ``run_design`` -> ``DesignOutcome``, ``Design``;
- errors: ``AutorobustError`` (every user error) and its subclasses ``ConfigError``,
  ``DataError``, ``ShiftError``, ``UnknownNameError``, ``WriteError``.

The package, by layer (a layer imports only the layers below it; ``.importlinter``):

- ``cli``, ``demo``: the command and its one-minute demo;
- ``api``: where each public name above is defined;
- ``design``: composed designs (architecture x noise treatment x loss) under a budget;
- ``methods``: one package per paper (``meta_weight_net``, ``autobalance``, ``csnas``,
  ``sample_selection``, ``glc``), each with its config section, trainer and search;
- ``search``: the Optuna runner, samplers, the baseline search;
- ``export``: a finished run as one ONNX or torch.export file;
- ``inference``: a finished run's predictions on new images;
- ``experiment``: config -> splits, model, loss, trainer; the run directory;
- ``train``: the training loop, checkpoints, metrics, thread counts; ``report``: shared plots;
- ``data``, ``models``, ``losses``: sources and shift, classifiers, baseline losses;
- ``config``: ``ExperimentConfig`` and its sections; ``errors`` and small helpers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public names; autorobust.api.EXPORTS says where each is defined (a test keeps both equal).
__all__ = [
    "AutorobustError",
    "ConfigError",
    "DataError",
    "Design",
    "DesignOutcome",
    "ExperimentConfig",
    "LoadedEnsemble",
    "LoadedModel",
    "RunResult",
    "SearchOutcome",
    "ShiftError",
    "Splits",
    "UnknownNameError",
    "WriteError",
    "build_splits",
    "bundled_configs",
    "classification_metrics",
    "create_loss",
    "create_model",
    "evaluate_run",
    "export_model",
    "list_losses",
    "list_models",
    "load_best_model",
    "load_config",
    "load_model",
    "load_run_config",
    "run_design",
    "search_architecture",
    "search_baseline",
    "search_loss",
    "search_reweighter",
    "train_run",
    "validate_config",
]


def __getattr__(name: str) -> Any:
    # PEP 562: a public name is imported on first use, so that `import autorobust` stays light.
    # autorobust.api is read by name, not imported by a statement: import-linter would count a
    # statement (even inside this function) as an import of every layer by the package itself,
    # and so by any module that imports the package (see autorobust.api).
    if name not in __all__:
        raise AttributeError(f"module 'autorobust' has no attribute {name!r}")
    value = importlib.import_module("autorobust.api").load(name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
