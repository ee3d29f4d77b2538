"""Forward loss correction (Patrini et al., CVPR 2017) composed with logit adjustment at the clean
prior (Menon et al., ICLR 2021); with τ = 0 and GLC's T̂, the loss of Gold Loss Correction
(Hendrycks et al., NeurIPS 2018). See docs/methods/glc.md.

    ℓ(z, ỹ) = −log (T̂ᵀ softmax(z + τ log π̂))_ỹ = −log Σ_i T̂_iỹ softmax(z + τ log π̂)_i

softmax(z + τ log π̂) models the clean posterior p(y | x) of the pool and T̂ᵀ maps it to the noisy
label the pool shows, so z itself learns the *balanced* clean posterior; predict with z. Without
the noise correction, logit adjustment at the clean prior over-boosts the tail (measured 34%
balanced accuracy at ρ = 100, 40% symmetric noise), because z then learns the noisy label
distribution; without the prior, forward correction learns the long-tailed clean posterior.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from autorobust.errors import AutorobustError, ConfigError
from autorobust.losses.base import ClassificationLoss, _check_counts, _check_float, _check_inputs
from autorobust.losses.forward_correction import check_transition_option, forward_corrected_nll
from autorobust.losses.registry import register_loss
from autorobust.methods.glc.noise_model import DEFAULT_FLOOR, NoiseModel, estimate_clean_counts

__all__ = ["ForwardCorrectedLoss"]

_NAME = "forward_corrected"
_PRIORS = ("clean", "observed")


def _error(message: str) -> ConfigError:
    return ConfigError(f"loss {_NAME!r}: {message}")


@register_loss(_NAME)
class ForwardCorrectedLoss(ClassificationLoss):
    """ℓ(z, ỹ) = −log (T̂ᵀ softmax(z + τ log π̂))_ỹ (module docstring); predict with z.

    Hyper-parameters:
        transition: T̂ as a K x K list (rows = true class, columns = observed label, rows sum
            to 1); excludes ``noise_model_file``.
        noise_model_file: path to a noise model JSON (:class:`NoiseModel`), giving T̂ and the
            clean counts n̂.
        tau: τ >= 0, default 1.0: logit adjustment at the prior; 0 is plain forward correction
            (GLC's loss). Searched in [0, 2] (linear).
        prior: where π̂ comes from: "clean" (default), the clean counts (``clean_counts`` if
            given, else the noise model file's, else estimated from ``transition`` and the
            observed class counts by :func:`~autorobust.methods.glc.noise_model.
            estimate_clean_counts`); or "observed", the class counts the loss receives.
        clean_counts: optional K clean counts > 0 (overrides the file's; only with prior
            "clean").
    """

    uses_class_counts: ClassVar[bool] = True
    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {"tau": (0.0, 2.0, "linear")}
    # buffers (registered in __init__), typed for mypy
    log_prior: Tensor
    log_transition: Tensor

    def __init__(
        self,
        *,
        class_counts: Sequence[int] | np.ndarray | None,
        transition: Sequence[Sequence[float]] | None = None,
        noise_model_file: str | None = None,
        tau: float = 1.0,
        prior: str = "clean",
        clean_counts: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        counts = _check_counts(class_counts, _NAME, positive=False)
        k = len(counts)
        self.num_classes = k
        self.tau = _check_float(tau, "tau", _NAME, low=0.0)
        if prior not in _PRIORS:
            raise _error(f"prior must be one of {', '.join(_PRIORS)}, got {prior!r}")
        self.prior = prior
        if (transition is None) == (noise_model_file is None):
            raise _error(
                "needs the noise model: give transition (a K x K list) or noise_model_file, "
                f"exactly one (got {'both' if transition is not None else 'neither'})"
            )
        if noise_model_file is not None and not isinstance(noise_model_file, (str, Path)):
            raise _error(f"noise_model_file must be a path, got {noise_model_file!r}")
        self.transition = None if transition is None else np.asarray(transition).tolist()
        self.noise_model_file = None if noise_model_file is None else str(noise_model_file)
        model = None
        if noise_model_file is not None:
            try:
                model = NoiseModel.load(noise_model_file)
            except AutorobustError as exc:
                raise _error(f"noise_model_file: {exc}") from None
            if model.num_classes != k:
                raise _error(
                    f"noise_model_file {noise_model_file} has {model.num_classes} classes, the "
                    f"data {k}"
                )
            matrix = check_transition_option(
                model.transition, k, loss=_NAME, observed_counts=counts
            )
        else:
            matrix = check_transition_option(transition, k, loss=_NAME, observed_counts=counts)
        self.clean_counts = None if clean_counts is None else list(clean_counts)
        prior_counts = self._prior_counts(counts, matrix, model)

        log_prior = np.log(prior_counts / prior_counts.sum())
        with np.errstate(divide="ignore"):
            log_transition = np.log(matrix)
        self.register_buffer("log_prior", torch.as_tensor(log_prior, dtype=torch.float32))
        self.register_buffer("log_transition", torch.as_tensor(log_transition, dtype=torch.float32))

    def _prior_counts(
        self, counts: np.ndarray, matrix: np.ndarray, model: NoiseModel | None
    ) -> np.ndarray:
        """The counts π̂ is proportional to, float64 (K,), all > 0."""
        k = len(counts)
        if self.prior == "observed":
            if self.clean_counts is not None:
                raise _error("clean_counts has no effect with prior 'observed'; remove one")
            if (counts == 0).any():
                raise _error(
                    f"prior 'observed' needs class_counts >= 1 (log π uses them), classes "
                    f"{np.flatnonzero(counts == 0).tolist()} have 0 samples"
                )
            return counts.astype(np.float64)
        if self.clean_counts is not None:
            given = np.asarray(self.clean_counts, dtype=np.float64)
            if given.shape != (k,) or not np.isfinite(given).all() or (given <= 0).any():
                raise _error(
                    f"clean_counts must be {k} finite numbers > 0, got {self.clean_counts}"
                )
            return given
        if model is not None:
            return model.clean_counts
        if counts.sum() == 0:
            raise _error("class_counts are all 0; the clean prior cannot be estimated")
        return estimate_clean_counts(matrix, counts, floor=DEFAULT_FLOOR)

    @property
    def prior_probabilities(self) -> np.ndarray:
        """π̂, float64 (K,): the prior the logits are adjusted by."""
        return torch.exp(self.log_prior.double()).numpy()

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and observed labels int64 (B,)."""
        _check_inputs(logits, target, self.num_classes)
        adjusted = logits + self.tau * self.log_prior.to(logits)
        return forward_corrected_nll(adjusted, target, self.log_transition.to(logits))
