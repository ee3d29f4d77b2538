"""Learning-rate schedules as pure functions of the optimisation step."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["lr_factor"]


def lr_factor(
    step: int,
    total_steps: int,
    *,
    schedule: str,
    warmup_steps: int = 0,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at optimisation ``step`` (0-based).

    Linear warm-up from 1/warmup_steps to 1 over ``warmup_steps``; then ``cosine`` anneals to 0 at
    ``total_steps`` (Loshchilov & Hutter 2017, no restarts), ``step`` multiplies by ``gamma`` at
    each milestone (fractions of ``total_steps``), ``constant`` stays at 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        passed = sum(step >= round(m * total_steps) for m in milestones)
        return gamma**passed
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine, step")
