"""Gold Loss Correction (Hendrycks et al., NeurIPS 2018) with forward correction (Patrini et al.,
CVPR 2017): a label-noise model estimated with a small clean set, and the losses that use it.

- ``noise_model.py``: the transition matrix T̂ (GLC's estimate from the clean meta set, or the
  confusion estimate from a probe's predictions on the pool), the clean class counts n̂, the
  :class:`~autorobust.methods.glc.noise_model.NoiseModel` file, and its error against the truth of
  a simulated shift;
- ``loss.py``: loss ``forward_corrected``, −log (T̂ᵀ softmax(z + τ log π̂))_ỹ.
"""

from __future__ import annotations

from autorobust.methods.glc.loss import ForwardCorrectedLoss
from autorobust.methods.glc.noise_model import (
    DEFAULT_FLOOR,
    DEFAULT_PSEUDO_COUNT,
    DEFAULT_RESAMPLES,
    NoiseModel,
    NoiseModelCheck,
    average_noise_models,
    confusion_matrix,
    estimate_clean_counts,
    estimate_noise_model,
    estimate_transition,
    estimate_transition_confusion,
    noise_model_errors,
    shrink_noise_model,
    true_transition,
)

__all__ = [
    "DEFAULT_FLOOR",
    "DEFAULT_PSEUDO_COUNT",
    "DEFAULT_RESAMPLES",
    "ForwardCorrectedLoss",
    "NoiseModel",
    "NoiseModelCheck",
    "average_noise_models",
    "confusion_matrix",
    "estimate_clean_counts",
    "estimate_noise_model",
    "estimate_transition",
    "estimate_transition_confusion",
    "noise_model_errors",
    "shrink_noise_model",
    "true_transition",
]
