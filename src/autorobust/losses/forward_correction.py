"""Forward loss correction's log-likelihood and the check of a transition matrix given as an option.

Shared by the losses that correct for label noise with a transition matrix T (T_ij = P(observed j |
true i)): GLC's ``forward_corrected`` loss (``methods/glc``) and AutoBalance's parametric family
with a fixed ``transition`` (``methods/autobalance``), which must not import each other; the
formula is written once, here. Patrini et al., "Making Deep Neural Networks Robust to Label Noise:
a Loss Correction Approach", CVPR 2017, §3.1 (forward correction).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from autorobust._validation import check_row_stochastic
from autorobust.errors import ConfigError

__all__ = ["check_transition_option", "forward_corrected_nll"]


def check_transition_option(
    value: Any, num_classes: int, *, loss: str, observed_counts: np.ndarray | None = None
) -> np.ndarray:
    """A transition matrix given as a loss option, as float64 (K, K) with rows summing to 1.

    Args:
        value: nested lists (K, K) of numbers >= 0, each row summing to 1 (within
            :data:`autorobust._validation.ROW_SUM_TOLERANCE`, so that hand-written YAML rows
            such as 0.33333 are accepted; the rows are then normalised exactly).
        num_classes: K.
        loss: the loss name for the messages.
        observed_counts: (K,) labels per class; a label that occurs must be reachable, i.e. its
            column must hold a positive entry (otherwise its samples have infinite loss).

    Raises:
        ConfigError: one line naming the loss, ``transition`` and what is wrong.
    """

    def fail(message: str) -> ConfigError:
        separator = "" if message.startswith("[") else " "
        return ConfigError(f"loss {loss!r}: transition{separator}{message}")

    t = check_row_stochastic(
        value, name=f"loss {loss!r}: transition", num_classes=num_classes, error=ConfigError
    )
    sums = t.sum(axis=1)
    if observed_counts is not None:
        unreachable = np.flatnonzero((t.sum(axis=0) == 0) & (np.asarray(observed_counts) > 0))
        if unreachable.size:
            j = int(unreachable[0])
            raise fail(
                f"column {j} is all 0, but label {j} is observed: its samples would have "
                "infinite loss"
            )
    return t / sums[:, None]


def forward_corrected_nll(
    adjusted_logits: Tensor, target: Tensor, log_transition: Tensor
) -> Tensor:
    """−log (Tᵀ softmax(h))_ỹ per sample, float (B,), computed in log space.

    Args:
        adjusted_logits: h, float (B, K).
        target: observed labels ỹ, int64 (B,).
        log_transition: log T, float (K, K), −inf where T is 0.

    log Σ_i T_iỹ softmax(h)_i = logsumexp_i(log T_iỹ + log_softmax(h)_i): no probability is ever
    formed, so confident logits do not underflow, and a zero entry of T is a −inf term whose
    weight (and gradient) is exactly 0. A label whose column of T is all 0 gives +inf; the loss
    constructors refuse such a T for any observed label.
    """
    log_q = torch.log_softmax(adjusted_logits, dim=1)
    return -torch.logsumexp(log_q + log_transition.t()[target], dim=1)
