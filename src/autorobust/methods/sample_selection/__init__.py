"""Sample selection and relabelling: detection of noisy labels turned into a cleaned label set.

A probe model trained on the noisy pool says, per sample, how likely its observed label is right;
this package turns that into the labels the final model trains on (issue 13, item 3; see
docs/methods). It draws on the small-loss selection of DivideMix (Li et al., ICLR 2020) and the
prototype distances and soft relabelling of RoLT (Wei et al., 2021); the code is our own.

- ``probe.py``: :class:`ProbeOutputs`, the arrays a probe produced (logits, penultimate features,
  per-sample losses, MW-Net's weights) for the pool and the clean meta set;
- ``detectors/``: one module per detector, registered by name: ``posterior``, ``small_loss``,
  ``prototype``, ``weights``;
- ``rules.py``: per-class selection rules ``meta_quantile`` (default), ``gmm``, ``otsu``, and the
  ``min_keep`` guarantee that no class is emptied;
- ``relabelling.py``: which rejected samples take the probe's confident prediction;
- ``pipeline.py``: :func:`run_selection`: detector -> rule -> relabelling -> the relabel file
  (``data.relabel_file``, :mod:`autorobust.data.relabel`) and a summary for the report;
- ``config.py``: :class:`SelectionConfig`, the settings and their defaults, and
  :class:`PseudoLabelConfig`, the ``pseudo_label`` config section;
- ``pseudo_label.py``: ``method: pseudo_label``, which trains on the kept samples and, FixMatch
  style, on confident pseudo-labels of the rejected ones (``Splits.rejected``).

The final model trains on the file like on any pool: ``splits.train`` holds the kept samples with
their new labels, and every prior-based loss uses the counts of those labels.

The names below are imported on first use: ``ExperimentConfig`` composes this package's
``config.py`` (a leaf), and importing a submodule runs this file first, which must therefore not
import torch or the data layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autorobust.methods.sample_selection.config import (
        PseudoLabelConfig,
        SelectionConfig,
    )
    from autorobust.methods.sample_selection.detectors import (
        DETECTORS,
        Detector,
        create_detector,
    )
    from autorobust.methods.sample_selection.pipeline import (
        Selection,
        run_selection,
        select_labels,
        selection_summary,
        write_selection,
    )
    from autorobust.methods.sample_selection.probe import (
        ProbeOutputs,
        collect_probe_outputs,
        read_sample_weights,
        run_probe_outputs,
    )
    from autorobust.methods.sample_selection.rules import (
        RULES,
        SelectionRule,
        create_rule,
        select_per_class,
    )

_EXPORTS = {
    "PseudoLabelConfig": "config",
    "SelectionConfig": "config",
    "DETECTORS": "detectors",
    "Detector": "detectors",
    "create_detector": "detectors",
    "Selection": "pipeline",
    "run_selection": "pipeline",
    "select_labels": "pipeline",
    "selection_summary": "pipeline",
    "write_selection": "pipeline",
    "ProbeOutputs": "probe",
    "collect_probe_outputs": "probe",
    "read_sample_weights": "probe",
    "run_probe_outputs": "probe",
    "RULES": "rules",
    "SelectionRule": "rules",
    "create_rule": "rules",
    "select_per_class": "rules",
}

__all__ = [
    "DETECTORS",
    "RULES",
    "Detector",
    "ProbeOutputs",
    "PseudoLabelConfig",
    "Selection",
    "SelectionConfig",
    "SelectionRule",
    "collect_probe_outputs",
    "create_detector",
    "create_rule",
    "read_sample_weights",
    "run_probe_outputs",
    "run_selection",
    "select_labels",
    "select_per_class",
    "selection_summary",
    "write_selection",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` (PEP 562) and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
