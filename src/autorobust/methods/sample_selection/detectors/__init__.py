"""Detectors: a probe's outputs -> a per-sample clean score of the observed label.

One algorithm per private module behind :class:`Detector`, registered in :data:`DETECTORS` under
the name ``selection.detector`` takes (higher score = the label is more likely clean):

- ``posterior``, :class:`PosteriorDetector`: log p(y | x) of the probe's raw logits;
- ``small_loss``, :class:`SmallLossDetector`: minus the probe's per-sample loss (DivideMix);
- ``prototype``, :class:`PrototypeDetector`: cosine similarity of the normalised penultimate
  feature to the label's prototype from the clean meta set (RoLT), optionally minus the best other
  class's;
- ``weights``, :class:`WeightsDetector`: MW-Net's recorded per-sample weights;
- ``aum``, :class:`AumDetector`: the margin of the label averaged over the training epochs
  (Pleiss et al. 2020), from the probe run's recorded dynamics (``train.record_dynamics``);
- ``mean_loss``, :class:`MeanLossDetector`: minus the training loss averaged over the epochs;
- ``agreement``, :class:`AgreementDetector`: the smaller of AUM's and the posterior's per-class
  ranks (both views must call the label clean).

Each also scores candidate labels (for relabelling) and the meta images for their own class (for
calibrating thresholds) where it can.
"""

from __future__ import annotations

from autorobust.methods.sample_selection.detectors._agreement import (
    AgreementDetector,
    class_ranks,
)
from autorobust.methods.sample_selection.detectors._aum import AumDetector
from autorobust.methods.sample_selection.detectors._base import (
    DETECTORS,
    Detector,
    create_detector,
)
from autorobust.methods.sample_selection.detectors._mean_loss import MeanLossDetector
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
    "AgreementDetector",
    "AumDetector",
    "Detector",
    "MeanLossDetector",
    "PosteriorDetector",
    "PrototypeDetector",
    "SmallLossDetector",
    "WeightsDetector",
    "class_prototypes",
    "class_ranks",
    "create_detector",
    "log_softmax",
    "normalize_rows",
    "prototype_labels",
    "prototype_similarities",
]
