"""Detectors: a probe's outputs -> a per-sample clean score of the observed label.

One algorithm per private module behind :class:`Detector`, registered in :data:`DETECTORS` under
the name ``selection.detector`` takes (higher score = the label is more likely clean):

- ``posterior``, :class:`PosteriorDetector`: log p(y | x) of the probe's raw logits;
- ``small_loss``, :class:`SmallLossDetector`: minus the probe's per-sample loss (DivideMix);
- ``prototype``, :class:`PrototypeDetector`: cosine similarity of the normalised penultimate
  feature to the label's prototype from the clean meta set (RoLT), optionally minus the best other
  class's;
- ``weights``, :class:`WeightsDetector`: MW-Net's recorded per-sample weights.

Each also scores candidate labels (for relabelling) and the meta images for their own class (for
calibrating thresholds) where it can.
"""

from __future__ import annotations

from autorobust.methods.sample_selection.detectors._base import (
    DETECTORS,
    Detector,
    create_detector,
)
from autorobust.methods.sample_selection.detectors._posterior import (
    PosteriorDetector,
    log_softmax,
)
from autorobust.methods.sample_selection.detectors._prototype import (
    PrototypeDetector,
    class_prototypes,
    normalize_rows,
    prototype_labels,
    prototype_similarities,
)
from autorobust.methods.sample_selection.detectors._small_loss import SmallLossDetector
from autorobust.methods.sample_selection.detectors._weights import WeightsDetector

__all__ = [
    "DETECTORS",
    "Detector",
    "PosteriorDetector",
    "PrototypeDetector",
    "SmallLossDetector",
    "WeightsDetector",
    "class_prototypes",
    "create_detector",
    "log_softmax",
    "normalize_rows",
    "prototype_labels",
    "prototype_similarities",
]
